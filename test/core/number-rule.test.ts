import assert from "node:assert/strict";
import { test } from "node:test";
import { numberProblem } from "../../src/core/number-rule.js";

test("a number rule bounds integers and reals from below, and from above where it says so", () => {
  const epochs = { flag: "--epochs", integer: true, min: 1 };
  assert.equal(numberProblem(epochs, 1), undefined);
  for (const v of [0, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
    assert.equal(numberProblem(epochs, v), "must be an integer ≥ 1", String(v));
  }
  const fraction = { flag: "--val-fraction", min: 0, below: 1 };
  assert.equal(numberProblem(fraction, 0), undefined);
  assert.equal(numberProblem(fraction, 0.999), undefined);
  assert.equal(numberProblem(fraction, 1), "must be a number ≥ 0 and below 1");
  assert.equal(numberProblem(fraction, -0.1), "must be a number ≥ 0 and below 1");
  // a duration: 0 itself is refused
  const budget = { flag: "--time-budget", min: 0, above: true };
  assert.equal(numberProblem(budget, 0.001), undefined);
  for (const v of [0, -1, Number.NaN])
    assert.equal(numberProblem(budget, v), "must be a number > 0", String(v));
});
