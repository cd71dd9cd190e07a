/**
 * Test metrics epoch by epoch: runs `stpmd retrain` on an MVTec AD category and, after every epoch, scores that
 * epoch's student on the category's test split (image AUROC, pixel AUROC, AUPRO). The test split plays no part in
 * training or model selection; the curve is for choosing the early-stopping defaults (a rule is judged by the
 * metrics of the epoch it would keep, which the recorded validation scores determine).
 *
 *   node dist/benchmarks/retrain-curve.js --out FILE.json [--category bottle] [--epochs 40] [--lr 0.4]
 *        [--batch-size 32] [--patience 0] [--min-delta 0.01] [--min-epochs 10] [--seed 0]
 *
 * Per-epoch "seconds" are the training epoch's own time (validation included); the test scoring after it is
 * timed separately and left out.
 */
import { mkdtemp, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { loadTeacher } from "../src/bundle/teacher.js";
import { createLogger } from "../src/core/log.js";
import { loadMask, loadRgb } from "../src/data/images.js";
import { listMvtecTest } from "../src/data/mvtec.js";
import { aupro, auroc, pixelAuroc } from "../src/eval/metrics.js";
import { Scorer } from "../src/stpm/scorer.js";
import { RETRAIN_DEFAULTS, retrain } from "../src/train/retrain.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, "../..");
const SHARED = process.env.STPMD_SHARED ?? path.resolve(REPO, "../shared");

const { values: a } = parseArgs({
  options: {
    out: { type: "string" },
    category: { type: "string", default: "bottle" },
    epochs: { type: "string", default: "40" },
    lr: { type: "string", default: String(RETRAIN_DEFAULTS.lr) },
    "batch-size": { type: "string", default: String(RETRAIN_DEFAULTS.batchSize) },
    patience: { type: "string", default: "0" },
    "min-delta": { type: "string", default: String(RETRAIN_DEFAULTS.minDelta) },
    "min-epochs": { type: "string", default: String(RETRAIN_DEFAULTS.minEpochs) },
    seed: { type: "string", default: "0" },
  },
});
if (!a.out) throw new Error("--out FILE.json is required");
const dataDir = path.join(SHARED, "data/mvtec_ad", a.category!);
const teacherFile = path.join(SHARED, "weights/mobilenet_v2_coral_pyramid.onnx");
const size = RETRAIN_DEFAULTS.imageSize;

const teacher = await loadTeacher(teacherFile);
const samples = await listMvtecTest(dataDir);
const images: Uint8Array[] = [];
const masks: Uint8Array[] = [];
const labels: number[] = [];
for (const s of samples) {
  const im = await loadRgb(s.file, size, size);
  images.push(im.rgb);
  masks.push(
    s.maskFile ? await loadMask(s.maskFile, im.originalSize, size, size) : new Uint8Array(size * size),
  );
  labels.push(s.label);
}

interface Row {
  epoch: number;
  loss: number;
  val_mean_score: number;
  seconds: number;
  best: boolean;
  /** The stopping rule's rate: the best score's relative improvement per epoch over its window. */
  rate_per_epoch: number | null;
  image_auroc: number;
  pixel_auroc: number;
  aupro: number;
  test_seconds: number;
}
const rows: Row[] = [];
let lastEnd = performance.now();
const started = performance.now();
const summary = await retrain({
  ...RETRAIN_DEFAULTS,
  framesDir: path.join(dataDir, "train/good"),
  teacherFile,
  outDir: await mkdtemp(path.join(os.tmpdir(), "stpmd-curve-")),
  epochs: Number(a.epochs),
  lr: Number(a.lr),
  batchSize: Number(a["batch-size"]),
  patience: Number(a.patience),
  minDelta: Number(a["min-delta"]),
  minEpochs: Number(a["min-epochs"]),
  seed: Number(a.seed),
  logger: createLogger("info"),
  progress: false,
  onEpoch: async (e) => {
    const epochSeconds = (performance.now() - lastEnd) / 1000;
    const t0 = performance.now();
    const { mean, std } = teacher.normalisation;
    const scorer = await Scorer.create(teacher.graph, e.student(), { height: size, width: size, mean, std });
    const r = await scorer.scoreAll(images, 8);
    await scorer.release();
    const row: Row = {
      epoch: e.epoch,
      loss: e.loss,
      val_mean_score: e.valMeanScore,
      seconds: Number(epochSeconds.toFixed(2)),
      best: e.decision.best,
      rate_per_epoch: e.decision.trend?.rate ?? null,
      image_auroc: auroc(r.scores, labels),
      pixel_auroc: pixelAuroc(r.maps, masks),
      aupro: aupro(r.maps, masks, size, size, 0.3),
      test_seconds: 0,
    };
    row.test_seconds = Number(((performance.now() - t0) / 1000).toFixed(2));
    rows.push(row);
    process.stderr.write(
      `curve ${row.epoch} val ${row.val_mean_score.toExponential(3)} img ${row.image_auroc.toFixed(4)} ` +
        `pix ${row.pixel_auroc.toFixed(4)} pro ${row.aupro.toFixed(4)} ${row.seconds}s\n`,
    );
    await writeFile(a.out!, JSON.stringify({ args: a, rows }, null, 1));
    lastEnd = performance.now();
  },
});
await writeFile(
  a.out,
  JSON.stringify(
    {
      args: a,
      rows,
      best_epoch: summary.bestEpoch,
      epochs_run: summary.epochsRun,
      stopped_reason: summary.stoppedReason,
      wall_s: (performance.now() - started) / 1000,
    },
    null,
    1,
  ),
);
