#!/usr/bin/env bash
# Fills the git-ignored .gpu/ for benchmarks/gpu_infer.py (run here, before the GPU call, which carries .gpu):
# 32 bottle test frames from ${STPMD_SHARED:-../shared} and the trained bottle bundle's conv weights as
# safetensors. Builds the project first (dist/benchmarks/gpu-prepare.js). Extra arguments go to that script
# (--out, --bundle, --frames).
set -euo pipefail
cd "$(dirname "$0")/.."

npx tsc -p .
node dist/benchmarks/gpu-prepare.js "$@"

out=.gpu
for ((i = 1; i <= $#; i++)); do
  if [ "${!i}" = "--out" ]; then j=$((i + 1)); out=${!j}; fi
done
size_kib=$(du -sk "$out" | cut -f1)
echo "gpu-prepare: $out holds $((size_kib / 1024)) MiB" >&2
if [ "$size_kib" -gt $((30 * 1024)) ]; then
  echo "gpu-prepare: $out is larger than 30 MiB" >&2
  exit 1
fi
