/**
 * The part's score from its anomaly map: one number per image, compared with the threshold. Three aggregations:
 *
 * - `max`: the map's largest pixel (the STPM paper's image score, and stpmd's before issue 19);
 * - `smoothed_max`: the largest pixel after a Gaussian blur of standard deviation `sigma` map pixels (anomalib
 *   blurs with σ = 4 before taking the maximum). The map's grid is the model input's pixel grid in both modes
 *   (resize: the input itself; tiles: the stitched map, whose pixels are tile pixels), so σ means the same
 *   neighbourhood of the model's view whatever the capture size. A lone hot pixel is spread over ~2πσ² pixels
 *   while a defect-sized blob keeps its height, so a blob outranks a spike;
 * - `top_k_mean`: the mean of the `k` largest pixels, `k` a fraction of the map's area, so that it covers the same
 *   share of the part at 256², 256×640 or a stitched 1920×1080 map (an absolute k would mean a tiny speck on a
 *   large map and a large blob on a small one).
 *
 * Which one a bundle uses is in its manifest (`score`); a bundle without it scores by `max`, as it always did.
 * Any pixel that is not finite makes the score NaN, whatever the aggregation, so a broken model never passes as
 * OK (see anomaly-map.ts).
 */

import { PART_SCORE_AGGREGATIONS } from "../config/index.js";

export { PART_SCORE_AGGREGATIONS };
export type PartScoreAggregation = (typeof PART_SCORE_AGGREGATIONS)[number];

export type PartScore =
  | { aggregation: "max" }
  | { aggregation: "smoothed_max" /** Gaussian σ in map pixels. */; sigma: number }
  | {
      aggregation: "top_k_mean" /** The number of pixels averaged, as a fraction of the map's area. */;
      k: number;
    };

/** σ of `smoothed_max`, in map pixels: anomalib's value. */
export const SMOOTHING_SIGMA = 4;
/**
 * k of `top_k_mean`: 1 % of the map (655 px of a 256² map, about a 26 px square). Measured with
 * benchmarks/part-score.ts (results/part-score.md) at 0.1, 0.5, 1, 2 and 5 %: on fryum every step up helped (image
 * AUROC 0.928 → 0.940 squashed, 0.909 → 0.964 at 384×256), because fryum's defects are large; issue 19's other
 * sets have thin cracks and small defects, which a larger k averages with normal pixels. 1 % is the largest k
 * that is still about the size of a small defect on these maps, and already takes most of the gain over `max`.
 */
export const TOP_K_FRACTION = 0.01;

export const MAX_SCORE: PartScore = { aggregation: "max" };

/**
 * What retrain writes unless told otherwise: the top-1 % mean. Measured with benchmarks/part-score.ts on the
 * default bundles (thresholds from each aggregation's own validation scores, mean + 3·std):
 *
 * | bundle (test good/defective) | max: AUROC, caught, false alarms | smoothed max σ 4 | top-1 % mean |
 * |---|---|---|---|
 * | bottle 256² (20/63)          | 1.000, 63, 0 | 1.000, 63, 0 | 1.000, 63, 1 |
 * | fryum 256² (50/100)          | 0.918, 6, 0  | 0.922, 13, 0 | 0.930, 22, 0 |
 * | fryum 384×256 (50/100)       | 0.895, 22, 0 | 0.897, 26, 0 | 0.937, 34, 0 |
 *
 * The top-1 % mean ranks parts best and catches 3–4× (squashed) or 1.5× (384×256) the defective parts at the
 * bundle's threshold with no more false alarms on fryum; on bottle every aggregation separates perfectly and its
 * threshold lets one of 20 normal parts through (within the 6.9 % the 42 validation normals predict at most).
 * Cost per 256² frame, on the shared 2 cores under load: 0.4 ms against 17 ms for the blur (in JavaScript; the
 * graph's maximum comes free).
 */
export const DEFAULT_PART_SCORE: PartScoreAggregation = "top_k_mean";

/** An aggregation with stpmd's parameters for it. */
export function partScoreOf(aggregation: PartScoreAggregation): PartScore {
  if (aggregation === "smoothed_max") return { aggregation, sigma: SMOOTHING_SIGMA };
  if (aggregation === "top_k_mean") return { aggregation, k: TOP_K_FRACTION };
  return MAX_SCORE;
}

/** One line for logs, summaries and docs: "max", "smoothed_max (σ = 4 px)", "top_k_mean (k = 1 % of the map)". */
export function describePartScore(s: PartScore): string {
  if (s.aggregation === "smoothed_max") return `smoothed_max (σ = ${s.sigma} px)`;
  if (s.aggregation === "top_k_mean")
    return `top_k_mean (k = ${Number((s.k * 100).toPrecision(3))} % of the map)`;
  return "max";
}

/** Why `value` is not a usable part-score spec (a manifest's `score`), in one phrase; undefined when it is. */
export function partScoreProblem(value: unknown): string | undefined {
  if (typeof value !== "object" || value === null) return "is not an object";
  const v = value as Record<string, unknown>;
  if (!PART_SCORE_AGGREGATIONS.includes(v.aggregation as PartScoreAggregation)) {
    return `aggregation must be one of ${PART_SCORE_AGGREGATIONS.join(", ")}`;
  }
  if (v.aggregation === "smoothed_max" && !(typeof v.sigma === "number" && v.sigma > 0 && v.sigma <= 64)) {
    return "sigma must be a number in (0, 64]";
  }
  if (v.aggregation === "top_k_mean" && !(typeof v.k === "number" && v.k > 0 && v.k <= 1)) {
    return "k must be a fraction in (0, 1]";
  }
  return undefined;
}

/** The part score of a width × height map (row-major). The map is not changed. */
export function partScore(map: Float32Array, width: number, height: number, spec: PartScore): number {
  if (map.length !== width * height) throw new Error(`map of ${map.length} pixels is not ${width}×${height}`);
  let max = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < map.length; i++) {
    const v = map[i]!;
    if (!Number.isFinite(v)) return Number.NaN;
    if (v > max) max = v;
  }
  if (map.length === 0) return 0;
  if (spec.aggregation === "smoothed_max") return smoothedMax(map, width, height, spec.sigma);
  if (spec.aggregation === "top_k_mean") return topKMean(map, Math.max(1, Math.round(spec.k * map.length)));
  return max;
}

/** Normalised 1-D Gaussian taps for offsets −r…r, r = ⌊4σ + ½⌋ (anomalib's kernel size 2r + 1). */
export function gaussianKernel(sigma: number): Float32Array {
  const r = Math.floor(4 * sigma + 0.5);
  const taps = new Float32Array(2 * r + 1);
  let sum = 0;
  for (let d = -r; d <= r; d++) {
    const w = Math.exp(-(d * d) / (2 * sigma * sigma));
    taps[d + r] = w;
    sum += w;
  }
  for (let i = 0; i < taps.length; i++) taps[i]! /= sum;
  return taps;
}

/**
 * Mirror index without repeating the edge pixel (…, 2, 1 | 0, 1, 2, … | n−2, …), as anomalib's blur pads: the
 * border is extended by the map's own values, so an edge defect keeps its height instead of being averaged with 0.
 */
function reflect(i: number, n: number): number {
  if (n === 1) return 0;
  const period = 2 * (n - 1);
  const m = ((i % period) + period) % period;
  return m < n ? m : period - m;
}

/**
 * Maximum of the map after a separable Gaussian blur (rows, then columns; reflected borders). Both passes run
 * along rows in memory order and the row pass looks the reflection up only near the edges: on a 256² map the
 * straightforward form (an index table for every tap) took 14 ms, this one ~4 ms (benchmarks/part-score.ts).
 */
function smoothedMax(map: Float32Array, width: number, height: number, sigma: number): number {
  const taps = gaussianKernel(sigma);
  const size = taps.length;
  const r = (size - 1) / 2;
  const rows = new Float32Array(map.length);
  for (let y = 0; y < height; y++) {
    const o = y * width;
    for (let x = 0; x < width; x++) {
      let acc = 0;
      if (x >= r && x + r < width) {
        const from = o + x - r;
        for (let t = 0; t < size; t++) acc += taps[t]! * map[from + t]!;
      } else {
        for (let t = 0; t < size; t++) acc += taps[t]! * map[o + reflect(x - r + t, width)]!;
      }
      rows[o + x] = acc;
    }
  }
  const column = new Float32Array(width);
  let max = Number.NEGATIVE_INFINITY;
  for (let y = 0; y < height; y++) {
    column.fill(0);
    for (let t = 0; t < size; t++) {
      const w = taps[t]!;
      const o = reflect(y - r + t, height) * width;
      for (let x = 0; x < width; x++) column[x]! += w * rows[o + x]!;
    }
    for (let x = 0; x < width; x++) if (column[x]! > max) max = column[x]!;
  }
  return max;
}

/** Mean of the k largest values, by selection (Hoare's quickselect on a copy), O(n) on average. */
function topKMean(map: Float32Array, k: number): number {
  const a = Float32Array.from(map);
  const n = a.length;
  // after the loop, a[n−k…n−1] hold the k largest values
  const target = n - k;
  let lo = 0;
  let hi = n - 1;
  while (lo < hi) {
    const pivot = a[(lo + hi) >> 1]!;
    let i = lo;
    let j = hi;
    while (i <= j) {
      while (a[i]! < pivot) i++;
      while (a[j]! > pivot) j--;
      if (i <= j) {
        const t = a[i]!;
        a[i] = a[j]!;
        a[j] = t;
        i++;
        j--;
      }
    }
    if (target <= j) hi = j;
    else if (target >= i) lo = i;
    else break;
  }
  let sum = 0;
  for (let i = target; i < n; i++) sum += a[i]!;
  return sum / k;
}
