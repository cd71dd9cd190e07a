import assert from "node:assert/strict";
import { describe, test } from "node:test";
import sharp from "sharp";
import { isStpmdError } from "../../src/core/errors.js";
import type { Frame } from "../../src/core/frame.js";
import { renderSnapshot } from "../../src/data/snapshot.js";
import type { Region } from "../../src/stpm/regions.js";

const WIDTH = 96;
const HEIGHT = 64;
const BASE: [number, number, number] = [90, 140, 60];
const THRESHOLD = 2;
/** A 16×16 hot spot with map values of 4 × threshold, far above the ramp's saturation at 1.5 × threshold. */
const SPOT = { x: 60, y: 30, size: 16 };
/** JPEG at quality 95 without chroma subsampling stays within a few levels on flat areas. */
const TOLERANCE = 6;

function uniformFrame(): Frame {
  const rgb = new Uint8Array(WIDTH * HEIGHT * 3);
  for (let i = 0; i < WIDTH * HEIGHT; i++) rgb.set(BASE, i * 3);
  return { cameraId: "cam0", seq: 3, captureTs: 1_700_000_000_000, width: WIDTH, height: HEIGHT, rgb };
}

function spotMap(): Float32Array {
  const map = new Float32Array(WIDTH * HEIGHT).fill(0.1 * THRESHOLD);
  for (let y = SPOT.y; y < SPOT.y + SPOT.size; y++) {
    for (let x = SPOT.x; x < SPOT.x + SPOT.size; x++) map[y * WIDTH + x] = 4 * THRESHOLD;
  }
  return map;
}

async function decode(
  jpeg: Buffer,
): Promise<{ width: number; height: number; pixel(x: number, y: number): number[] }> {
  const { data, info } = await sharp(jpeg).raw().toBuffer({ resolveWithObject: true });
  return {
    width: info.width,
    height: info.height,
    pixel: (x, y) => {
      const offset = (y * info.width + x) * info.channels;
      return Array.from(data.subarray(offset, offset + 3));
    },
  };
}

function assertNear(actual: number[], expected: number[], what: string): void {
  for (let c = 0; c < 3; c++) {
    assert.ok(
      Math.abs(actual[c]! - expected[c]!) <= TOLERANCE,
      `${what}: got rgb(${actual.join(",")}), expected about rgb(${expected.join(",")})`,
    );
  }
}

describe("renderSnapshot", () => {
  test("encodes a JPEG of the frame's size", async () => {
    const jpeg = await renderSnapshot(uniformFrame(), spotMap(), THRESHOLD, { quality: 95 });
    assert.deepEqual([...jpeg.subarray(0, 3)], [0xff, 0xd8, 0xff]);
    const meta = await sharp(jpeg).metadata();
    assert.equal(meta.format, "jpeg");
    assert.equal(meta.width, WIDTH);
    assert.equal(meta.height, HEIGHT);
  });

  test("leaves pixels far below threshold unchanged and tints the hot spot red", async () => {
    const image = await decode(await renderSnapshot(uniformFrame(), spotMap(), THRESHOLD, { quality: 95 }));
    assertNear(image.pixel(10, 10), BASE, "background pixel");
    // Saturated ramp: pure red blended at alpha 0.7 over the frame colour.
    const expected = [0.3 * BASE[0] + 0.7 * 255, 0.3 * BASE[1], 0.3 * BASE[2]].map(Math.round);
    assertNear(image.pixel(SPOT.x + 8, SPOT.y + 8), expected, "hot-spot pixel");
  });

  test("draws region bboxes as outlines just outside the box", async () => {
    const region: Region = {
      bbox: [SPOT.x, SPOT.y, SPOT.size, SPOT.size],
      area: SPOT.size * SPOT.size,
      peak: 4 * THRESHOLD,
      centroid: [SPOT.x + 7.5, SPOT.y + 7.5],
    };
    const image = await decode(
      await renderSnapshot(uniformFrame(), spotMap(), THRESHOLD, { quality: 95, regions: [region] }),
    );
    // Two pixels wide at full scale; sample the middle of the left edge, one pixel outside the box.
    assertNear(image.pixel(SPOT.x - 1, SPOT.y + 8), [255, 0, 255], "outline pixel");
    assertNear(image.pixel(SPOT.x - 6, SPOT.y + 8), BASE, "pixel beyond the outline");
  });

  test("downscales to maxSide keeping the aspect ratio", async () => {
    const jpeg = await renderSnapshot(uniformFrame(), spotMap(), THRESHOLD, { quality: 80, maxSide: 48 });
    const meta = await sharp(jpeg).metadata();
    assert.equal(meta.width, 48);
    assert.equal(meta.height, 32);
  });

  test("rejects a map that does not match the frame, naming the camera and frame", async () => {
    await assert.rejects(
      renderSnapshot(uniformFrame(), new Float32Array(10), THRESHOLD, { quality: 90 }),
      (err: unknown) => isStpmdError(err) && err.code === "ERR_MASK_SIZE" && /cam0 frame 3/.test(err.message),
    );
  });
});
