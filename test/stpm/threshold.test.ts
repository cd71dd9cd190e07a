import assert from "node:assert/strict";
import { test } from "node:test";
import {
  binomialUpperBound,
  describeFalseAlarms,
  normalsNeeded,
  predictedFalseAlarmRate,
  resolveThreshold,
} from "../../src/stpm/threshold.js";

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
  // 4 of 40 cannot show 10 % within 2× (the 95 % bound is 0.215); 44 normals can
  assert.match(tenPercent.warning ?? "", /needs at least 44 held-out normals/);
  const fifty = { ...basis, validation_scores: Array.from({ length: 50 }, (_, i) => (i + 1) / 100) };
  assert.equal(resolveThreshold({ false_alarm_rate: 0.1 }, fifty).warning, undefined);
  // rates between steps of 1/n round to the stricter side: never more false alarms than asked for
  const r = resolveThreshold({ false_alarm_rate: 0.06 }, basis);
  assert.ok(basis.validation_scores.filter((s) => s > r.value).length / 40 <= 0.06);
});

test("a false-alarm rate finer than the validation set resolves says so, with the normals it needs", () => {
  const r = resolveThreshold({ false_alarm_rate: 0.001 }, basis);
  assert.equal(r.value, 0.4);
  assert.match(
    r.warning ?? "",
    /false_alarm_rate 0\.001: the bundle has 40 validation normals, too few to show it \(predicted false-alarm rate 0 % \(0\/40 validation normals above\), at most 7\.2 % at 95 %\); showing 0\.001 within 2× needs at least 5254 held-out normals/,
  );
});

test("predicted false-alarm rate: k/n of the validation normals above the threshold, with the exact 95 % bound", () => {
  const thirty = Array.from({ length: 30 }, (_, i) => i / 100); // 0 … 0.29
  const none = predictedFalseAlarmRate(1, thirty);
  assert.deepEqual(
    { ...none, upper95: Number(none.upper95!.toFixed(4)) },
    {
      false_alarms: 0,
      normals: 30,
      rate: 0,
      upper95: 0.095, // 1 − 0.05^(1/30)
    },
  );
  // a score equal to the threshold is not flagged (judge: score > threshold), so 0.27 leaves 2 above
  const two = predictedFalseAlarmRate(0.27, thirty);
  assert.equal(two.false_alarms, 2);
  assert.equal(two.rate, 2 / 30);
  assert.match(
    describeFalseAlarms(none),
    /^predicted false-alarm rate 0 % \(0\/30 validation normals above\), at most 9\.5 % at 95 %$/,
  );
  assert.deepEqual(predictedFalseAlarmRate(1, []), {
    false_alarms: 0,
    normals: 0,
    rate: null,
    upper95: null,
  });
});

test("the Clopper–Pearson bound: known values, and P(X ≤ k) = 5 % at the bound", () => {
  assert.ok(Math.abs(binomialUpperBound(1, 10) - 0.3942) < 1e-4);
  assert.ok(Math.abs(binomialUpperBound(0, 300) - 0.009936) < 1e-6);
  assert.equal(binomialUpperBound(5, 5), 1);
  // P(X ≤ 3; 30, u) summed directly
  const u = binomialUpperBound(3, 30);
  let cdf = 0;
  let c = 1;
  for (let i = 0; i <= 3; i++) {
    cdf += c * u ** i * (1 - u) ** (30 - i);
    c = (c * (30 - i)) / (i + 1);
  }
  assert.ok(Math.abs(cdf - 0.05) < 1e-9, `cdf ${cdf}`);
});

test("normals a false-alarm rate needs: the first n from which the rule's 95 % bound stays within 2p", () => {
  assert.equal(normalsNeeded(0.1), 44);
  assert.equal(normalsNeeded(0.01), 523);
  assert.equal(normalsNeeded(0.001), 5254);
  for (const p of [0.1, 0.05, 0.01]) {
    const n = normalsNeeded(p);
    assert.ok(binomialUpperBound(Math.floor(n * p), n) <= 2 * p);
    assert.ok(binomialUpperBound(Math.floor((n - 1) * p), n - 1) > 2 * p);
    // and it stays so over the next steps of ⌊np⌋
    for (let m = n; m < n + 3 / p; m++)
      assert.ok(binomialUpperBound(Math.floor(m * p), m) <= 2 * p, `n ${m}`);
  }
});
