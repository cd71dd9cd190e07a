import { isDeepStrictEqual } from "node:util";
import {
  bundleGeometry,
  bundlePartScore,
  type Manifest,
  type ScoringBasis,
  scoringBasis,
} from "../bundle/bundle.js";
import type { Camera } from "../capture/camera.js";
import { type CameraConfig, cameraChanges, type StpmdConfig, type ThresholdRule } from "../config/index.js";
import type { Logger } from "../core/log.js";
import { RateMeter } from "../core/rate-meter.js";
import type { InspectionResult, LastResult } from "../core/result.js";
import type { StationView } from "../pipeline/inspector.js";
import { defectEventId } from "../publish/topics.js";
import type { Geometry } from "../stpm/geometry.js";
import { rasterisePolygons, resampleMask } from "../stpm/ignore.js";
import { describePartScore, type PartScore, partScoreOf } from "../stpm/part-score.js";
import { predictedFalseAlarmRate, resolveThreshold } from "../stpm/threshold.js";

/** Part ids a camera holds for triggers whose frame has not arrived yet; more are refused. */
export const MAX_PENDING_TRIGGERS = 64;

/** The bundle directory a camera's station uses. */
export function stationBundle(camera: CameraConfig, config: StpmdConfig): string {
  return camera.model ?? config.model.bundle;
}

/**
 * Whether two configs of one camera differ in a key whose reload rule (declared in the schema) is to restart the
 * camera: what only a new capture pipeline can apply.
 */
export function needsCameraRestart(before: CameraConfig, after: CameraConfig): boolean {
  return cameraChanges(before, after).some((change) => change.rule === "camera");
}

/**
 * Where a camera's ROI does not match what its bundle was trained on: a different aspect (the model sees a
 * stretched image) or, for a tiled bundle, a different size (its tiles then see another scale).
 */
export function roiWarnings(camera: CameraConfig, geometry: Geometry): string[] {
  const view = camera.roi;
  if (!view) return [];
  const trained = geometry.roi ?? geometry.source;
  const warnings: string[] = [];
  const aspect = (s: { width: number; height: number }): number => s.width / s.height;
  const describe = (s: { width: number; height: number }): string => `${s.width}×${s.height}`;
  if (Math.abs(aspect(view) / aspect(trained) - 1) > 0.01) {
    warnings.push(
      `camera ${camera.id}: its ROI ${describe(view)} has another aspect than the ${describe(trained)} its bundle was trained on; the model sees a stretched image`,
    );
  } else if (geometry.mode === "tile" && (view.width !== trained.width || view.height !== trained.height)) {
    warnings.push(
      `camera ${camera.id}: its ROI ${describe(view)} differs in size from the ${describe(trained)} its tiled bundle was trained on; tiles see another scale`,
    );
  }
  return warnings;
}

/** A loaded mask image, kept at its own size and resampled to each model's grid. */
export interface MaskImage {
  width: number;
  height: number;
  mask: Uint8Array;
}

/**
 * One camera's station at run time: its config, capture, the threshold rule and enable state in force (from the
 * file, or set through an interface since), its ignore mask per model grid, counters and the last result.
 *
 * A value set through an interface holds until the file's own value for that key changes (a SIGHUP with the same
 * file keeps what the operator set; editing the key in the file wins).
 */
export class Station {
  camera: Camera | undefined;
  enabled: boolean;
  thresholdRule: ThresholdRule | undefined;
  maskImage: MaskImage | undefined;
  readonly rate = new RateMeter();
  inspected = 0;
  defects = 0;
  /** Frames that got the verdict `error` (a score that is not a finite number). */
  errors = 0;
  nextSeq = 0;
  /** Restarts and bad frames its last capture counted, for the status of a stopped camera. */
  lastCounts = { restarts: 0, badFrames: 0 };
  /** Captures built for this camera (a config change that needs a new pipeline builds another). */
  captureStarts = 0;
  last: LastResult | undefined;
  /** Triggers waiting for a frame, oldest first. */
  readonly pendingParts: { partId: string; expiresAt: number }[] = [];
  /** The recipe this station's settings come from now (undefined: the camera's own settings). */
  recipe: string | undefined;
  /** What judging this camera's frames needs, per model version: derived from the config and the manifest once. */
  private views = new Map<string, StationView>();
  /**
   * The views of the recipe before the last switch, for its frames still queued when it happened: a frame is
   * judged under the recipe it was captured in, so the switch falls between two frames.
   */
  private retired: { recipe: string | undefined; views: Map<string, StationView> } | undefined;

  constructor(
    public config: CameraConfig,
    public bundle: string,
    /** Bound to this camera (`camera` key): lines add no camera key of their own (a duplicate JSON key). */
    private readonly logger: Logger,
    recipe?: string,
  ) {
    this.enabled = config.enabled;
    this.thresholdRule = config.threshold;
    this.recipe = recipe;
  }

  get id(): string {
    return this.config.id;
  }

  /** The part id the next frame carries: the oldest trigger that has not expired (expired ones are dropped). */
  takePartId(now: number): string | undefined {
    for (let next = this.pendingParts.shift(); next; next = this.pendingParts.shift()) {
      if (next.expiresAt >= now) return next.partId;
      this.logger.warn(
        { part_id: next.partId },
        `trigger for part "${next.partId}" expired before a frame arrived; dropped`,
      );
    }
    return undefined;
  }

  /** Applies a re-read config of this camera: keys the file changed win over values set at run time. */
  applyConfig(next: CameraConfig, maskImage: MaskImage | undefined): void {
    const before = this.config;
    if (!isDeepStrictEqual(before.threshold, next.threshold)) this.thresholdRule = next.threshold;
    if (before.enabled !== next.enabled) this.enabled = next.enabled;
    this.config = next;
    this.maskImage = maskImage;
    this.views = new Map();
  }

  /**
   * Switches to `recipe`'s settings of this camera (`next`, the camera's config under it). As with a re-read file,
   * a threshold rule or enable that the switch changes wins over one set at run time; one it leaves alone stays.
   * The views of the recipe left are kept, computed for `current` (the model its frames are judged by) if they were
   * not yet, so that its frames still queued are judged as they were captured.
   */
  switchRecipe(
    recipe: string | undefined,
    next: CameraConfig,
    maskImage: MaskImage | undefined,
    current: Manifest | undefined,
  ): void {
    if (current) this.view(current);
    this.retired = { recipe: this.recipe, views: this.views };
    this.recipe = recipe;
    this.enabled = this.enabledUnder(next);
    if (!isDeepStrictEqual(this.config.threshold, next.threshold)) this.thresholdRule = next.threshold;
    this.config = next;
    this.maskImage = maskImage;
    this.views = new Map();
  }

  /** Whether the camera runs under `next`: its enable when that differs from the current config's, else as now. */
  enabledUnder(next: CameraConfig): boolean {
    return this.config.enabled !== next.enabled ? next.enabled : this.enabled;
  }

  setThresholdRule(rule: ThresholdRule | undefined): void {
    this.thresholdRule = rule;
    this.views = new Map();
  }

  /** The threshold in force for `manifest`. */
  threshold(manifest: Manifest): number {
    return this.view(manifest).threshold;
  }

  /**
   * How this camera's frames are judged under `manifest`, computed once per model version: the threshold from the
   * rule (a caveat is logged once), the ignore mask on the model's grid, and the map → source-frame transform.
   * Polygons are in ROI pixels (source pixels without an ROI, taken to be the size the bundle was trained on), so
   * they are scaled by view size / capture size.
   */
  view(manifest: Manifest, recipe: string | undefined = this.recipe): StationView {
    const retired = this.retired;
    if (recipe !== this.recipe && retired !== undefined && retired.recipe === recipe) {
      const before = retired.views.get(manifest.model_version);
      if (before) return before;
    }
    const cached = this.views.get(manifest.model_version);
    if (cached) return cached;
    const { score, threshold: value, validationScores } = this.scoring(manifest);
    const g = bundleGeometry(manifest);
    const { width, height } = g.capture;
    // the ROI, or without one the whole frame, taken to be the size the bundle was trained on
    const area = this.config.roi ?? { x: 0, y: 0, ...g.source };
    const polygons = this.config.ignore?.polygons ?? [];
    let ignore: Uint8Array | undefined;
    if (polygons.length > 0) {
      ignore = rasterisePolygons(polygons, width, height, area.width / width, area.height / height);
    }
    if (this.maskImage) {
      const m = this.maskImage;
      const image = resampleMask(m.mask, m.width, m.height, width, height);
      if (ignore) for (let i = 0; i < ignore.length; i++) ignore[i] = ignore[i]! | image[i]!;
      else ignore = image;
    }
    const source = { x: area.x, y: area.y, scaleX: area.width / width, scaleY: area.height / height };
    const view: StationView = {
      threshold: value,
      score,
      falseAlarms: predictedFalseAlarmRate(value, validationScores),
      source,
      ...(ignore ? { ignore } : {}),
    };
    this.views.set(manifest.model_version, view);
    return view;
  }

  /**
   * The part score and threshold this camera judges by under `manifest`: the camera's `score_aggregation` (or the
   * bundle's own), with the threshold rule applied to the bundle's validation scores in that score. An old bundle
   * has no scores in another aggregation, and a threshold made in one score does not fit another: then only a
   * `{value}` rule can go with it, and otherwise the camera keeps the bundle's aggregation (one error line).
   * Caveats (a false-alarm rate the validation set cannot show) are logged once per model version.
   */
  private scoring(manifest: Manifest): {
    score: PartScore;
    threshold: number;
    validationScores: readonly number[];
  } {
    const asked = this.config.score_aggregation;
    const rule = this.thresholdRule;
    let basis: ScoringBasis | undefined = scoringBasis(manifest, asked);
    if (basis === undefined && asked !== undefined && rule !== undefined && "value" in rule) {
      // a fixed threshold fits any score: the operator chose it for this one; no validation scores to predict with
      return { score: partScoreOf(asked), threshold: rule.value, validationScores: [] };
    }
    if (basis === undefined) {
      const own = describePartScore(bundlePartScore(manifest));
      this.logger.error(
        { score_aggregation: asked, model_version: manifest.model_version },
        `camera ${this.id}: score_aggregation ${asked} refused for model ${manifest.model_version}: the bundle stores no validation scores in it, so no threshold fits (retrain the bundle, or give threshold: {value}); scoring by the bundle's ${own}`,
      );
      basis = scoringBasis(manifest)!;
    }
    const { value, warning } = resolveThreshold(rule, basis);
    if (warning) this.logger.warn({ rule }, `camera ${this.id}: ${warning}`);
    return { score: basis.score, threshold: value, validationScores: basis.validation_scores };
  }

  record(r: InspectionResult, now: number): void {
    this.inspected += 1;
    if (r.verdict === "defect") this.defects += 1;
    if (r.verdict === "error") this.errors += 1;
    this.rate.add(1, now);
    this.last = {
      seq: r.frame.seq,
      captureTs: r.frame.captureTs,
      score: r.score,
      threshold: r.threshold,
      verdict: r.verdict,
      regions: r.regions.length,
      ...(r.verdict === "defect" ? { eventId: defectEventId(r) } : {}),
      ...(r.frame.partId !== undefined ? { partId: r.frame.partId } : {}),
      ...(r.frame.recipe !== undefined ? { recipe: r.frame.recipe } : {}),
    };
  }
}
