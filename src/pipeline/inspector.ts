import { bundleGeometry, bundlePartScore, type Manifest } from "../bundle/bundle.js";
import type { Frame } from "../core/frame.js";
import type { Logger } from "../core/log.js";
import { RepeatLimiter } from "../core/repeat-limiter.js";
import type { InspectionResult, SourceTransform, Verdict } from "../core/result.js";
import { resizeRgb } from "../data/images.js";
import type { SessionOptions } from "../onnx/ort.js";
import type { Geometry } from "../stpm/geometry.js";
import { scoreImages } from "../stpm/image-scoring.js";
import type { PartScore } from "../stpm/part-score.js";
import { findRegions } from "../stpm/regions.js";
import type { PredictedFalseAlarms } from "../stpm/threshold.js";
import { ScorerThread } from "./scorer-thread.js";

interface LoadedModel {
  manifest: Manifest;
  geometry: Geometry;
  scorer: ScorerThread;
}

/** How one camera's frames are judged: its threshold for the model in service, and its ignore mask. */
export interface StationView {
  threshold: number;
  /** How the camera's maps become part scores; default the bundle's own aggregation. */
  score?: PartScore;
  /** The threshold's false-alarm rate as the bundle's validation normals predict it (status, console). */
  falseAlarms?: PredictedFalseAlarms;
  /** 1 = ignored, at the model's capture size; undefined: nothing ignored. */
  ignore?: Uint8Array;
  /** Map pixels → source-frame pixels, carried into the result. */
  source?: SourceTransform;
}

/**
 * The station settings of a camera for a given model (thresholds may derive from the model's validation scores),
 * under the recipe the frame was captured in (undefined: the camera's own settings).
 */
export type StationLookup = (cameraId: string, manifest: Manifest, recipe: string | undefined) => StationView;

/**
 * The one place a frame's verdict is decided: `defect` above the threshold, `ok` at or below it, and `error` for a
 * score that is not a finite number (NaN compares false with every threshold, so it would otherwise pass as OK).
 */
export function judge(score: number, threshold: number): Verdict {
  if (!Number.isFinite(score)) return "error";
  return score > threshold ? "defect" : "ok";
}

/**
 * Owns one bundle's model and turns batches of frames into inspection results. Each model runs in its own
 * inference thread (see ScorerThread). Loading a new bundle builds the new thread and session completely before
 * swapping it in, so a bundle that fails to load leaves the running model serving.
 */
export class Inspector {
  private model: LoadedModel | undefined;
  private loading: Promise<Manifest> | undefined;
  /** Resizing in software is a state, not an event: each camera's (frame size, model size) is told once. */
  private readonly resizeNotices = new RepeatLimiter(Number.POSITIVE_INFINITY);
  /** Non-finite scores repeat at the frame rate: one line per camera and model a minute. */
  private readonly nonFiniteRepeats = new RepeatLimiter(60_000);

  private readonly logger: Logger;

  /**
   * @param maxBatch most model inputs per inference call: frames in resize mode, tiles in tile mode.
   */
  constructor(
    readonly bundleDir: string,
    private readonly sessionOptions: SessionOptions & { nice?: number },
    logger: Logger,
    private readonly maxBatch = 8,
  ) {
    // every line names the bundle, once (the daemon's logger for a station's slot already does)
    this.logger = logger.bindings().bundle === bundleDir ? logger : logger.child({ bundle: bundleDir });
  }

  get manifest(): Manifest | undefined {
    return this.model?.manifest;
  }

  get geometry(): Geometry | undefined {
    return this.model?.geometry;
  }

  /** The size frames should arrive at: the capture size of the bundle's geometry. */
  get inputSize(): [width: number, height: number] | undefined {
    const g = this.model?.geometry;
    return g ? [g.capture.width, g.capture.height] : undefined;
  }

  /**
   * Loads (or reloads) the bundle. Throws if it fails; the previous model, if any, stays in service. Concurrent
   * calls share one load.
   */
  async load(): Promise<Manifest> {
    if (this.loading) return this.loading;
    this.loading = (async () => {
      const scorer = await ScorerThread.load(this.bundleDir, {
        providers: this.sessionOptions.providers ?? ["cpu"],
        intraOpThreads: this.sessionOptions.intraOpThreads ?? 0,
        ...(this.sessionOptions.nice !== undefined ? { nice: this.sessionOptions.nice } : {}),
        ...(this.sessionOptions.onFallback ? { onFallback: this.sessionOptions.onFallback } : {}),
      });
      const old = this.model;
      this.model = { manifest: scorer.manifest, geometry: bundleGeometry(scorer.manifest), scorer };
      if (old) {
        // stop the old thread after the swap; a batch already submitted to it finishes first
        old.scorer.release().catch((err) => this.logger.warn({ err }, "releasing old model"));
      }
      return scorer.manifest;
    })();
    try {
      return await this.loading;
    } finally {
      this.loading = undefined;
    }
  }

  /** Reloads if the bundle on disk carries a different model_version; keeps the old model on failure. */
  async reloadIfChanged(reason: string): Promise<"swapped" | "unchanged" | "failed"> {
    const before = this.model?.manifest.model_version;
    try {
      const m = await this.load();
      if (m.model_version !== before) {
        this.logger.info({ reason, from: before, to: m.model_version }, "model swapped");
        return "swapped";
      }
      return "unchanged";
    } catch (err) {
      this.logger.error({ reason, err }, "model reload failed; keeping the running model");
      return "failed";
    }
  }

  async inspect(frames: Frame[], station: StationLookup): Promise<InspectionResult[]> {
    const model = this.model;
    if (!model) throw new Error("no model loaded");
    const { geometry, manifest } = model;
    const { width, height } = geometry.capture;
    const rgbs = await Promise.all(frames.map((f) => this.atCaptureSize(f, width, height)));
    const views = frames.map((f) => station(f.cameraId, manifest, f.recipe));
    const ownScore = bundlePartScore(manifest);
    // frames (resize) or tiles (tile mode) go to the inference thread in batches of maxBatch; the buffers are
    // transferred, not copied, and the maps come back the same way
    const { maps, scores } = await scoreImages(
      (packed, count) => model.scorer.score(packed, count),
      rgbs,
      geometry,
      this.maxBatch,
      (i) => views[i]!.ignore,
      (i) => views[i]!.score ?? ownScore,
    );
    const inferredTs = Date.now();
    return frames.map((frame, i) => {
      const map = maps[i]!;
      const score = scores[i]!;
      const { threshold } = views[i]!;
      const verdict = judge(score, threshold);
      const atSize: Frame =
        frame.width === width && frame.height === height ? frame : { ...frame, width, height, rgb: rgbs[i]! };
      const error = verdict === "error" ? `the model's score is ${score}, not a finite number` : undefined;
      if (error !== undefined) this.nonFinite(frame.cameraId, manifest.model_version, error);
      return {
        frame: atSize,
        score,
        threshold,
        verdict,
        ...(error !== undefined ? { error } : {}),
        regions: verdict === "defect" ? findRegions(map, width, height, threshold) : [],
        map,
        modelVersion: manifest.model_version,
        inferredTs,
        ...(views[i]!.source ? { source: views[i]!.source } : {}),
      };
    });
  }

  /** A model that scores frames NaN judges nothing: said once per camera a minute, with the frames since. */
  private nonFinite(camera: string, modelVersion: string, error: string): void {
    const admitted = this.nonFiniteRepeats.admit(`${camera} ${modelVersion}`);
    if (admitted === undefined) return;
    const meanwhile = admitted.unlogged > 0 ? ` (${admitted.unlogged} more frames since the last line)` : "";
    this.logger.error(
      { camera, model_version: modelVersion, unlogged: admitted.unlogged },
      `camera ${camera}: model ${modelVersion}: ${error}; the frame gets an error verdict, not OK${meanwhile}`,
    );
  }

  /** Cameras deliver at the capture size; after a swap to a model of another geometry, frames are resized here. */
  private async atCaptureSize(frame: Frame, width: number, height: number): Promise<Uint8Array> {
    if (frame.width === width && frame.height === height) return frame.rgb;
    if (this.resizeNotices.admit(`${frame.cameraId} ${frame.width}x${frame.height} ${width}x${height}`)) {
      this.logger.warn(
        { camera: frame.cameraId, frame: [frame.width, frame.height], model: [width, height] },
        "frame size differs from the model's; resizing in software",
      );
    }
    return resizeRgb(frame.rgb, frame.width, frame.height, width, height);
  }

  async close(): Promise<void> {
    await this.model?.scorer.release();
    this.model = undefined;
  }
}
