import assert from "node:assert/strict";
import path from "node:path";
import { test } from "node:test";
import { iterateRecords, openRecordsDb, RECORDS_DB } from "../../../src/publish/record-store.js";
import {
  MAX_QUEUED_IMAGE_BYTES,
  MAX_QUEUED_ROWS,
  RecordsThread,
} from "../../../src/publish/records/record-thread.js";
import { capturingLogger } from "../../helpers/logs.js";
import { recordJob, writerOptionsFor } from "../../helpers/records.js";
import { tempDir } from "../../helpers/tiny-data.js";
import { waitFor } from "../../helpers/wait.js";

test("the records thread's queue is bounded: rows beyond it are dropped and counted, the rest written, in order", async () => {
  const dir = await tempDir("stpmd-records-thread-");
  const { logger, lines } = capturingLogger();
  const thread = new RecordsThread(writerOptionsFor(dir), logger);
  thread.start();
  // posted without yielding, so the thread cannot acknowledge any: the queue holds exactly MAX_QUEUED_ROWS
  const batch = 1000;
  let seq = 0;
  const post = () => {
    const jobs = Array.from({ length: batch }, () => recordJob(seq++));
    return thread.post(jobs, []);
  };
  for (let i = 0; i < MAX_QUEUED_ROWS / batch; i++) assert.ok(post(), `batch ${i} queued`);
  assert.equal(thread.counts.queued, MAX_QUEUED_ROWS);
  assert.equal(post(), false, "one batch more is dropped");
  assert.equal(thread.counts.dropped, batch);
  assert.ok(thread.admitsImage(MAX_QUEUED_IMAGE_BYTES));
  assert.ok(!thread.admitsImage(MAX_QUEUED_IMAGE_BYTES + 1), "pixels are bounded too");
  await waitFor("the queue written", () => thread.stats?.written === MAX_QUEUED_ROWS, 60_000);
  assert.equal(thread.counts.queued, 0);
  assert.ok(post(), "room again once written");
  await thread.stop();
  const db = openRecordsDb(path.join(dir, RECORDS_DB), { readonly: true });
  const seqs = [...iterateRecords(db, {})].map((r) => r.seq);
  db.close();
  assert.equal(seqs.length, MAX_QUEUED_ROWS + batch, "what was queued, and the batch after stop's flush");
  assert.deepEqual(seqs.slice(0, 3), [0, 1, 2]);
  assert.equal(seqs[MAX_QUEUED_ROWS], MAX_QUEUED_ROWS + batch, "the dropped batch is missing, nothing else");
  assert.ok(
    lines.some((l) => /part record started in/.test(l.msg)),
    "the thread's log lines reach the daemon's logger",
  );
});
