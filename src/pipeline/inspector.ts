import type { Manifest } from "../bundle/bundle.js";
import type { Frame } from "../core/frame.js";
import type { Logger } from "../core/log.js";
import type { InspectionResult } from "../core/result.js";
import { resizeRgb } from "../data/images.js";
import type { SessionOptions } from "../onnx/ort.js";
import { findRegions } from "../stpm/regions.js";
import { ScorerThread } from "./scorer-thread.js";

interface LoadedModel {
  manifest: Manifest;
  scorer: ScorerThread;
}

/**
 * Owns the current model and turns batches of frames into inspection results. Each model runs in its own inference
 * thread (see ScorerThread). Loading a new bundle builds the new thread and session completely before swapping it
 * in, so a bundle that fails to load leaves the running model serving.
 */
export class Inspector {
  private model: LoadedModel | undefined;
  private loading: Promise<Manifest> | undefined;
  private resizeWarned = false;

  constructor(
    private readonly bundleDir: string,
    private readonly sessionOptions: SessionOptions,
    private readonly logger: Logger,
  ) {}

  get manifest(): Manifest | undefined {
    return this.model?.manifest;
  }

  get inputSize(): [width: number, height: number] | undefined {
    const m = this.model?.manifest;
    return m ? [m.input.width, m.input.height] : undefined;
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
        ...(this.sessionOptions.onFallback ? { onFallback: this.sessionOptions.onFallback } : {}),
      });
      const old = this.model;
      this.model = { manifest: scorer.manifest, scorer };
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
  async reloadIfChanged(reason: string): Promise<boolean> {
    const before = this.model?.manifest.model_version;
    try {
      const m = await this.load();
      if (m.model_version !== before) {
        this.logger.info({ reason, from: before, to: m.model_version }, "model swapped");
        return true;
      }
      return false;
    } catch (err) {
      this.logger.error(
        { reason, bundle: this.bundleDir, err },
        "model reload failed; keeping the running model",
      );
      return false;
    }
  }

  async inspect(frames: Frame[]): Promise<InspectionResult[]> {
    const model = this.model;
    if (!model) throw new Error("no model loaded");
    const { width, height } = model.manifest.input;
    const hw = width * height;
    const packed = new Uint8Array(frames.length * hw * 3);
    const rgbs = await Promise.all(frames.map((f) => this.atModelSize(f, width, height)));
    rgbs.forEach((rgb, i) => {
      packed.set(rgb, i * hw * 3);
    });
    // `packed` is handed to the inference thread (transferred, not copied); the maps come back the same way
    const { maps, scores } = await model.scorer.score(packed, frames.length);
    const inferredTs = Date.now();
    const threshold = model.manifest.threshold;
    return frames.map((frame, i) => {
      // views, not copies: the batch's map buffer belongs to these results alone
      const map = maps.subarray(i * hw, (i + 1) * hw);
      const score = scores[i]!;
      const defective = score > threshold;
      const atSize: Frame =
        frame.width === width && frame.height === height ? frame : { ...frame, width, height, rgb: rgbs[i]! };
      return {
        frame: atSize,
        score,
        threshold,
        defective,
        regions: defective ? findRegions(map, width, height, threshold) : [],
        map,
        modelVersion: model.manifest.model_version,
        inferredTs,
      };
    });
  }

  /** Cameras deliver at the model size; after a swap to a model of another size, frames are resized here. */
  private async atModelSize(frame: Frame, width: number, height: number): Promise<Uint8Array> {
    if (frame.width === width && frame.height === height) return frame.rgb;
    if (!this.resizeWarned) {
      this.resizeWarned = true;
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
