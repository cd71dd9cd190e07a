import assert from "node:assert/strict";
import { test } from "node:test";
import { randomTeacher } from "../../src/bundle/random-teacher.js";
import { encodeModel } from "../../src/onnx/onnx-graph.js";
import { createSession, ort } from "../../src/onnx/ort.js";
import {
  contextInput,
  fedSize,
  type Geometry,
  marginProblem,
  planTiles,
  resizeGeometry,
  tiledGeometry,
} from "../../src/stpm/geometry.js";
import { modelInputs, scoreImages } from "../../src/stpm/image-scoring.js";
import { Random } from "../../src/stpm/random.js";
import { buildScoringGraph, Scorer } from "../../src/stpm/scorer.js";
import { foldedStudentGraph, initStudent } from "../../src/train/student.js";
import { studentLayout } from "../../src/train/training-graph.js";

/** An image whose red value encodes its pixel index (mod 251), green its row, blue its column. */
function codedImage(width: number, height: number): Uint8Array {
  const rgb = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const o = (y * width + x) * 3;
      rgb[o] = ((y * width + x) * 37) % 251;
      rgb[o + 1] = y;
      rgb[o + 2] = x;
    }
  }
  return rgb;
}

test("the context margin is the image reflected about its edge pixels, and a tile's real neighbours inside it", () => {
  const width = 5;
  const height = 4;
  const image = codedImage(width, height);
  const m = 2;
  const out = new Uint8Array((width + 2 * m) * (height + 2 * m) * 3);
  contextInput(image, { width, height }, { x: 0, y: 0, width, height }, m, out);
  const at = (x: number, y: number): [number, number] => {
    const o = (y * (width + 2 * m) + x) * 3;
    return [out[o + 1]!, out[o + 2]!]; // (row, column) of the source pixel
  };
  // rows −2, −1 | 0 … 3 | 4, 5 are rows 2, 1 | 0 … 3 | 2, 1; likewise columns
  const rows = [2, 1, 0, 1, 2, 3, 2, 1];
  const cols = [2, 1, 0, 1, 2, 3, 4, 3, 2];
  for (let y = 0; y < height + 2 * m; y++) {
    for (let x = 0; x < width + 2 * m; x++) assert.deepEqual(at(x, y), [rows[y], cols[x]], `(${x}, ${y})`);
  }
  // a tile in the middle of a larger image takes its context from its neighbours, not from a reflection
  const big = codedImage(40, 30);
  const tile = new Uint8Array((8 + 2 * m) * (8 + 2 * m) * 3);
  contextInput(big, { width: 40, height: 30 }, { x: 10, y: 12, width: 8, height: 8 }, m, tile);
  assert.deepEqual([tile[1], tile[2]], [10, 8], "top-left context pixel is (8, 10) of the image");
  const last = tile.length - 3;
  assert.deepEqual([tile[last + 1], tile[last + 2]], [21, 19], "bottom-right is (19, 21)");
});

test("margins: a multiple of 8 below the inspected area's shorter side, or one line naming the problem", () => {
  assert.equal(marginProblem(0, { width: 32, height: 32 }), undefined);
  assert.equal(marginProblem(16, { width: 256, height: 64 }), undefined);
  assert.match(marginProblem(12, { width: 256, height: 256 })!, /multiple of 8/);
  assert.match(marginProblem(-8, { width: 256, height: 256 })!, /at least 0/);
  assert.match(marginProblem(64, { width: 256, height: 64 })!, /larger than the room.*below 64/);
  assert.deepEqual(fedSize({ input: { width: 256, height: 640 }, margin: 16 }), { width: 288, height: 672 });
  assert.deepEqual(fedSize({ input: { width: 256, height: 256 } }), { width: 256, height: 256 });
});

/**
 * A stand-in model that does what the scoring graph does with a margin — its map at each pixel is the red value
 * the network was fed there, cropped back to the inspected area — so a stitched or resized map that equals the
 * image's reds proves the context, the crop and the stitching are aligned pixel for pixel.
 */
function croppedRedModel(g: Geometry) {
  const { width, height } = g.input;
  const fed = fedSize(g);
  const m = g.margin ?? 0;
  return async (packed: Uint8Array, count: number) => {
    assert.equal(packed.length, count * fed.width * fed.height * 3, "inputs are fed with their margin");
    const maps = new Float32Array(count * width * height);
    const scores = new Float32Array(count);
    for (let k = 0; k < count; k++) {
      for (let y = 0; y < height; y++) {
        for (let x = 0; x < width; x++) {
          const src = ((k * fed.height + y + m) * fed.width + x + m) * 3;
          maps[(k * height + y) * width + x] = packed[src]!;
        }
      }
      scores[k] = Math.max(...maps.subarray(k * width * height, (k + 1) * width * height));
    }
    return { maps, scores };
  };
}

test("with a margin the map is cropped back to the inspected area and aligned with it, resized or tiled", async () => {
  const width = 100;
  const height = 70;
  const image = codedImage(width, height);
  const tiled: Geometry = { ...tiledGeometry({ width, height }, null, 32, 8, 1), margin: 16 };
  const t = await scoreImages(croppedRedModel(tiled), [image, image], tiled, 5);
  for (const map of t.maps) {
    assert.equal(map.length, width * height);
    for (let i = 0; i < width * height; i++) assert.equal(map[i], image[i * 3], `tiled pixel ${i}`);
  }
  assert.equal(modelInputs([image], tiled).length, planTiles({ width, height }, 32, 8).count);
  const square = codedImage(48, 32);
  const resized: Geometry = { ...resizeGeometry({ width: 48, height: 32 }), margin: 8 };
  const r = await scoreImages(croppedRedModel(resized), [square], resized, 2);
  assert.equal(r.maps[0]!.length, 48 * 32);
  for (let i = 0; i < 48 * 32; i++) assert.equal(r.maps[0]![i], square[i * 3], `resized pixel ${i}`);
  assert.equal(modelInputs([square], resized)[0]!.length, 64 * 48 * 3);
});

test("the scoring graph's margin crop is the full map's middle, and a margin of 0 is the graph as before", async () => {
  const teacher = randomTeacher(3, 8);
  const size = { width: 32, height: 48 };
  const m = 8;
  const fed = { width: size.width + 2 * m, height: size.height + 2 * m };
  const student = foldedStudentGraph(
    teacher,
    studentLayout(teacher, fed.height, fed.width),
    initStudent(studentLayout(teacher, fed.height, fed.width), new Random(5)),
  );
  const norm = { mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25] };
  const rng = new Random(9);
  const frame = new Uint8Array(fed.width * fed.height * 3).map(() => Math.floor(rng.next() * 256));
  const cropped = await Scorer.create(teacher, student, { ...size, ...norm, margin: m });
  const full = await Scorer.create(teacher, student, { ...fed, ...norm });
  const a = await cropped.score(frame, 1);
  const b = await full.score(frame, 1);
  assert.equal(a.maps.length, size.width * size.height);
  let max = Number.NEGATIVE_INFINITY;
  for (let y = 0; y < size.height; y++) {
    for (let x = 0; x < size.width; x++) {
      const want = b.maps[(y + m) * fed.width + x + m]!;
      assert.equal(a.maps[y * size.width + x], want, `(${x}, ${y})`);
      max = Math.max(max, want);
    }
  }
  assert.equal(a.scores[0], max, "the score is the cropped map's maximum, not the full map's");
  await cropped.release();
  await full.release();
  // margin 0 (what an old bundle's absent margin means) builds the very graph it built before the margin existed
  const plain = buildScoringGraph(teacher, student, { ...size, ...norm });
  const zero = buildScoringGraph(teacher, student, { ...size, ...norm, margin: 0 });
  assert.deepEqual(encodeModel(zero), encodeModel(plain));
  const session = await createSession(encodeModel(plain));
  const out = await session.run({
    frames: new ort.Tensor("uint8", frame.subarray(0, size.width * size.height * 3), [
      1,
      size.height,
      size.width,
      3,
    ]),
  });
  assert.deepEqual((out.anomaly_map!.dims as number[]).slice(1), [size.height, size.width]);
  await session.release();
});
