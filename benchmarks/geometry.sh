#!/usr/bin/env bash
# What geometry buys on non-square frames with small defects: VisA fryum (1500×1000) retrained and evaluated
# three ways — squashed to 256×256, aspect kept at 384×256, and 256-pixel tiles of the image at half resolution
# (750×500, 12 tiles per image) — on the same training subset, with the same teacher and seed.
#
#   bash benchmarks/geometry.sh            # all three; results in benchmarks/results/geometry-*.json
#   EVERY=3 EPOCHS=12 TILE_EPOCHS=12 bash benchmarks/geometry.sh
#
# Retrain's defaults otherwise (batch 8, lr 0.1, early stopping). The results recorded with batch 32, lr 0.4 and 20
# (tiled: 8) epochs without early stopping are benchmarks/results/geometry-*-batch32.json; add
# `--batch-size 32 --lr 0.4 --patience 0` to run()'s retrain to repeat them.
#
# EVERY=n trains on every n-th training image (default 3: 150 of 450), so that the tiled run, whose epoch holds 12×
# the samples, finishes in minutes on a 2-core box. Wall times include loading and the teacher feature cache.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${STPMD_SHARED:-../shared}
DATA=$SHARED/data/visa/fryum
TEACHER=${STPMD_TEACHER:-$SHARED/weights/mobilenet_v2_coral_pyramid.onnx}
EVERY=${EVERY:-3}
EPOCHS=${EPOCHS:-12}
TILE_EPOCHS=${TILE_EPOCHS:-12}
WORK=${WORK:-/tmp/stpmd-geometry}
OUT=benchmarks/results
BIN=${STPMD_BIN:-dist/src/main.cjs}
[ -d "$DATA/train/good" ] || { echo "geometry.sh: $DATA not found (set STPMD_SHARED)"; exit 1; }
mkdir -p "$WORK/train" "$OUT"
# the subset as symbolic links: the shared data is never copied or written
i=0
for f in "$DATA"/train/good/*; do
  if (( i % EVERY == 0 )); then ln -sf "$(realpath "$f")" "$WORK/train/$(basename "$f")"; fi
  i=$((i + 1))
done
echo "training subset: $(ls "$WORK/train" | wc -l) images"

run() { # name, epochs, retrain options...
  local name=$1 epochs=$2; shift 2
  local start end load
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  start=$(date +%s%N)
  node "$BIN" retrain --frames "$WORK/train" --teacher "$TEACHER" --out "$WORK/$name" \
    --epochs "$epochs" --no-progress "$@" 2> "$WORK/$name.log"
  end=$(date +%s%N)
  node "$BIN" eval --model "$WORK/$name" --data "$DATA" --json "$WORK/$name-eval.json"
  node -e '
    const fs = require("fs");
    const [name, wall, file, bundle, options, load] = process.argv.slice(1);
    const ev = JSON.parse(fs.readFileSync(file, "utf8"));
    const m = JSON.parse(fs.readFileSync(bundle + "/manifest.json", "utf8"));
    const out = { name, retrain_options: options, retrain_wall_s: Number(Number(wall).toFixed(1)),
      epochs_run: m.training.history.length, best_epoch: m.training.best_epoch,
      train_images: m.training.train_images, train_samples: m.training.train_samples,
      stopped_reason: m.training.stopped_reason, batch_size: m.training.batch_size, lr: m.training.lr,
      load_average_before: load, load_average_after: require("os").loadavg().map((x) => x.toFixed(2)).join(" "),
      eval_frames_per_s: Number((ev.num_images / ev.seconds).toFixed(2)), ...ev };
    fs.writeFileSync("benchmarks/results/geometry-" + name + ".json", JSON.stringify(out, null, 2) + "\n");
    console.log(name, JSON.stringify({ image_auroc: ev.image_auroc, pixel_auroc: ev.pixel_auroc, aupro: ev.aupro, retrain_wall_s: out.retrain_wall_s, eval_frames_per_s: out.eval_frames_per_s }));
  ' "$name" "$(( (end - start) / 1000000 ))e-3" "$WORK/$name-eval.json" "$WORK/$name" "$*" "$load"
}

run squash "$EPOCHS" --image-size 256
run aspect "$EPOCHS" --image-size 384x256
run tiled "$TILE_EPOCHS" --tile 256 --tile-overlap 32 --scale 0.5
