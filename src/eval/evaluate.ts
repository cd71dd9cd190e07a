import { performance } from "node:perf_hooks";
import { bundleGeometry, loadBundle } from "../bundle/bundle.js";
import type { Logger } from "../core/log.js";
import { loadMask, loadRgb } from "../data/images.js";
import { listMvtecTest } from "../data/mvtec.js";
import { describeGeometry, marginOf, type Roi } from "../stpm/geometry.js";
import { scoreImages } from "../stpm/image-scoring.js";
import { Scorer } from "../stpm/scorer.js";
import { aupro, auroc, f1Max, pixelAuroc } from "./metrics.js";

export interface EvalReport {
  image_auroc: number;
  pixel_auroc: number;
  aupro: number;
  image_f1_max: number;
  image_f1_threshold: number;
  num_images: number;
  num_good: number;
  num_defective: number;
  /** Confusion counts at the bundle's own threshold. */
  at_threshold: {
    threshold: number;
    true_positive: number;
    false_positive: number;
    true_negative: number;
    false_negative: number;
  };
  model_version: string;
  data: string;
  /** The model input (one tile in tile mode). */
  image_size: { width: number; height: number };
  /** How images were fed (the bundle's geometry, with this run's ROI). */
  geometry: string;
  /**
   * The grid pixel metrics were computed on: the anomaly map at the geometry's capture size (the stitched map in
   * tile mode), ground-truth masks cropped to the ROI and resized nearest-neighbour to it.
   */
  metric_grid: { width: number; height: number };
  seconds: number;
}

/**
 * Scores an MVTec-layout test split with a bundle, under the bundle's geometry (resize or tiles, and its ROI unless
 * `roi` overrides it), and computes the standard metrics.
 */
export async function evaluate(
  modelDir: string,
  dataDir: string,
  logger: Logger,
  opts: { roi?: Roi } = {},
): Promise<EvalReport> {
  const started = performance.now();
  const bundle = await loadBundle(modelDir);
  const { mean, std } = bundle.manifest.input;
  const geometry = { ...bundleGeometry(bundle.manifest) };
  if (opts.roi) geometry.roi = opts.roi;
  const roi = geometry.roi ?? undefined;
  const { width, height } = geometry.capture;
  const samples = await listMvtecTest(dataDir);
  const scorer = await Scorer.create(bundle.teacher, bundle.student, {
    height: geometry.input.height,
    width: geometry.input.width,
    mean,
    std,
    margin: marginOf(geometry),
  });
  const maps: Float32Array[] = [];
  const masks: Uint8Array[] = [];
  const scores: number[] = [];
  const labels: number[] = [];
  const batch = 8;
  for (let start = 0; start < samples.length; start += batch) {
    const chunk = samples.slice(start, start + batch);
    const images = await Promise.all(chunk.map((s) => loadRgb(s.file, width, height, roi)));
    const chunkMasks = await Promise.all(
      chunk.map((s, i) =>
        s.maskFile
          ? loadMask(s.maskFile, images[i]!.originalSize, width, height, roi)
          : Promise.resolve(new Uint8Array(width * height)),
      ),
    );
    const r = await scoreImages(
      (packed, n) => scorer.score(packed, n),
      images.map((im) => im.rgb),
      geometry,
      batch,
    );
    maps.push(...r.maps);
    scores.push(...r.scores);
    masks.push(...chunkMasks);
    labels.push(...chunk.map((s) => s.label));
    logger.debug({ done: start + chunk.length, total: samples.length }, "scored");
  }
  await scorer.release();
  const f1 = f1Max(scores, labels);
  const threshold = bundle.manifest.threshold;
  const counts = { threshold, true_positive: 0, false_positive: 0, true_negative: 0, false_negative: 0 };
  scores.forEach((s, i) => {
    const predicted = s > threshold;
    if (labels[i] === 1) counts[predicted ? "true_positive" : "false_negative"] += 1;
    else counts[predicted ? "false_positive" : "true_negative"] += 1;
  });
  return {
    image_auroc: auroc(scores, labels),
    pixel_auroc: pixelAuroc(maps, masks),
    aupro: aupro(maps, masks, width, height, 0.3),
    image_f1_max: f1.f1,
    image_f1_threshold: f1.threshold,
    num_images: samples.length,
    num_good: labels.filter((l) => l === 0).length,
    num_defective: labels.filter((l) => l === 1).length,
    at_threshold: counts,
    model_version: bundle.manifest.model_version,
    data: dataDir,
    image_size: { width: geometry.input.width, height: geometry.input.height },
    geometry: describeGeometry(geometry),
    metric_grid: { width, height },
    seconds: (performance.now() - started) / 1000,
  };
}
