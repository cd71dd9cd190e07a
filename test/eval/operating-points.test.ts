import assert from "node:assert/strict";
import { test } from "node:test";
import {
  defectTypeRows,
  falseAlarmPoint,
  falseAlarmThreshold,
  type ScoredPart,
  thresholdPoint,
} from "../../src/eval/operating-points.js";

const goodParts = (scores: number[]): ScoredPart[] =>
  scores.map((score) => ({ score, label: 0, kind: "good" }));
const defects = (kind: string, scores: number[]): ScoredPart[] =>
  scores.map((score) => ({ score, label: 1, kind }));

test("parts caught and false alarms at a threshold: strictly above it, as the daemon judges", () => {
  const parts = [...goodParts([0.1, 0.2, 0.3, 0.4, 0.5]), ...defects("crack", [0.35, 0.4, 0.6, 0.7])];
  const p = thresholdPoint(parts, 0.4, "the bundle's threshold", [0.1, 0.2, 0.3, 0.45]);
  assert.deepEqual(
    [p.caught, p.defective, p.false_alarms, p.good, p.caught_rate, p.false_alarm_rate],
    [2, 4, 1, 5, 0.5, 0.2],
  );
  assert.equal(p.predicted_false_alarm_rate, 0.25);
  // 1 of 4 above: the exact one-sided 95 % bound solves (1 − p)⁴ + 4p(1 − p)³ = 0.05, p ≈ 0.7514
  assert.ok(Math.abs(p.predicted_false_alarm_upper95! - 0.7514) < 1e-3);
  assert.equal(p.validation_images, 4);
  const none = thresholdPoint(parts, 0.4, "the bundle's threshold", []);
  assert.equal(none.predicted_false_alarm_rate, null);
  assert.equal(none.predicted_false_alarm_upper95, null);
});

test("a false-alarm-rate threshold lets ⌊n·rate⌋ good parts above it, and says when n cannot show the rate", () => {
  const good = Array.from({ length: 200 }, (_, i) => (i + 1) / 200);
  assert.equal(falseAlarmThreshold(good, 0.01), 198 / 200);
  const parts = [...goodParts(good), ...defects("crack", [0.5, 0.985, 0.995, 2])];
  const one = falseAlarmPoint(parts, 0.01);
  assert.deepEqual([one.threshold, one.false_alarms, one.caught, one.resolvable], [0.99, 2, 2, true]);
  assert.equal(one.target_false_alarm_rate, 0.01);
  const tenth = falseAlarmPoint(parts, 0.001);
  // 200 good parts cannot show 0.1 %: the threshold is the highest good score, nothing above it
  assert.deepEqual([tenth.threshold, tenth.false_alarms, tenth.caught, tenth.resolvable], [1, 0, 1, false]);
  assert.ok(tenth.threshold_95[0] <= tenth.threshold && tenth.threshold_95[1] === 1);
});

test("bootstrap intervals hold the estimate, are as wide as binomial sampling says, and repeat with their seed", () => {
  // 100 defective parts, 50 above the threshold: the caught rate's 95 % interval is about 0.5 ± 1.96·0.05
  const parts = [
    ...goodParts(Array.from({ length: 60 }, (_, i) => i / 100)),
    ...defects(
      "crack",
      Array.from({ length: 100 }, (_, i) => (i % 2 === 0 ? 0.3 : 0.9)),
    ),
  ];
  const p = thresholdPoint(parts, 0.5, "t", [], { resamples: 1000, seed: 3 });
  assert.ok(p.caught_rate_95[0] <= 0.5 && 0.5 <= p.caught_rate_95[1]);
  assert.ok(p.caught_rate_95[0] > 0.38 && p.caught_rate_95[0] < 0.42, `low ${p.caught_rate_95[0]}`);
  assert.ok(p.caught_rate_95[1] > 0.58 && p.caught_rate_95[1] < 0.62, `high ${p.caught_rate_95[1]}`);
  // 9 of 60 good parts above 0.5: rate 0.15, interval about 0.15 ± 0.09
  assert.equal(p.false_alarm_rate, 9 / 60);
  assert.ok(p.false_alarm_rate_95[0] > 0.04 && p.false_alarm_rate_95[0] < 0.08);
  assert.ok(p.false_alarm_rate_95[1] > 0.22 && p.false_alarm_rate_95[1] < 0.27);
  assert.deepEqual(thresholdPoint(parts, 0.5, "t", [], { resamples: 1000, seed: 3 }), p);
  assert.notDeepEqual(
    thresholdPoint(parts, 0.5, "t", [], { resamples: 1000, seed: 4 }).caught_rate_95,
    [0, 0],
  );
  assert.throws(() => thresholdPoint(parts, 0.5, "t", [], { resamples: 0, seed: 3 }), /resamples/);
  assert.throws(() => thresholdPoint(goodParts([0.1]), 0.5, "t", []), /1 good and 0 defective/);
});

test("per defect type: count, caught, image AUROC against the good parts, mean score", () => {
  const parts = [
    ...goodParts([0.1, 0.2, 0.3, 0.4]),
    ...defects("scratch", [0.25, 0.5]),
    ...defects("blob", [1, 0.75, 0.5]),
  ];
  assert.deepEqual(defectTypeRows(parts, 0.6), [
    { type: "blob", count: 3, caught: 2, image_auroc: 1, mean_score: 0.75 },
    // 0.25 beats 2 of 4 good parts, 0.5 all 4: (2 + 4) / 8
    { type: "scratch", count: 2, caught: 0, image_auroc: 0.75, mean_score: 0.375 },
  ]);
});
