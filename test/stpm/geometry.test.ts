import assert from "node:assert/strict";
import { test } from "node:test";
import {
  parseImageSize,
  parseRoi,
  planTiles,
  resizeGeometry,
  tiledGeometry,
  tileStarts,
} from "../../src/stpm/geometry.js";
import { rasterisePolygons } from "../../src/stpm/ignore.js";
import { scoreImages } from "../../src/stpm/image-scoring.js";

test("tiles start every tile − overlap pixels and the last one is shifted inwards, never past the edge", () => {
  assert.deepEqual(tileStarts(750, 256, 32), [0, 224, 448, 494]);
  assert.deepEqual(tileStarts(500, 256, 32), [0, 224, 244]);
  assert.deepEqual(tileStarts(256, 256, 32), [0]);
  assert.deepEqual(tileStarts(1920, 256, 0), [0, 256, 512, 768, 1024, 1280, 1536, 1664]);
  const plan = planTiles({ width: 750, height: 500 }, 256, 32);
  assert.equal(plan.count, 12);
  // ownership splits each overlap at its middle and covers every column exactly once
  assert.deepEqual(plan.ownX, [0, 240, 464, 599, 750]);
  assert.deepEqual(plan.ownY, [0, 240, 362, 500]);
});

test("scoring tiles and stitching them gives back one map of the whole image, pixel for pixel", async () => {
  // a model whose map at each pixel is that pixel's red value: the stitched map must then equal the image's reds
  const width = 100;
  const height = 70;
  const image = new Uint8Array(width * height * 3);
  for (let i = 0; i < width * height; i++) image[i * 3] = (i * 37) % 251;
  const geometry = tiledGeometry({ width, height }, null, 32, 8, 1);
  let calls = 0;
  const redModel = async (packed: Uint8Array, count: number) => {
    calls += 1;
    assert.ok(count <= 5, "at most `batch` tiles per call");
    const maps = new Float32Array(count * 32 * 32);
    for (let i = 0; i < maps.length; i++) maps[i] = packed[i * 3]!;
    return { maps, scores: new Float32Array(count) };
  };
  const { maps, scores } = await scoreImages(redModel, [image, image], geometry, 5);
  const plan = planTiles({ width, height }, 32, 8);
  assert.equal(calls, Math.ceil((2 * plan.count) / 5));
  for (const map of maps) {
    for (let i = 0; i < width * height; i++) assert.equal(map[i], image[i * 3], `pixel ${i}`);
  }
  assert.equal(scores[0], 250);
  // an ignore mask zeroes its pixels before the score
  const mask = new Uint8Array(width * height).fill(1);
  mask[5] = 0;
  const masked = await scoreImages(redModel, [image], geometry, 5, () => mask);
  assert.equal(masked.scores[0], image[15]);
  assert.equal(masked.maps[0]![6], 0);
});

test("a NaN pixel anywhere in a stitched or masked map makes the image score NaN, unless the mask covers it", async () => {
  // a model whose map is the red value, except NaN where red is 0
  const width = 100;
  const height = 70;
  const nanModel = async (packed: Uint8Array, count: number) => {
    const maps = new Float32Array(count * 32 * 32);
    for (let i = 0; i < maps.length; i++) maps[i] = packed[i * 3] === 0 ? Number.NaN : packed[i * 3]!;
    return { maps, scores: new Float32Array(count) };
  };
  const image = new Uint8Array(width * height * 3).fill(9);
  const last = width * height - 1; // after every finite pixel, so a plain maximum would have skipped it
  image[last * 3] = 0;
  const geometry = tiledGeometry({ width, height }, null, 32, 8, 1);
  const plain = await scoreImages(nanModel, [image], geometry, 5);
  assert.ok(Number.isNaN(plain.scores[0]), `stitched: ${plain.scores[0]}`);
  const keepNaN = new Uint8Array(width * height);
  keepNaN[0] = 1;
  const masked = await scoreImages(nanModel, [image], geometry, 5, () => keepNaN);
  assert.ok(Number.isNaN(masked.scores[0]), `masked elsewhere: ${masked.scores[0]}`);
  const coverNaN = new Uint8Array(width * height);
  coverNaN[last] = 1;
  const covered = await scoreImages(nanModel, [image], geometry, 5, () => coverNaN);
  assert.equal(covered.scores[0], 9, "an ignored NaN pixel is no part of the score");
});

test("resize geometry scores whole images in batches", async () => {
  const g = resizeGeometry({ width: 32, height: 48 });
  const images = [1, 2, 3].map((v) => new Uint8Array(32 * 48 * 3).fill(v));
  const { scores } = await scoreImages(
    async (packed, count) => {
      const maps = new Float32Array(count * 32 * 48);
      for (let i = 0; i < maps.length; i++) maps[i] = packed[i * 3]!;
      // as the scoring graph does: each score is its map's maximum
      const scores = Float32Array.from({ length: count }, (_, k) =>
        Math.max(...maps.subarray(k * 32 * 48, (k + 1) * 32 * 48)),
      );
      return { maps, scores };
    },
    images,
    g,
    2,
  );
  assert.deepEqual(scores, [1, 2, 3]);
});

test("bad geometry options get one line naming the option", () => {
  assert.deepEqual(parseImageSize("256x640"), { width: 256, height: 640 });
  assert.deepEqual(parseImageSize("256"), { width: 256, height: 256 });
  assert.throws(() => parseImageSize("250x640"), /--image-size 250x640: width 250 must be a multiple of 16/);
  assert.throws(() => parseImageSize("big"), /--image-size big: must be N or WIDTHxHEIGHT/);
  assert.deepEqual(parseRoi("10,20,300,200"), { x: 10, y: 20, width: 300, height: 200 });
  assert.throws(() => parseRoi("10,20,300"), /--roi 10,20,300: must be four non-negative integers/);
  assert.throws(
    () => tiledGeometry({ width: 300, height: 200 }, null, 256, 32, 0.5),
    /--tile 256: tile 256 is larger than the scaled image \(150×100\)/,
  );
  assert.throws(
    () => tiledGeometry({ width: 300, height: 200 }, null, 100, 0, 1),
    /--tile 100: must be a multiple of 16/,
  );
});

test("ignore polygons are rasterised at pixel centres and scaled from ROI pixels to the map grid", () => {
  const square = [
    [2, 2],
    [6, 2],
    [6, 6],
    [2, 6],
  ] as [number, number][];
  const mask = rasterisePolygons([square], 8, 8);
  const inside = [...mask].reduce((a, b) => a + b, 0);
  assert.equal(inside, 16);
  assert.equal(mask[2 * 8 + 2], 1);
  assert.equal(mask[6 * 8 + 6], 0);
  // the same square given in pixels of a 16×16 ROI covers a quarter of the area on the 8×8 map
  const scaled = rasterisePolygons([square.map(([x, y]) => [x * 2, y * 2] as [number, number])], 8, 8, 2, 2);
  assert.deepEqual(scaled, mask);
});
