import assert from "node:assert/strict";
import { test } from "node:test";
import { framesAwaitingVerdict } from "../../src/capture/frame-source.js";
import { NativeRing } from "../../src/capture/native-ring.js";

const frame = (bytes: number) => ({ width: bytes / 3, height: 1, rgb: new Uint8Array(bytes) });

test("the ring keeps the newest frames within its bytes, oldest out first", () => {
  const ring = new NativeRing(900, 64);
  for (let ref = 1; ref <= 5; ref++) ring.add(ref, frame(300));
  assert.equal(ring.size, 3);
  assert.deepEqual(
    [1, 2, 3, 4, 5].map((ref) => ring.get(ref) !== undefined),
    [false, false, true, true, true],
  );
});

test("a frame larger than the whole bound is still kept, alone, until the next one comes", () => {
  const ring = new NativeRing(100, 64);
  ring.add(1, frame(30));
  ring.add(2, frame(300));
  assert.equal(ring.size, 1);
  assert.ok(ring.get(2));
  ring.add(3, frame(30));
  assert.deepEqual([ring.get(2), ring.get(3)?.rgb.byteLength], [undefined, 30]);
});

test("no more frames are kept than can wait for a verdict, however small they are", () => {
  const ring = new NativeRing(1 << 20, 3);
  for (let ref = 1; ref <= 6; ref++) ring.add(ref, frame(30));
  assert.equal(ring.size, 3);
  assert.deepEqual(
    [1, 2, 3, 4, 5, 6].map((ref) => ring.get(ref) !== undefined),
    [false, false, false, true, true, true],
  );
});

test("a frame let go frees its place and its bytes", () => {
  const ring = new NativeRing(900, 3);
  for (let ref = 1; ref <= 3; ref++) ring.add(ref, frame(300));
  ring.delete(2);
  ring.delete(7);
  ring.add(4, frame(300));
  assert.deepEqual(
    [1, 2, 3, 4].map((ref) => ring.get(ref) !== undefined),
    [true, false, true, true],
    "frame 1 stays: the bytes and the count have room again",
  );
});

test("the frames that can wait for a verdict: a full queue, a batch judged, a batch recorded", () => {
  assert.equal(framesAwaitingVerdict({ queue_size: 32, max_batch: 8 }), 48);
  assert.equal(framesAwaitingVerdict({ queue_size: 4, max_batch: 1 }), 6);
});
