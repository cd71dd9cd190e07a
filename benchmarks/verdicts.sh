#!/usr/bin/env bash
# Issue 19's acceptance runs: the part's verdict at retrain's defaults, before and after, on the shared data.
#
#   bash benchmarks/verdicts.sh                    # bottle + fryum squash/aspect/tiled, seeds 0 and 1
#   ONLY="bottle fryum-squash" SEEDS=0 bash benchmarks/verdicts.sh
#
# - bottle: retrain at its defaults on all 209 training images (wall time on the 2-core box is part of the target:
#   ≤ 5 min), evaluated on its 83 test images.
# - fryum: the same 150-image subset (every third training image) and the same three geometries as
#   benchmarks/geometry.sh, whose recorded results (benchmarks/results/geometry-{squash,aspect,tiled}.json, seed 0,
#   12-epoch ceiling) are the "before"; retrain's defaults otherwise, so that the stopping rule, the margin and the
#   part score are whatever the bundle's defaults now are.
# Each run writes benchmarks/results/verdicts-<name>-s<seed>.json (retrain summary, load averages, eval report);
# `node dist/benchmarks/verdicts-table.js` turns them into benchmarks/results/verdicts.md.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${STPMD_SHARED:-../shared}
TEACHER=${STPMD_TEACHER:-$SHARED/weights/mobilenet_v2_coral_pyramid.onnx}
BOTTLE=$SHARED/data/mvtec_ad/bottle
FRYUM=$SHARED/data/visa/fryum
SEEDS=${SEEDS:-"0 1"}
ONLY=${ONLY:-"bottle fryum-squash fryum-aspect fryum-tiled"}
# the tiled run's epoch ceiling: 12, as the "before" (a tiled epoch holds 1,440 tiles: ~2.6 min on 2 idle cores)
TILE_EPOCHS=${TILE_EPOCHS:-12}
WORK=${WORK:-/tmp/stpmd-verdicts}
BIN=${STPMD_BIN:-dist/src/main.cjs}
OUT=benchmarks/results
for d in "$BOTTLE/train/good" "$FRYUM/train/good"; do
  [ -d "$d" ] || { echo "verdicts.sh: $d not found (set STPMD_SHARED)"; exit 1; }
done
mkdir -p "$WORK/fryum-train" "$OUT"
# fryum's subset as symbolic links, as geometry.sh makes it: the shared data is never copied or written
i=0
for f in "$FRYUM"/train/good/*; do
  if (( i % 3 == 0 )); then ln -sf "$(realpath "$f")" "$WORK/fryum-train/$(basename "$f")"; fi
  i=$((i + 1))
done

run() { # name, seed, frames, data, retrain options...
  local name=$1 seed=$2 frames=$3 data=$4; shift 4
  local tag="$name-s$seed" load start end
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  start=$(date +%s%N)
  /usr/bin/time -f "%M" -o "$WORK/$tag.rss" node "$BIN" retrain --frames "$frames" --teacher "$TEACHER" \
    --out "$WORK/$tag" --seed "$seed" --no-progress "$@" 2> "$WORK/$tag.log"
  end=$(date +%s%N)
  node "$BIN" eval --model "$WORK/$tag" --data "$data" --json "$WORK/$tag-eval.json" > /dev/null
  node -e '
    const fs = require("fs");
    const [tag, name, seed, wall, evalFile, bundle, options, load, rssFile] = process.argv.slice(1);
    const ev = JSON.parse(fs.readFileSync(evalFile, "utf8"));
    const m = JSON.parse(fs.readFileSync(bundle + "/manifest.json", "utf8"));
    const out = { name, seed: Number(seed), retrain_options: options, retrain_wall_s: Number(Number(wall).toFixed(1)),
      retrain_peak_rss_mb: Math.round(Number(fs.readFileSync(rssFile, "utf8").trim().split("\n").pop()) / 1024),
      training: m.training, geometry: m.geometry, score: m.score ?? null,
      load_average_before: load, load_average_after: require("os").loadavg().map((x) => x.toFixed(2)).join(" "),
      eval: ev };
    fs.writeFileSync("benchmarks/results/verdicts-" + tag + ".json", JSON.stringify(out, null, 2) + "\n");
    const t = ev.at_threshold ?? {};
    console.log(tag, JSON.stringify({ image_auroc: ev.image_auroc, pixel_auroc: ev.pixel_auroc, aupro: ev.aupro,
      caught: t.true_positive, false_alarms: t.false_positive, wall_s: out.retrain_wall_s, peak_rss_mb: out.retrain_peak_rss_mb }));
  ' "$tag" "$name" "$seed" "$(( (end - start) / 1000000 ))e-3" "$WORK/$tag-eval.json" "$WORK/$tag" "$*" "$load" "$WORK/$tag.rss"
}

for seed in $SEEDS; do
  for job in $ONLY; do
    case $job in
      bottle) run bottle "$seed" "$BOTTLE/train/good" "$BOTTLE" ;;
      fryum-squash) run fryum-squash "$seed" "$WORK/fryum-train" "$FRYUM" --image-size 256 ;;
      fryum-aspect) run fryum-aspect "$seed" "$WORK/fryum-train" "$FRYUM" --image-size 384x256 ;;
      fryum-tiled) run fryum-tiled "$seed" "$WORK/fryum-train" "$FRYUM" --tile 256 --tile-overlap 32 --scale 0.5 --epochs "$TILE_EPOCHS" ;;
      *) echo "verdicts.sh: unknown job $job"; exit 1 ;;
    esac
  done
done
