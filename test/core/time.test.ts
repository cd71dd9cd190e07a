import assert from "node:assert/strict";
import { test } from "node:test";
import { jsonTime } from "../../src/core/time.js";

test("jsonTime: ISO 8601 in UTC, always with three digits of milliseconds and Z, whatever the local zone", () => {
  assert.equal(jsonTime(Date.UTC(2026, 11, 2, 1, 34, 23, 570)), "2026-12-02T01:34:23.570Z");
  assert.equal(
    jsonTime(Date.UTC(2026, 0, 1, 0, 0, 0, 0)),
    "2026-01-01T00:00:00.000Z",
    "a whole second keeps .000",
  );
  // it round-trips: a consumer's Date.parse gets the same epoch milliseconds back (Sparkplug's own format)
  const ms = 1_796_175_263_808;
  assert.equal(Date.parse(jsonTime(ms)), ms);
});
