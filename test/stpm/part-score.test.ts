import assert from "node:assert/strict";
import { test } from "node:test";
import type { Geometry } from "../../src/stpm/geometry.js";
import { scoreImages } from "../../src/stpm/image-scoring.js";
import {
  describePartScore,
  gaussianKernel,
  type PartScore,
  partScore,
  partScoreOf,
  partScoreProblem,
} from "../../src/stpm/part-score.js";

const W = 64;
const H = 64;
const MAX: PartScore = { aggregation: "max" };
const SMOOTHED: PartScore = { aggregation: "smoothed_max", sigma: 4 };
const TOP_1PC: PartScore = { aggregation: "top_k_mean", k: 0.01 };

/** A W×H map, 0 but for the square [x, x + size) × [y, y + size) at `value`. */
function square(x: number, y: number, size: number, value: number): Float32Array {
  const map = new Float32Array(W * H);
  for (let r = y; r < y + size; r++) for (let c = x; c < x + size; c++) map[r * W + c] = value;
  return map;
}

test("a lone hot pixel against a defect-sized blob: max ranks the spike first, smoothed max and top-k the blob", () => {
  const spike = square(30, 30, 1, 1);
  const blob = square(24, 24, 12, 0.6);
  assert.equal(partScore(spike, W, H, MAX), 1);
  assert.ok(Math.abs(partScore(blob, W, H, MAX) - 0.6) < 1e-6);
  // σ = 4: one pixel spreads over the kernel, its peak is the centre tap squared, (1/(√(2π)·4))² ≈ 0.00995
  const spikeSmoothed = partScore(spike, W, H, SMOOTHED);
  assert.ok(Math.abs(spikeSmoothed - 1 / (2 * Math.PI * 16)) < 2e-4, `spike smoothed ${spikeSmoothed}`);
  // a 12 px square keeps most of its height: erf(6/(4√2))² ≈ 0.8664² of 0.6
  const blobSmoothed = partScore(blob, W, H, SMOOTHED);
  assert.ok(Math.abs(blobSmoothed - 0.6 * 0.8664 ** 2) < 0.01, `blob smoothed ${blobSmoothed}`);
  assert.ok(blobSmoothed > spikeSmoothed);
  // top 1 % of 4096 pixels = 41 pixels: the spike's mean is 1/41, the blob's all 0.6
  assert.ok(Math.abs(partScore(spike, W, H, TOP_1PC) - 1 / 41) < 1e-9);
  assert.ok(Math.abs(partScore(blob, W, H, TOP_1PC) - 0.6) < 1e-6);
});

test("top-k mean is the mean of the k largest pixels, k a fraction of the area (at least one)", () => {
  const map = Float32Array.from({ length: 100 }, (_, i) => ((i * 37) % 100) + 1); // 1…100, shuffled
  assert.equal(partScore(map, 10, 10, { aggregation: "top_k_mean", k: 0.05 }), (100 + 99 + 98 + 97 + 96) / 5);
  assert.equal(partScore(map, 10, 10, { aggregation: "top_k_mean", k: 0.001 }), 100);
  assert.equal(partScore(map, 10, 10, { aggregation: "top_k_mean", k: 1 }), 50.5);
  // ties around the k-th value
  const flat = new Float32Array(100).fill(2);
  flat[7] = 5;
  assert.equal(partScore(flat, 10, 10, { aggregation: "top_k_mean", k: 0.04 }), (5 + 2 + 2 + 2) / 4);
});

test("the blur keeps a flat map flat and reflects at the border: a defect at the very edge is not averaged with 0", () => {
  const kernel = gaussianKernel(4);
  assert.equal(kernel.length, 33); // anomalib's 2·⌊4σ + ½⌋ + 1
  assert.ok(Math.abs(kernel.reduce((a, b) => a + b, 0) - 1) < 1e-6);
  assert.ok(Math.abs(partScore(new Float32Array(W * H).fill(0.3), W, H, SMOOTHED) - 0.3) < 1e-6);
  const centre = partScore(square(26, 26, 8, 1), W, H, SMOOTHED);
  const corner = partScore(square(0, 0, 8, 1), W, H, SMOOTHED);
  assert.ok(corner >= centre, `corner ${corner} < centre ${centre}`);
});

test("a pixel that is not finite makes every aggregation's score NaN", () => {
  for (const spec of [MAX, SMOOTHED, TOP_1PC]) {
    const map = square(10, 10, 4, 0.5);
    map[5] = Number.NaN;
    assert.ok(Number.isNaN(partScore(map, W, H, spec)), describePartScore(spec));
    map[5] = Number.POSITIVE_INFINITY;
    assert.ok(Number.isNaN(partScore(map, W, H, spec)), describePartScore(spec));
  }
});

test("stpmd's parameters, their one-line names, and the manifest's check", () => {
  assert.deepEqual(partScoreOf("smoothed_max"), { aggregation: "smoothed_max", sigma: 4 });
  assert.deepEqual(partScoreOf("top_k_mean"), { aggregation: "top_k_mean", k: 0.01 });
  assert.equal(describePartScore(partScoreOf("smoothed_max")), "smoothed_max (σ = 4 px)");
  assert.equal(describePartScore(partScoreOf("top_k_mean")), "top_k_mean (k = 1 % of the map)");
  assert.equal(partScoreProblem({ aggregation: "max" }), undefined);
  assert.match(
    partScoreProblem({ aggregation: "mean" }) ?? "",
    /aggregation must be one of max, smoothed_max/,
  );
  assert.match(partScoreProblem({ aggregation: "top_k_mean", k: 2 }) ?? "", /k must be a fraction/);
  assert.match(partScoreProblem({ aggregation: "smoothed_max" }) ?? "", /sigma must be/);
});

test("scoreImages scores each image by its own aggregation, after the mask; max keeps the graph's score", async () => {
  const geometry: Geometry = {
    mode: "resize",
    input: { width: W, height: H },
    capture: { width: W, height: H },
    source: { width: W, height: H },
    roi: null,
    tile: null,
    scale: null,
  };
  const spike = square(30, 30, 1, 1);
  const blob = square(5, 5, 12, 0.6);
  // a stand-in model whose graph score (7) is not its map's maximum: it shows which path made each score
  const score = async (_packed: Uint8Array, count: number) => {
    const maps = new Float32Array(count * W * H);
    for (let i = 0; i < count; i++) maps.set(i % 2 === 0 ? spike : blob, i * W * H);
    return { maps, scores: new Float32Array(count).fill(7) };
  };
  const images = Array.from({ length: 4 }, () => new Uint8Array(W * H * 3));
  const specs = [MAX, MAX, SMOOTHED, SMOOTHED];
  const mask = new Uint8Array(W * H);
  mask[30 * W + 30] = 1; // hides the spike
  const r = await scoreImages(
    score,
    images,
    geometry,
    4,
    (i) => (i === 1 ? mask : undefined),
    (i) => specs[i]!,
  );
  assert.equal(r.scores[0], 7); // max without a mask: the graph's score, no pass over the map
  assert.ok(Math.abs(r.scores[1]! - 0.6) < 1e-6); // max with a mask: the map's maximum after it
  assert.ok(Math.abs(r.scores[2]! - partScore(spike, W, H, SMOOTHED)) < 1e-9);
  assert.ok(Math.abs(r.scores[3]! - partScore(blob, W, H, SMOOTHED)) < 1e-9);
});
