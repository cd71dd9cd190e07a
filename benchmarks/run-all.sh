#!/usr/bin/env bash
# Runs every stpmd benchmark, once no `stpmd retrain` is running (polls once a minute, up to 40 minutes): the
# machine has two cores, and a concurrent training run makes every figure meaningless.
set -euo pipefail
cd "$(dirname "$0")/.."
for i in $(seq 1 40); do
  pgrep -f "(cli|main)\.c?js retrain" >/dev/null || break
  echo "run-all: a retrain is running, waiting ($i/40)" >&2
  sleep 60
done
node dist/benchmarks/inference.js
node dist/benchmarks/retrain.js
node dist/benchmarks/int8-accuracy.js
node dist/benchmarks/videoscale.js
