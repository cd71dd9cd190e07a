import { isDeepStrictEqual } from "node:util";
import { bundleGeometry, type Manifest } from "../bundle/bundle.js";
import type { Camera } from "../capture/camera.js";
import type { CameraConfig, StpmdConfig, ThresholdRule } from "../config/index.js";
import type { Logger } from "../core/log.js";
import { RateMeter } from "../core/rate-meter.js";
import type { InspectionResult } from "../core/result.js";
import type { LastResult, Requester } from "../line/index.js";
import type { StationView } from "../pipeline/inspector.js";
import { defectEventId } from "../publish/topics.js";
import { rasterisePolygons, resampleMask } from "../stpm/ignore.js";
import { resolveThreshold } from "../stpm/threshold.js";

/** Part ids a camera holds for triggers whose frame has not arrived yet; more are refused. */
export const MAX_PENDING_TRIGGERS = 64;

/** The config keys of a camera whose change needs its capture rebuilt; the others apply to a running camera. */
const RESTART_KEYS = ["source", "roi", "trigger", "stall_timeout_s", "restart_backoff"] as const;

/** The bundle directory a camera's station uses. */
export function stationBundle(camera: CameraConfig, config: StpmdConfig): string {
  return camera.model ?? config.model.bundle;
}

/** Whether two configs of one camera differ in what only a new capture pipeline can apply. */
export function needsCameraRestart(before: CameraConfig, after: CameraConfig): boolean {
  return RESTART_KEYS.some((key) => !isDeepStrictEqual(before[key], after[key]));
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
  nextSeq = 0;
  /** Restarts and bad frames its last capture counted, for the status of a stopped camera. */
  lastCounts = { restarts: 0, badFrames: 0 };
  /** Captures built for this camera (a config change that needs a new pipeline builds another). */
  captureStarts = 0;
  last: LastResult | undefined;
  /** Triggers waiting for a frame, oldest first. */
  readonly pendingParts: { partId: string; expiresAt: number }[] = [];
  private masks = new Map<string, Uint8Array | undefined>();
  private thresholds = new Map<string, number>();

  constructor(
    public config: CameraConfig,
    public bundle: string,
    private readonly logger: Logger,
  ) {
    this.enabled = config.enabled;
    this.thresholdRule = config.threshold;
  }

  get id(): string {
    return this.config.id;
  }

  /** The part id the next frame carries: the oldest trigger that has not expired (expired ones are dropped). */
  takePartId(now: number): string | undefined {
    for (let next = this.pendingParts.shift(); next; next = this.pendingParts.shift()) {
      if (next.expiresAt >= now) return next.partId;
      this.logger.warn(
        { camera: this.id, part_id: next.partId },
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
    this.masks = new Map();
    this.thresholds = new Map();
  }

  setThresholdRule(rule: ThresholdRule | undefined): void {
    this.thresholdRule = rule;
    this.thresholds = new Map();
  }

  /** The threshold in force for `manifest` (cached per model version; a caveat is logged once). */
  threshold(manifest: Manifest): number {
    const cached = this.thresholds.get(manifest.model_version);
    if (cached !== undefined) return cached;
    const { value, warning } = resolveThreshold(this.thresholdRule, manifest);
    if (warning) this.logger.warn({ camera: this.id, rule: this.thresholdRule }, warning);
    this.thresholds.set(manifest.model_version, value);
    return value;
  }

  /**
   * The ignore mask on `manifest`'s grid. Polygons are in ROI pixels (source pixels without an ROI, taken to be
   * the size the bundle was trained on), so they are scaled by view size / capture size.
   */
  ignoreMask(manifest: Manifest): Uint8Array | undefined {
    const key = manifest.model_version;
    if (this.masks.has(key)) return this.masks.get(key);
    const g = bundleGeometry(manifest);
    const { width, height } = g.capture;
    const view = this.config.roi ?? g.source;
    const polygons = this.config.ignore?.polygons ?? [];
    let mask: Uint8Array | undefined;
    if (polygons.length > 0) {
      mask = rasterisePolygons(polygons, width, height, view.width / width, view.height / height);
    }
    if (this.maskImage) {
      const m = this.maskImage;
      const image = resampleMask(m.mask, m.width, m.height, width, height);
      if (mask) for (let i = 0; i < mask.length; i++) mask[i] = mask[i]! | image[i]!;
      else mask = image;
    }
    this.masks.set(key, mask);
    return mask;
  }

  view(manifest: Manifest): StationView {
    const ignore = this.ignoreMask(manifest);
    const g = bundleGeometry(manifest);
    // the ROI, or without one the whole frame, taken to be the size the bundle was trained on
    const view = this.config.roi ?? { x: 0, y: 0, ...g.source };
    const source = {
      x: view.x,
      y: view.y,
      scaleX: view.width / g.capture.width,
      scaleY: view.height / g.capture.height,
    };
    return { threshold: this.threshold(manifest), source, ...(ignore ? { ignore } : {}) };
  }

  record(r: InspectionResult, now: number): void {
    this.inspected += 1;
    if (r.defective) this.defects += 1;
    this.rate.add(1, now);
    this.last = {
      seq: r.frame.seq,
      captureTs: r.frame.captureTs,
      score: r.score,
      threshold: r.threshold,
      defective: r.defective,
      regions: r.regions.length,
      ...(r.defective ? { eventId: defectEventId(r) } : {}),
      ...(r.frame.partId !== undefined ? { partId: r.frame.partId } : {}),
    };
  }
}

/** A one-line description of who asked, for logs. */
export function requesterLabel(by: Requester): string {
  return by.user ? `${by.via} (${by.user})` : by.via;
}
