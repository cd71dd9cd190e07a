import assert from "node:assert/strict";
import { test } from "node:test";
import { RepeatLimiter } from "../../src/core/repeat-limiter.js";

test("a repeating problem is let through once, then once per interval with the count meanwhile; memory is bounded", () => {
  const limiter = new RepeatLimiter(60_000, 2);
  assert.deepEqual(limiter.admit("disk full", 0), { unlogged: 0 });
  for (let t = 1; t <= 5; t++) assert.equal(limiter.admit("disk full", t * 1000), undefined);
  assert.deepEqual(limiter.admit("other", 6000), { unlogged: 0 }, "another problem is not held back");
  assert.deepEqual(limiter.admit("disk full", 60_000), { unlogged: 5 });
  assert.equal(limiter.admit("disk full", 60_001), undefined);
  // a third distinct problem beyond the bound of 2: the memory starts over, so each is let through again
  assert.deepEqual(limiter.admit("third", 61_000), { unlogged: 0 });
  assert.deepEqual(limiter.admit("disk full", 61_001), { unlogged: 0 });
  limiter.clear();
  assert.deepEqual(limiter.admit("third", 61_002), { unlogged: 0 }, "cleared: logged at once");
});

test("an infinite interval lets each distinct problem through once", () => {
  const limiter = new RepeatLimiter(Number.POSITIVE_INFINITY);
  assert.deepEqual(limiter.admit("cam1 resized", 0), { unlogged: 0 });
  assert.equal(limiter.admit("cam1 resized", 365 * 24 * 3600_000), undefined);
  assert.deepEqual(limiter.admit("cam2 resized", 1), { unlogged: 0 });
});
