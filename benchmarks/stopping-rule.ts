/**
 * The stopping rule replayed on recorded validation curves, without training: where it would stop, which epoch it
 * would keep, and that epoch's recorded test metrics. Curves: bottle seeds 0–2 at the defaults' batch and lr
 * (benchmarks/results/bottle-retrain-curves.json, 15 epochs each, from retrain-curve.ts), and issue #19's 256×640
 * strips (0.230 at epoch 7, 0.118 at 11, 0.106 at 12; only those three are known, so the strips row says only
 * whether the rule goes on past epoch 12). Candidate windows and rates are replayed beside the defaults.
 *
 *   node dist/benchmarks/stopping-rule.js [--out benchmarks/results/stopping-rule.json]
 */
import { readFileSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { EarlyStopping } from "../src/train/early-stopping.js";
import { RETRAIN_DEFAULTS } from "../src/train/retrain-options.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, "../..");
const { values: a } = parseArgs({
  options: { out: { type: "string", default: path.join(REPO, "benchmarks/results/stopping-rule.json") } },
});

interface Row {
  epoch: number;
  val_mean_score: number;
  image_auroc: number;
  pixel_auroc: number;
  aupro: number;
  seconds: number;
}
const recorded = JSON.parse(
  readFileSync(path.join(REPO, "benchmarks/results/bottle-retrain-curves.json"), "utf8"),
) as { runs: Record<string, { rows: Row[] }> };

/** The strips' known points; epochs 8–10 geometric between 7 and 11, 1–6 a fast start (they fall out of the window). */
const strip = [1.4, 0.9, 0.6, 0.42, 0.32, 0.27, 0.23, 0.194, 0.1636, 0.1399, 0.118, 0.106];

function replay(scores: number[], patience: number, minDelta: number) {
  const s = new EarlyStopping({ patience, minDelta, minEpochs: RETRAIN_DEFAULTS.minEpochs, maxEpochs: 1000 });
  for (const score of scores) {
    const d = s.observe(score);
    if (d.stop) return { stop_epoch: d.epoch, kept_epoch: s.bestEpoch, reason: d.reason };
  }
  const t = s.trend();
  return {
    stop_epoch: null,
    kept_epoch: s.bestEpoch,
    reason: `still running after epoch ${scores.length}`,
    rate_at_last: t ? Number(t.rate.toFixed(4)) : null,
  };
}

const candidates: [number, number][] = [
  [RETRAIN_DEFAULTS.patience, RETRAIN_DEFAULTS.minDelta],
  [3, 0.01],
  [3, 0.03],
  [3, 0.05],
  [4, 0.04],
  [5, 0.04],
];
const results = candidates.map(([patience, minDelta]) => {
  const curves: Record<string, unknown> = {};
  for (const [name, run] of Object.entries(recorded.runs)) {
    const r = replay(
      run.rows.map((x) => x.val_mean_score),
      patience,
      minDelta,
    );
    const kept = run.rows[r.kept_epoch - 1]!;
    const seconds = run.rows.slice(0, r.stop_epoch ?? run.rows.length).reduce((t, x) => t + x.seconds, 0);
    curves[`bottle ${name}`] = {
      ...r,
      kept_metrics: { image_auroc: kept.image_auroc, pixel_auroc: kept.pixel_auroc, aupro: kept.aupro },
      training_seconds: Number(seconds.toFixed(1)),
    };
  }
  curves["strips 256x640 (issue 19)"] = replay(strip, patience, minDelta);
  return {
    patience,
    min_delta: minDelta,
    default: candidates[0]![0] === patience && candidates[0]![1] === minDelta,
    curves,
  };
});

await writeFile(
  a.out!,
  `${JSON.stringify({ command: "node dist/benchmarks/stopping-rule.js", note: "replayed with src/train/early-stopping.ts, min-epochs 6; training_seconds are the recorded epochs' seconds up to the stop (validation included, loading and writing the bundle not)", results }, null, 1)}\n`,
);
for (const r of results) {
  const cells = Object.entries(r.curves).map(([k, v]) => {
    const x = v as { stop_epoch: number | null; kept_epoch: number };
    return `${k}: stop ${x.stop_epoch ?? "—"} keep ${x.kept_epoch}`;
  });
  process.stdout.write(`patience ${r.patience} min-delta ${r.min_delta}: ${cells.join("; ")}\n`);
}
