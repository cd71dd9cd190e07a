import assert from "node:assert/strict";
import { test } from "node:test";
import { NativeRing } from "../../src/capture/native-ring.js";

const frame = (bytes: number) => ({ width: bytes / 3, height: 1, rgb: new Uint8Array(bytes) });

test("the ring keeps the newest frames within its bytes, oldest out first", () => {
  const ring = new NativeRing(900);
  for (let ref = 1; ref <= 5; ref++) ring.add(ref, frame(300));
  assert.equal(ring.size, 3);
  assert.deepEqual(
    [1, 2, 3, 4, 5].map((ref) => ring.get(ref) !== undefined),
    [false, false, true, true, true],
  );
});

test("a frame larger than the whole bound is still kept, alone, until the next one comes", () => {
  const ring = new NativeRing(100);
  ring.add(1, frame(30));
  ring.add(2, frame(300));
  assert.equal(ring.size, 1);
  assert.ok(ring.get(2));
  ring.add(3, frame(30));
  assert.deepEqual([ring.get(2), ring.get(3)?.rgb.byteLength], [undefined, 30]);
});
