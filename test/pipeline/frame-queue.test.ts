import assert from "node:assert/strict";
import { test } from "node:test";
import type { Frame } from "../../src/core/frame.js";
import { FrameQueue } from "../../src/pipeline/frame-queue.js";

const frame = (cameraId: string, seq: number): Frame => ({
  cameraId,
  seq,
  captureTs: Date.now(),
  width: 1,
  height: 1,
  rgb: new Uint8Array(3),
});

test("a full queue drops the oldest frames and counts them per camera", async () => {
  const q = new FrameQueue(3);
  for (let i = 0; i < 5; i++) q.push(frame(i % 2 === 0 ? "a" : "b", i));
  assert.equal(q.length, 3);
  assert.deepEqual(q.droppedByCamera(), { a: 1, b: 1 });
  const batch = await q.takeBatch(10, 0);
  assert.deepEqual(
    batch.map((f) => f.seq),
    [2, 3, 4],
  );
});

test("a batch closes at max size without waiting, or after max wait with what arrived", async () => {
  const q = new FrameQueue(16);
  for (let i = 0; i < 4; i++) q.push(frame("a", i));
  const t0 = Date.now();
  assert.equal((await q.takeBatch(4, 1000)).length, 4);
  assert.ok(Date.now() - t0 < 100);
  q.push(frame("a", 10));
  setTimeout(() => q.push(frame("a", 11)), 20);
  const t1 = Date.now();
  const b = await q.takeBatch(8, 120);
  assert.deepEqual(
    b.map((f) => f.seq),
    [10, 11],
  );
  assert.ok(Date.now() - t1 >= 100, "waited for more frames until max wait");
});

test("close releases a waiting taker with an empty batch", async () => {
  const q = new FrameQueue(2);
  const pending = q.takeBatch(2, 10);
  q.close();
  assert.deepEqual(await pending, []);
});
