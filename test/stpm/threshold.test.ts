import assert from "node:assert/strict";
import { test } from "node:test";
import { resolveThreshold } from "../../src/stpm/threshold.js";

const basis = {
  threshold: 0.9,
  validation_scores: Array.from({ length: 40 }, (_, i) => (i + 1) / 100), // 0.01 … 0.40
  score_stats: { mean: 0.205, std: 0.1 },
};

test("threshold rules: the bundle's own, sigma, a fixed value, a false-alarm rate", () => {
  assert.equal(resolveThreshold(undefined, basis).value, 0.9);
  assert.ok(Math.abs(resolveThreshold({ sigma: 2 }, basis).value - 0.405) < 1e-12);
  assert.equal(resolveThreshold({ value: 0.3 }, basis).value, 0.3);
  // 10 % of 40: the 36th smallest score, 0.36; exactly 4 validation scores (10 %) lie above it
  const tenPercent = resolveThreshold({ false_alarm_rate: 0.1 }, basis);
  assert.equal(tenPercent.value, 0.36);
  assert.equal(basis.validation_scores.filter((s) => s > tenPercent.value).length, 4);
  assert.equal(tenPercent.warning, undefined);
  // rates between steps of 1/n round to the stricter side: never more false alarms than asked for
  const r = resolveThreshold({ false_alarm_rate: 0.06 }, basis);
  assert.ok(basis.validation_scores.filter((s) => s > r.value).length / 40 <= 0.06);
});

test("a false-alarm rate finer than the validation set resolves says so", () => {
  const r = resolveThreshold({ false_alarm_rate: 0.001 }, basis);
  assert.equal(r.value, 0.4);
  assert.match(r.warning ?? "", /below 1\/40 .* below about 0\.075/);
});
