import {
  contextInput,
  cutTile,
  cutTiles,
  fedSize,
  type Geometry,
  marginOf,
  planTiles,
  stitchTiles,
} from "./geometry.js";
import { applyIgnoreMask } from "./ignore.js";
import { MAX_SCORE, type PartScore, partScore } from "./part-score.js";
import type { ScoredBatch } from "./scorer.js";

/**
 * Scores `count` model inputs packed back to back (count × H × W × 3 bytes): a Scorer's `score`, or the daemon's
 * inference thread's; each score is its map's maximum. The buffer may be handed over (transferred), so callers never
 * reuse it.
 */
export type ScoreFn = (packed: Uint8Array, count: number) => Promise<ScoredBatch>;

export interface ScoredImages {
  /** One anomaly map per image, at the geometry's capture size (a stitched map in tile mode). */
  maps: Float32Array[];
  /** Image scores: each map's part score ({@link partScore}) after the ignore mask. */
  scores: number[];
}

/**
 * Scores whole images (packed RGB at `geometry.capture` size) under a bundle's geometry, with at most `batch`
 * model inputs per call of `score`: in resize mode `batch` images; in tile mode `batch` tiles, cut from as many
 * images as it takes and stitched back once each image's tiles are in. Training validation, eval and the daemon
 * all score through here, so they agree on tiling, stitching and masking.
 *
 * `ignore(i)` is image i's ignore mask at capture size (1 = ignored), applied before its score; `aggregation(i)`
 * how image i's map becomes its score (the bundle's, or its camera's). With `max` and no mask the graph's own
 * ReduceMax is the score: no second pass over the map here.
 */
export async function scoreImages(
  score: ScoreFn,
  images: readonly Uint8Array[],
  geometry: Geometry,
  batch: number,
  ignore: (index: number) => Uint8Array | undefined = () => undefined,
  aggregation: (index: number) => PartScore = () => MAX_SCORE,
): Promise<ScoredImages> {
  const { width, height } = geometry.input;
  // the network is fed each input with its context margin; its map comes back cropped to the input
  const margin = marginOf(geometry);
  const fed = fedSize(geometry);
  const inputBytes = fed.width * fed.height * 3;
  const inputArea = width * height;
  const maps: Float32Array[] = [];
  const scores: number[] = [];
  if (geometry.mode === "resize") {
    for (let start = 0; start < images.length; start += batch) {
      const chunk = images.slice(start, start + batch);
      const packed = new Uint8Array(chunk.length * inputBytes);
      chunk.forEach((img, i) => {
        contextInput(img, geometry.input, { x: 0, y: 0, width, height }, margin, packed, i * inputBytes);
      });
      const r = await score(packed, chunk.length);
      for (let i = 0; i < chunk.length; i++) {
        const map = r.maps.subarray(i * inputArea, (i + 1) * inputArea);
        scores.push(
          imageScore(map, geometry.capture, ignore(start + i), aggregation(start + i), r.scores[i]!),
        );
        maps.push(map);
      }
    }
    return { maps, scores };
  }
  const tile = geometry.tile!;
  const plan = planTiles(geometry.capture, tile.size, tile.overlap);
  const total = images.length * plan.count;
  // Every batch of tiles is cut and handed to `score` at once, so the model (a queue in the inference thread)
  // never waits for this thread to cut the next batch or stitch the last; measured with benchmarks/tiling.ts at
  // native 1920×1080 (45 tiles a frame), awaiting each batch before cutting the next reached 0.85× the plain
  // batch-8 throughput. Maps are stitched in order as their batches come back.
  const pending: Promise<ScoredBatch>[] = [];
  for (let start = 0; start < total; start += batch) {
    const n = Math.min(batch, total - start);
    const packed = new Uint8Array(n * inputBytes);
    for (let k = 0; k < n; k++) {
      const t = start + k;
      cutTile(images[Math.floor(t / plan.count)]!, plan, t % plan.count, packed, k, margin);
    }
    pending.push(score(packed, n));
  }
  const tileMaps = new Float32Array(total * inputArea);
  let stitched = 0;
  for (const [c, batchResult] of pending.entries()) {
    const start = c * batch;
    const r = await batchResult;
    tileMaps.set(r.maps, start * inputArea);
    const done = Math.floor((start + r.scores.length) / plan.count);
    for (; stitched < done; stitched++) {
      const map = new Float32Array(geometry.capture.width * geometry.capture.height);
      const max = stitchTiles(tileMaps, plan, map, stitched * plan.count);
      scores.push(imageScore(map, geometry.capture, ignore(stitched), aggregation(stitched), max));
      maps.push(map);
    }
  }
  return { maps, scores };
}

/** One map's score: the ignore mask applied (in place), then the aggregation; `max` is the map's known maximum. */
function imageScore(
  map: Float32Array,
  size: { width: number; height: number },
  mask: Uint8Array | undefined,
  spec: PartScore,
  max: number,
): number {
  const masked = mask ? applyIgnoreMask(map, mask) : max;
  return spec.aggregation === "max" ? masked : partScore(map, size.width, size.height, spec);
}

/**
 * What the model is fed for whole images at capture size: the images themselves (resize mode), or every tile of
 * every image, image after image (tile mode), each with the geometry's context margin ({@link contextInput}).
 * Training and int8 calibration learn from exactly these.
 */
export function modelInputs(images: readonly Uint8Array[], geometry: Geometry): Uint8Array[] {
  const margin = marginOf(geometry);
  const fed = fedSize(geometry);
  const bytes = fed.width * fed.height * 3;
  if (geometry.mode === "resize") {
    if (margin === 0) return [...images];
    const area = { x: 0, y: 0, ...geometry.input };
    return images.map((img) => {
      const out = new Uint8Array(bytes);
      contextInput(img, geometry.input, area, margin, out);
      return out;
    });
  }
  const plan = planTiles(geometry.capture, geometry.tile!.size, geometry.tile!.overlap);
  const all = new Uint8Array(images.length * plan.count * bytes);
  images.forEach((img, i) => {
    cutTiles(img, plan, all, i * plan.count, margin);
  });
  return Array.from({ length: images.length * plan.count }, (_, k) =>
    all.subarray(k * bytes, (k + 1) * bytes),
  );
}
