import assert from "node:assert/strict";
import { test } from "node:test";
import {
  EarlyStopping,
  type EarlyStoppingOptions,
  type EpochDecision,
} from "../../src/train/early-stopping.js";
import { RETRAIN_DEFAULTS } from "../../src/train/retrain-options.js";

function run(scores: number[], opts: EarlyStoppingOptions): { d: EpochDecision[]; s: EarlyStopping } {
  const s = new EarlyStopping(opts);
  const d: EpochDecision[] = [];
  for (const score of scores) {
    const x = s.observe(score);
    d.push(x);
    if (x.stop) break;
  }
  return { d, s };
}

const defaults: EarlyStoppingOptions = {
  patience: RETRAIN_DEFAULTS.patience,
  minDelta: RETRAIN_DEFAULTS.minDelta,
  minEpochs: RETRAIN_DEFAULTS.minEpochs,
  maxEpochs: RETRAIN_DEFAULTS.epochs,
};

/**
 * The 256×640 strips: 0.230 at epoch 7, 0.118 at 11, 0.106 at 12 (epochs 8–10 geometrically between,
 * 1–6 a plausible fast start; only the rate over the last 5 epochs matters at epoch 12).
 */
const strip = [1.4, 0.9, 0.6, 0.42, 0.32, 0.27, 0.23, 0.194, 0.1636, 0.1399, 0.118, 0.106];

/** bottle, seed 0, batch 8, lr 0.1 (benchmarks/results/bottle-retrain-curves.json): a spike at epoch 11. */
const bottleSeed0 = [
  1.47998, 0.70237, 0.16006, 0.07685, 0.06619, 0.05864, 0.0552, 0.04784, 0.04376, 0.04206, 0.06962, 0.03778,
  0.03794, 0.03567, 0.03526,
];

test("the default rule runs past 12 epochs on a curve still falling (the issue's strips)", () => {
  const { d } = run(strip, defaults);
  assert.equal(d.length, 12);
  assert.ok(d.every((x) => !x.stop));
  const t = d[11]!.trend!;
  assert.equal(t.epochs, 5);
  assert.equal(t.from, 0.23);
  assert.equal(t.to, 0.106);
  assert.ok(Math.abs(t.rate - (1 - (0.106 / 0.23) ** (1 / 5))) < 1e-12);
  assert.ok(t.rate > 0.14 && t.improving);
  // a steady 8 %/epoch decline goes on to the ceiling of 50, which then says it was still improving
  const falling = Array.from({ length: 60 }, (_, i) => 0.92 ** i);
  const long = run(falling, defaults);
  assert.equal(long.d.length, 50);
  assert.equal(long.d[49]!.cause, "epoch ceiling");
  const rec = long.s.stopRecord("epoch ceiling", "epoch ceiling");
  assert.equal(rec.stillImproving, true);
  assert.match(rec.note!, /^still improving: .* in the last epoch \(8% per epoch over the last 5 epochs\)/);
});

test("a ceiling or budget that cuts a falling curve says so with the numbers", () => {
  const { s } = run(strip, { ...defaults, maxEpochs: 12 });
  const rec = s.stopRecord("epoch ceiling", "epoch ceiling");
  assert.deepEqual(rec, {
    cause: "epoch ceiling",
    reason: "epoch ceiling",
    stillImproving: true,
    note:
      "still improving: 0.118 → 0.106 in the last epoch (14.4% per epoch over the last 5 epochs); " +
      "more epochs would likely help",
  });
  // the last epoch was worse than the best: the note names the window's movement instead
  const spiky = run([...strip, 0.2], { ...defaults, maxEpochs: 13 });
  assert.equal(spiky.d[12]!.best, false);
  assert.match(
    spiky.s.stopRecord("time budget", "time budget: …").note!,
    /^still improving: 0\.194 → 0\.106 over the last 5 epochs \(11\.4% per epoch/,
  );
  // the rule's own stop is never "still improving"
  assert.equal(spiky.s.stopRecord("converged", "converged").stillImproving, false);
});

test("a flat curve stops as soon as a whole window lies behind, not before --min-epochs", () => {
  const flat = new Array<number>(30).fill(1);
  const { d } = run(flat, defaults);
  assert.equal(d.length, 6);
  assert.equal(d[5]!.cause, "converged");
  assert.equal(
    d[5]!.reason,
    "converged: the best score improved 0% per epoch over the last 5 epochs (1 → 1; < 5%)",
  );
  assert.equal(run(flat, { ...defaults, minEpochs: 9 }).d.length, 9);
  // a curve that flattens stops once its 5-epoch rate falls below 5 %/epoch; the flat run's ceiling note is empty
  const flattening = [1, 0.5, 0.3, 0.2, 0.15, 0.12, 0.11, 0.105, 0.1, 0.098, 0.097, 0.096];
  const f = run(flattening, defaults);
  assert.equal(f.d.at(-1)!.cause, "converged");
  assert.equal(f.d.length, 11);
  const stopped = f.s.stopRecord("epoch ceiling", "epoch ceiling");
  assert.equal(stopped.stillImproving, false);
  assert.equal(stopped.note, undefined);
});

test("bottle's recorded curve stops at epoch 13 and keeps 12; its epoch-11 spike does not stop it", () => {
  const { d, s } = run(bottleSeed0, defaults);
  assert.equal(d.length, 13);
  assert.equal(d[12]!.cause, "converged");
  assert.equal(s.bestEpoch, 12);
  assert.equal(d[10]!.best, false);
  assert.ok(d[10]!.trend!.rate > 0.05, `rate at the spike ${d[10]!.trend!.rate}`);
  assert.match(
    d[12]!.reason!,
    /^converged: the best score improved 4\.6\d*% per epoch over the last 5 epochs/,
  );
});

test("patience 0 never stops early; the ceiling still says whether the curve was falling", () => {
  const off = run(new Array<number>(12).fill(1), { ...defaults, patience: 0, maxEpochs: 12 });
  assert.equal(off.d.length, 12);
  assert.equal(off.d[11]!.reason, "epoch ceiling");
  assert.equal(off.s.stopRecord("epoch ceiling", "epoch ceiling").stillImproving, false);
  const falling = run([1, 0.5, 0.25], { ...defaults, patience: 0, maxEpochs: 3 });
  assert.equal(falling.d[2]!.trend!.epochs, 1);
  assert.match(
    falling.s.stopRecord("epoch ceiling", "epoch ceiling").note!,
    /^still improving: 0\.5 → 0\.25 in the last epoch \(50% per epoch over the last 1 epoch\)/,
  );
  // one epoch shows no trend
  const one = run([1], { ...defaults, maxEpochs: 1 });
  assert.equal(one.d[0]!.trend, undefined);
  assert.equal(one.s.stopRecord("epoch ceiling", "epoch ceiling").stillImproving, false);
});

test("describe() states the rule; bad options are refused", () => {
  const s = new EarlyStopping({ patience: 5, minDelta: 0.02, minEpochs: 10, maxEpochs: 40 });
  assert.equal(
    s.describe(),
    "stop when the best mean validation score improves by < 2% per epoch over the last 5 epochs " +
      "(not before epoch 10); at most 40 epochs; keep the lowest-scoring epoch",
  );
  assert.equal(
    new EarlyStopping({ ...defaults, patience: 0 }).describe(),
    "fixed 50 epochs (early stopping off)",
  );
  assert.throws(() => new EarlyStopping({ ...defaults, minDelta: 1 }), RangeError);
});
