import assert from "node:assert/strict";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { test } from "node:test";
import { ShadowDb, type ShadowMeta, type ShadowPair } from "../../../src/stations/candidates/shadow-db.js";
import { tempDir } from "../../helpers/tiny-data.js";

const META: ShadowMeta = {
  state: "running",
  candidate_model_version: "c1",
  started_at: "2026-12-07T05:00:00.000Z",
  ends_at: "2026-12-08T05:00:00.000Z",
  share: 0.25,
  max_frames: 5000,
  dropped: 0,
};

function pair(seq: number, live: string, candidate: string, image: string | null = null): ShadowPair {
  return {
    seq,
    capture_ts: 1_700_000_000_000 + seq,
    live_score: seq / 10,
    live_verdict: live,
    live_threshold: 0.5,
    live_model: "l1",
    candidate_score: seq / 20,
    candidate_verdict: candidate,
    candidate_threshold: 0.4,
    candidate_model: "c1",
    image,
  };
}

test("shadow.db keeps pairs and meta across a reopen; counts agree with the pairs; a score that is not finite comes back NaN", async () => {
  const file = path.join(await tempDir("stpmd-shadow-db-"), "shadow.db");
  const db = new ShadowDb(file);
  assert.equal(db.meta(), undefined);
  db.writeMeta(META);
  const pairs = [
    pair(1, "ok", "ok"),
    pair(2, "defect", "ok", "p2"),
    pair(3, "ok", "defect"),
    pair(4, "defect", "defect"),
    { ...pair(5, "error", "ok"), live_score: Number.NaN },
  ];
  db.addBatch(pairs, { ...META, dropped: 3 });
  db.close();

  const again = new ShadowDb(file, { readonly: true });
  assert.deepEqual(again.meta(), { ...META, dropped: 3 });
  assert.deepEqual(again.counts(), {
    frames: 5,
    live_alarms: 2,
    candidate_alarms: 2,
    disagreements: 2,
    kept: 1,
  });
  const back = again.pairs();
  assert.deepEqual(back.slice(0, 4), pairs.slice(0, 4));
  assert.ok(Number.isNaN(back[4]!.live_score));
  again.close();
});

test("a shadow batch's commit: a fraction of a millisecond, but the WAL checkpoints stall some (why writes have their own thread)", async () => {
  const db = new ShadowDb(path.join(await tempDir("stpmd-shadow-db-"), "shadow.db"));
  db.writeMeta(META);
  const batches = 2000;
  const times: number[] = [];
  for (let b = 0; b < batches; b++) {
    const batch = Array.from({ length: 8 }, (_, i) => pair(b * 8 + i, "ok", i % 3 === 0 ? "defect" : "ok"));
    const t0 = performance.now();
    db.addBatch(batch, { ...META, dropped: b });
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  const median = times[batches / 2]!;
  const p99 = times[Math.floor(batches * 0.99)]!;
  const max = times.at(-1)!;
  console.log(
    `shadow.db: batch of 8 pairs + meta, median ${median.toFixed(3)} ms, p99 ${p99.toFixed(3)} ms, max ${max.toFixed(3)} ms`,
  );
  assert.equal(db.counts().frames, batches * 8);
  // a bound with room for a loaded CI box: the batch's inference takes milliseconds
  assert.ok(median < 2, `median commit ${median} ms`);
  db.close();
});
