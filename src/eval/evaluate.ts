import { performance } from "node:perf_hooks";
import { type Bundle, bundleGeometry, bundlePartScore, loadBundle, type Manifest } from "../bundle/bundle.js";
import type { Logger } from "../core/log.js";
import { loadMask, loadRgb } from "../data/images.js";
import { listMvtecTest, type TestSample } from "../data/mvtec.js";
import { describeGeometry, type Geometry, marginOf, type Roi } from "../stpm/geometry.js";
import { scoreImages } from "../stpm/image-scoring.js";
import { Scorer } from "../stpm/scorer.js";
import { aupro, auroc, f1Max, pixelAuroc } from "./metrics.js";
import {
  BOOTSTRAP_DEFAULTS,
  type BootstrapOptions,
  type DefectTypeRow,
  defectTypeRows,
  FALSE_ALARM_TARGETS,
  type FalseAlarmPoint,
  falseAlarmPoint,
  type ThresholdPoint,
  thresholdPoint,
} from "./operating-points.js";
import { REPORT_DEFAULTS, writeReport } from "./report.js";
import { abandonReportDir, openReportDir } from "./report-dir.js";

/** One test image and its score. */
export interface ScoredImage {
  file: string;
  /** "good" or the defect type (its test/ folder). */
  kind: string;
  label: 0 | 1;
  score: number;
}

export interface EvalOptions {
  roi?: Roi;
  /** Judge parts at this threshold instead of the bundle's own. */
  threshold?: number;
  /** Write the HTML report to this folder, with at most `images` parts in each gallery. */
  report?: { dir: string; images?: number };
  bootstrap?: BootstrapOptions;
}

export interface EvalReport {
  image_auroc: number;
  pixel_auroc: number;
  aupro: number;
  image_f1_max: number;
  image_f1_threshold: number;
  num_images: number;
  num_good: number;
  num_defective: number;
  /** Confusion counts at the judged threshold: the bundle's own (the daemon's default) or `--threshold`. */
  at_threshold: {
    threshold: number;
    true_positive: number;
    false_positive: number;
    true_negative: number;
    false_negative: number;
  };
  /**
   * Parts caught and false alarms with 95 % bootstrap intervals: at the judged threshold, and at thresholds set for
   * each of {@link FALSE_ALARM_TARGETS} of the test's good parts.
   */
  operating_points: { at_threshold: ThresholdPoint; false_alarm_targets: FalseAlarmPoint[] };
  /** The smallest false-alarm rate the good test parts can show: 1 / num_good. */
  smallest_false_alarm_rate: number;
  bootstrap: BootstrapOptions;
  /** The good parts at the judged threshold, beside `by_defect_type`. */
  good_parts: { count: number; false_alarms: number; mean_score: number };
  by_defect_type: DefectTypeRow[];
  /** Every test image with its score, in listing order (the test/ folders by name, files by name within each). */
  images: ScoredImage[];
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
  /** The report folder written, when asked for. */
  report?: string;
  seconds: number;
}

/**
 * Scores an MVTec-layout test split with a bundle, under the bundle's geometry (resize or tiles, and its ROI unless
 * `roi` overrides it), and computes the standard metrics and the verdicts at the judged threshold; with
 * `report`, writes the HTML report too (its folder checked before the scoring starts).
 */
export async function evaluate(
  modelDir: string,
  dataDir: string,
  logger: Logger,
  opts: EvalOptions = {},
): Promise<EvalReport> {
  const started = performance.now();
  const bundle = await loadBundle(modelDir);
  const samples = await listMvtecTest(dataDir, `--data ${dataDir}`);
  const staging = opts.report ? await openReportDir(opts.report.dir) : undefined;
  try {
    const scored = await scoreTestSet(bundle, samples, logger, opts.roi);
    const r = summarise(bundle.manifest, samples, scored, dataDir, opts);
    // scoring and metrics: writing the report (a few images) is not part of the evaluation's time
    r.seconds = (performance.now() - started) / 1000;
    if (staging) {
      r.report = staging.dir;
      await writeReport(staging, r, scored, opts.report?.images ?? REPORT_DEFAULTS.images);
    }
    return r;
  } catch (err) {
    if (staging) await abandonReportDir(staging);
    throw err;
  }
}

/**
 * The scores of `samples` under the bundle at `modelDir` and its geometry, in order; for a set without the
 * metrics' requirements (no masks, one class only), such as a camera's labelled set compared by two bundles.
 */
export async function scoreSamples(
  modelDir: string,
  samples: TestSample[],
  logger: Logger,
): Promise<{ manifest: Manifest; scores: number[] }> {
  const bundle = await loadBundle(modelDir);
  const { scores } = await scoreTestSet(bundle, samples, logger, undefined);
  return { manifest: bundle.manifest, scores };
}

/** The scored test set: a map and score per sample, in listing order. */
interface ScoredSet {
  maps: Float32Array[];
  masks: Uint8Array[];
  maskFiles: (string | undefined)[];
  scores: number[];
  width: number;
  height: number;
  roi: Roi | undefined;
  geometry: Geometry;
}

async function scoreTestSet(
  bundle: Bundle,
  samples: TestSample[],
  logger: Logger,
  roiOverride: Roi | undefined,
): Promise<ScoredSet> {
  const { mean, std } = bundle.manifest.input;
  const geometry = { ...bundleGeometry(bundle.manifest) };
  if (roiOverride) geometry.roi = roiOverride;
  const roi = geometry.roi ?? undefined;
  const { width, height } = geometry.capture;
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
  const batch = 8;
  try {
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
        undefined,
        () => bundlePartScore(bundle.manifest),
      );
      maps.push(...r.maps);
      scores.push(...r.scores);
      masks.push(...chunkMasks);
      logger.debug({ done: start + chunk.length, total: samples.length }, "scored");
    }
  } finally {
    await scorer.release();
  }
  return { maps, masks, maskFiles: samples.map((s) => s.maskFile), scores, width, height, roi, geometry };
}

function summarise(
  manifest: Manifest,
  samples: TestSample[],
  set: ScoredSet,
  dataDir: string,
  opts: EvalOptions,
): EvalReport {
  const { maps, masks, scores, width, height, geometry } = set;
  const labels = samples.map((s) => s.label);
  const images: ScoredImage[] = samples.map((s, i) => ({
    file: s.file,
    kind: s.kind,
    label: s.label,
    score: scores[i]!,
  }));
  const f1 = f1Max(scores, labels);
  const threshold = opts.threshold ?? manifest.threshold;
  const counts = { threshold, true_positive: 0, false_positive: 0, true_negative: 0, false_negative: 0 };
  scores.forEach((s, i) => {
    const predicted = s > threshold;
    if (labels[i] === 1) counts[predicted ? "true_positive" : "false_negative"] += 1;
    else counts[predicted ? "false_positive" : "true_negative"] += 1;
  });
  const bootstrap = opts.bootstrap ?? BOOTSTRAP_DEFAULTS;
  const rule = opts.threshold === undefined ? "the bundle's threshold (the daemon's default)" : "--threshold";
  const goodScores = images.filter((im) => im.label === 0).map((im) => im.score);
  return {
    image_auroc: auroc(scores, labels),
    pixel_auroc: pixelAuroc(maps, masks),
    aupro: aupro(maps, masks, width, height, 0.3),
    image_f1_max: f1.f1,
    image_f1_threshold: f1.threshold,
    num_images: samples.length,
    num_good: goodScores.length,
    num_defective: labels.filter((l) => l === 1).length,
    at_threshold: counts,
    operating_points: {
      at_threshold: thresholdPoint(images, threshold, rule, manifest.validation_scores, bootstrap),
      false_alarm_targets: FALSE_ALARM_TARGETS.map((target) => falseAlarmPoint(images, target, bootstrap)),
    },
    smallest_false_alarm_rate: 1 / goodScores.length,
    bootstrap,
    good_parts: {
      count: goodScores.length,
      false_alarms: counts.false_positive,
      mean_score: goodScores.reduce((sum, s) => sum + s, 0) / goodScores.length,
    },
    by_defect_type: defectTypeRows(images, threshold),
    images,
    model_version: manifest.model_version,
    data: dataDir,
    image_size: { width: geometry.input.width, height: geometry.input.height },
    geometry: describeGeometry(geometry),
    metric_grid: { width, height },
    seconds: 0,
  };
}
