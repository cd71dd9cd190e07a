import { mkdir, readdir, rename, stat } from "node:fs/promises";
import path from "node:path";
import sharp from "sharp";
import type { CollectionConfig } from "../config.js";
import { errorMessage } from "../errors.js";
import type { Logger } from "../log.js";
import { quantile } from "../model/bundle.js";
import type { InspectionResult } from "../pipeline/result.js";

/**
 * Keeps frames the model judged normal with margin (score below a quantile of the bundle's validation scores),
 * as training material for the next `stpmd retrain`. Per camera it saves at most one frame per
 * `min_interval_s` and at most `max_frames_per_camera`; all cameras together stay under `max_bytes`.
 * Files go flat into one folder, `<camera>_<capture time>_<seq>.png`, so `stpmd retrain --frames DIR` reads them
 * directly. Writes are temp + rename: retrain never sees half a PNG.
 */
export class Collector {
  private readonly lastSaved = new Map<string, number>();
  private readonly countByCamera = new Map<string, number>();
  private bytes = 0;
  private writing = 0;
  private full = false;
  saved = 0;

  private constructor(
    private readonly config: CollectionConfig,
    private readonly logger: Logger,
  ) {}

  static async open(config: CollectionConfig, logger: Logger): Promise<Collector> {
    const c = new Collector(config, logger);
    if (config.enabled) {
      await mkdir(config.dir, { recursive: true });
      for (const f of await readdir(config.dir)) {
        if (!f.endsWith(".png")) continue;
        const camera = f.split("_")[0]!;
        c.countByCamera.set(camera, (c.countByCamera.get(camera) ?? 0) + 1);
        c.bytes += (await stat(path.join(config.dir, f))).size;
      }
    }
    return c;
  }

  /** Score below which a frame counts as normal with margin, for the given model's validation scores. */
  static marginScore(validationScores: readonly number[], q: number): number {
    return quantile(
      [...validationScores].sort((a, b) => a - b),
      q,
    );
  }

  consider(result: InspectionResult, validationScores: readonly number[]): void {
    const cfg = this.config;
    if (!cfg.enabled || result.defective || this.writing > 2) return;
    const cam = result.frame.cameraId;
    if (result.score >= Collector.marginScore(validationScores, cfg.score_quantile)) return;
    const now = Date.now();
    if (now - (this.lastSaved.get(cam) ?? 0) < cfg.min_interval_s * 1000) return;
    if ((this.countByCamera.get(cam) ?? 0) >= cfg.max_frames_per_camera) return;
    if (this.bytes >= cfg.max_bytes) {
      if (!this.full)
        this.logger.warn(
          { dir: cfg.dir, max_bytes: cfg.max_bytes },
          "collection folder is full; not saving more frames",
        );
      this.full = true;
      return;
    }
    this.lastSaved.set(cam, now);
    this.writing += 1;
    this.save(result)
      .catch((err) =>
        this.logger.error({ camera: cam, err: errorMessage(err) }, "saving collected frame failed"),
      )
      .finally(() => {
        this.writing -= 1;
      });
  }

  private async save(r: InspectionResult): Promise<void> {
    const { frame } = r;
    const stamp = new Date(frame.captureTs).toISOString().replace(/[-:.]/g, "");
    const name = `${frame.cameraId}_${stamp}_${frame.seq}.png`;
    const file = path.join(this.config.dir, name);
    const tmp = path.join(this.config.dir, `.${name}.tmp`);
    const info = await sharp(frame.rgb, { raw: { width: frame.width, height: frame.height, channels: 3 } })
      .png()
      .toFile(tmp);
    await rename(tmp, file);
    this.bytes += info.size;
    this.saved += 1;
    this.countByCamera.set(frame.cameraId, (this.countByCamera.get(frame.cameraId) ?? 0) + 1);
  }
}
