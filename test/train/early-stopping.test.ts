import assert from "node:assert/strict";
import { test } from "node:test";
import {
  EarlyStopping,
  type EarlyStoppingOptions,
  type EpochDecision,
} from "../../src/train/early-stopping.js";

function run(scores: number[], opts: EarlyStoppingOptions): EpochDecision[] {
  const s = new EarlyStopping(opts);
  const out: EpochDecision[] = [];
  for (const score of scores) {
    const d = s.observe(score);
    out.push(d);
    if (d.stop) break;
  }
  return out;
}

const opts = { patience: 3, minDelta: 0.01, minEpochs: 1, maxEpochs: 100 };

test("a steadily falling score runs to the ceiling", () => {
  const scores = Array.from({ length: 10 }, (_, i) => 1 / (i + 1));
  const d = run(scores, { ...opts, maxEpochs: 10 });
  assert.equal(d.length, 10);
  assert.ok(d.every((x) => x.improved && x.best));
  assert.deepEqual(
    d.map((x) => x.stop),
    [...new Array(9).fill(false), true],
  );
  assert.equal(d[9]!.reason, "epoch ceiling");
});

test("stops `patience` epochs after the last improvement by more than minDelta", () => {
  // epoch 3 is the last improvement; 4 and 5 are worse; 6 is better than 3 but by less than 1 %
  const d = run([1, 0.8, 0.5, 0.6, 0.55, 0.498, 0.3], opts);
  assert.equal(d.length, 6);
  assert.deepEqual(
    d.map((x) => x.improved),
    [true, true, true, false, false, false],
  );
  assert.deepEqual(
    d.map((x) => x.sinceImprovement),
    [0, 0, 0, 1, 2, 3],
  );
  // the small gain still makes epoch 6 the best (kept) model, but does not reset the patience
  assert.equal(d[5]!.best, true);
  assert.equal(d[5]!.stop, true);
  assert.equal(d[5]!.reason, "no improvement > 1% in 3 epochs");
});

test("an improvement by more than minDelta resets the patience", () => {
  const d = run([1, 1.1, 1.2, 0.98, 1, 1, 1], opts);
  assert.deepEqual(
    d.map((x) => x.improved),
    [true, false, false, true, false, false, false],
  );
  assert.equal(d.length, 7);
  assert.equal(d[6]!.stop, true);
  assert.equal(
    d.findIndex((x) => x.stop),
    6,
  );
});

test("never stops early before minEpochs", () => {
  const flat = new Array<number>(20).fill(1);
  const d = run(flat, { ...opts, minEpochs: 8 });
  assert.equal(d.length, 8);
  assert.equal(d[7]!.reason, "no improvement > 1% in 3 epochs");
  assert.equal(d[7]!.sinceImprovement, 7);
});

test("the ceiling wins when both apply, and patience 0 never stops early", () => {
  const d = run([1, 1, 1, 1], { ...opts, maxEpochs: 4 });
  assert.equal(d.length, 4);
  assert.equal(d[3]!.reason, "epoch ceiling");
  const off = run(new Array<number>(12).fill(1), { ...opts, patience: 0, maxEpochs: 12 });
  assert.equal(off.length, 12);
  assert.equal(off[11]!.reason, "epoch ceiling");
});

test("minDelta 0 counts any decrease; describe() states the rule", () => {
  const d = run([1, 0.9999, 0.9998, 0.9998, 0.9998], { ...opts, minDelta: 0, patience: 2 });
  assert.deepEqual(
    d.map((x) => x.improved),
    [true, true, true, false, false],
  );
  assert.equal(d[4]!.reason, "no improvement > 0% in 2 epochs");
  const s = new EarlyStopping({ patience: 5, minDelta: 0.02, minEpochs: 10, maxEpochs: 40 });
  assert.match(s.describe(), /improved by > 2% in 5 epochs \(not before epoch 10\); at most 40 epochs/);
  assert.throws(() => new EarlyStopping({ ...opts, minDelta: 1 }), RangeError);
});
