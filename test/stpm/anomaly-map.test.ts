import assert from "node:assert/strict";
import { test } from "node:test";
import { encodeModel, GraphBuilder } from "../../src/onnx/onnx-graph.js";
import { createSession, floatInput } from "../../src/onnx/ort.js";
import { anomalyMapNodes } from "../../src/stpm/anomaly-map.js";
import { Random } from "../../src/stpm/random.js";

const N = 2;
const C = 3;
const SIZE = { width: 8, height: 6 };
const LEVELS = [
  { h: 3, w: 4 },
  { h: 2, w: 2 },
];

/** ½‖t/|t| − s/|s|‖² over channels at each position of one N×C×h×w level. */
function distance(t: Float32Array, s: Float32Array, h: number, w: number): Float64Array {
  const out = new Float64Array(N * h * w);
  for (let n = 0; n < N; n++) {
    for (let p = 0; p < h * w; p++) {
      const at = (x: Float32Array, c: number) => x[(n * C + c) * h * w + p]!;
      const norm = (x: Float32Array) => Math.sqrt([0, 1, 2].reduce((sum, c) => sum + at(x, c) ** 2, 0));
      const [nt, ns] = [norm(t), norm(s)];
      let d = 0;
      for (let c = 0; c < C; c++) d += (at(t, c) / nt - at(s, c) / ns) ** 2;
      out[n * h * w + p] = d / 2;
    }
  }
  return out;
}

/** Bilinear upsampling with half-pixel centres (PyTorch's align_corners=False), edges clamped. */
function upsample(map: Float64Array, h: number, w: number): Float64Array {
  const { width: W, height: H } = SIZE;
  const out = new Float64Array(N * H * W);
  const axis = (dst: number, inLen: number, outLen: number) => {
    const x = Math.max(0, ((dst + 0.5) * inLen) / outLen - 0.5);
    const i0 = Math.min(Math.floor(x), inLen - 1);
    return { i0, i1: Math.min(i0 + 1, inLen - 1), f: x - Math.floor(x) };
  };
  for (let n = 0; n < N; n++) {
    for (let y = 0; y < H; y++) {
      const ay = axis(y, h, H);
      for (let x = 0; x < W; x++) {
        const ax = axis(x, w, W);
        const v = (yy: number, xx: number) => map[n * h * w + yy * w + xx]!;
        const top = v(ay.i0, ax.i0) * (1 - ax.f) + v(ay.i0, ax.i1) * ax.f;
        const bottom = v(ay.i1, ax.i0) * (1 - ax.f) + v(ay.i1, ax.i1) * ax.f;
        out[(n * H + y) * W + x] = top * (1 - ay.f) + bottom * ay.f;
      }
    }
  }
  return out;
}

test("the anomaly map is the product over levels of the upsampled ½‖t̂ − ŝ‖², the score its maximum", async () => {
  const b = new GraphBuilder("test/");
  anomalyMapNodes(
    b,
    LEVELS.map((_, i) => ({ teacher: `t${i}`, student: `s${i}` })),
    SIZE,
    { map: "map", score: "score" },
  );
  const inputs = LEVELS.flatMap(({ h, w }, i) => [
    { name: `t${i}`, dims: [N, C, h, w] },
    { name: `s${i}`, dims: [N, C, h, w] },
  ]);
  const graph = {
    nodes: b.nodes,
    initializers: b.initializers,
    inputs,
    outputs: [
      { name: "map", dims: [N, SIZE.height, SIZE.width] },
      { name: "score", dims: [N] },
    ],
    metadata: {},
    opset: 17,
  };
  const session = await createSession(encodeModel(graph));
  const rng = new Random(5);
  const feeds: Record<string, Float32Array> = {};
  for (const { name, dims } of inputs) {
    feeds[name] = new Float32Array(dims.reduce((a, d) => a * d, 1)).map(() => rng.normal());
  }
  const out = await session.run(
    Object.fromEntries(inputs.map(({ name, dims }) => [name, floatInput(feeds[name]!, dims)])),
  );
  const expected = LEVELS.map(({ h, w }, i) =>
    upsample(distance(feeds[`t${i}`]!, feeds[`s${i}`]!, h, w), h, w),
  ).reduce((product, level) => product.map((v, j) => v * level[j]!));
  const map = out.map!.data as Float32Array;
  assert.equal(map.length, expected.length);
  expected.forEach((e, j) => {
    assert.ok(
      Math.abs(map[j]! - e) <= 1e-5 * Math.abs(e) + 1e-7,
      `map[${j}]: graph ${map[j]}, computed here ${e}`,
    );
  });
  const per = SIZE.width * SIZE.height;
  const scores = out.score!.data as Float32Array;
  for (let n = 0; n < N; n++) assert.equal(scores[n], Math.max(...map.subarray(n * per, (n + 1) * per)));
  // a NaN feature at the last position of the last image's finest level: NaN in part of its map only, after
  // finite pixels, where a plain ReduceMax would return the maximum of the rest
  const poisoned = feeds.s0!.slice();
  poisoned[poisoned.length - 1] = Number.NaN;
  const withNaN = await session.run(
    Object.fromEntries(
      inputs.map(({ name, dims }) => [name, floatInput(name === "s0" ? poisoned : feeds[name]!, dims)]),
    ),
  );
  const nanMap = (withNaN.map!.data as Float32Array).subarray((N - 1) * per);
  assert.ok(Number.isFinite(nanMap[0]!) && nanMap.some((v) => Number.isNaN(v)), "NaN in part of the map");
  const nanScores = withNaN.score!.data as Float32Array;
  assert.ok(Number.isNaN(nanScores[N - 1]!), `score ${nanScores[N - 1]}`);
  assert.equal(nanScores[0], scores[0], "the other images' scores are untouched");
  await session.release();
});
