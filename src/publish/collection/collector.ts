import { chmod, readdir, stat, unlink } from "node:fs/promises";
import path from "node:path";
import { quantile } from "../../bundle/bundle.js";
import type { CollectionConfig } from "../../config/index.js";
import { DEFAULT_DIR_MODE, DEFAULT_FILE_MODE, makeDirectory, parseMode } from "../../core/durable-fs.js";
import { errorMessage } from "../../core/errors.js";
import type { Logger } from "../../core/log.js";
import { RepeatLimiter } from "../../core/repeat-limiter.js";
import type { InspectionResult } from "../../core/result.js";
import type { CollectionStats } from "../control.js";
import { framePng, isTempPngName, writePng } from "../frame-png.js";
import { FALSE_ALARM_SUFFIX } from "../review/labelled-files.js";

/**
 * Keeps frames the model judged normal with margin (score below a quantile of the bundle's validation scores),
 * as training material for the next `stpmd retrain`. Per camera it saves at most one frame per `min_interval_s`.
 * Beyond `max_frames_per_camera` (per camera) or `max_bytes` (all cameras) the oldest frames are deleted: the set
 * is a rolling window of how the line looks now, which is what a retrain should learn.
 * Each camera's station has its own folder, `<dir>/<camera>/<camera>_<capture time>_<seq>.png`, because each
 * station's model learns its own view: `stpmd retrain --frames <dir>/<camera>` reads one station's frames directly.
 * Frames are saved at the ROI's own resolution, the long side capped at `max_long_side`, not at model size, so a
 * later retrain can choose another geometry: a frame that qualifies at capture size makes the collector ask its
 * camera for the next frame at full size ({@link CollectorOptions.requestOriginal}), and that frame — judged by
 * the model like any other — is saved if it qualifies too. Without a camera to ask (unit tests), frames are saved
 * as they were inspected. Writes are temp + fsync + rename: retrain never sees half a PNG, and a failed write (a
 * full disk) leaves nothing behind. Frames are production images, so files and folder get the configured modes
 * (0640/0750 by default), set explicitly rather than left to the umask. Collection never costs inspection: a save
 * that fails is counted and logged (once per problem, then at most once a minute), and the next one is tried.
 * Frames an operator labelled a false alarm (`<name>_false-alarm.png`, written by the review labels, publish/review/)
 * share a camera's folder but not its window: they are neither counted nor deleted, until their label is undone.
 */
export interface CollectorOptions {
  /**
   * Asks camera `cameraId` for its next frame at collection size (Camera.requestOriginal); false when it cannot
   * give one. Without it, frames are saved at capture size.
   */
  requestOriginal?: (cameraId: string) => boolean;
}

/**
 * How long a request for a full-size frame stays pending before the next qualifying frame asks again: the frame
 * it brought may have been dropped by a full inference queue. Long enough for a triggered camera's next part.
 */
const ORIGINAL_WAIT_MS = 10_000;

/** Saves in flight beyond which a qualifying frame is dropped (counted): a slow disk must not pile up frames. */
const MAX_SAVES_IN_FLIGHT = 3;

export class Collector {
  private readonly lastSaved = new Map<string, number>();
  /** Saved files per camera, oldest first (names start with the capture time, so name order is age order). */
  private readonly filesByCamera = new Map<string, { name: string; size: number }[]>();
  private bytes = 0;
  private writing = 0;
  /** A full disk fails every save: each problem is logged once, then once a minute with a count. */
  private readonly repeats = new RepeatLimiter();
  /** Saves failed since the last one that worked, for the line saying saving works again. */
  private failedInARow = 0;
  /** Why the last save failed, while saves keep failing (for the sink's health). */
  private lastProblem: string | undefined;
  private margin: { scores: readonly number[]; value: number } | undefined;
  /** Cameras asked for a full-size frame, and when. */
  private readonly requested = new Map<string, number>();
  saved = 0;
  deleted = 0;
  failed = 0;
  dropped = 0;
  private readonly fileMode: number;
  private readonly dirMode: number;

  private constructor(
    private readonly config: CollectionConfig,
    private readonly logger: Logger,
    private readonly options: CollectorOptions,
  ) {
    this.fileMode = config.file_mode !== undefined ? parseMode(config.file_mode) : DEFAULT_FILE_MODE;
    this.dirMode = config.dir_mode !== undefined ? parseMode(config.dir_mode) : DEFAULT_DIR_MODE;
  }

  static async open(
    config: CollectionConfig,
    logger: Logger,
    options: CollectorOptions = {},
  ): Promise<Collector> {
    const c = new Collector(config, logger, options);
    if (config.enabled) {
      await makeDirectory(config.dir, c.dirMode);
      for (const entry of (await readdir(config.dir, { withFileTypes: true })).sort((a, b) =>
        a.name.localeCompare(b.name),
      )) {
        if (!entry.isDirectory() || entry.name.startsWith(".")) continue;
        const cameraDir = path.join(config.dir, entry.name);
        for (const f of (await readdir(cameraDir)).sort()) {
          if (isTempPngName(f)) {
            await c.removeStaleTemp(path.join(cameraDir, f));
            continue;
          }
          if (!f.endsWith(".png") || f.startsWith(".")) continue;
          const file = path.join(cameraDir, f);
          // a false alarm an operator labelled is kept until its label is undone: never in the rolling window
          if (!f.endsWith(FALSE_ALARM_SUFFIX)) c.track(entry.name, f, (await stat(file)).size);
          // frames saved by an older release may be world-readable
          await chmod(file, c.fileMode).catch((err: unknown) =>
            logger.warn({ file, err }, "could not set the mode of a collected frame"),
          );
        }
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
    const cam = result.frame.cameraId;
    const { original } = result.frame;
    if (original) this.requested.delete(cam); // the full-size frame came: kept below if it qualifies
    // only frames judged good teach the student what normal looks like (an error verdict's score is not a number)
    if (!cfg.enabled || result.verdict !== "ok") return;
    // the margin changes only with the model: compute it once per validation-score list, not per frame
    if (this.margin?.scores !== validationScores) {
      this.margin = {
        scores: validationScores,
        value: Collector.marginScore(validationScores, cfg.score_quantile),
      };
    }
    if (result.score >= this.margin.value) return;
    const now = Date.now();
    if (now - (this.lastSaved.get(cam) ?? 0) < cfg.min_interval_s * 1000) return;
    const { requestOriginal } = this.options;
    if (!original && requestOriginal) {
      if (now - (this.requested.get(cam) ?? Number.NEGATIVE_INFINITY) < ORIGINAL_WAIT_MS) return;
      if (requestOriginal(cam)) this.requested.set(cam, now);
      return;
    }
    this.lastSaved.set(cam, now);
    if (this.writing >= MAX_SAVES_IN_FLIGHT) {
      this.dropped += 1;
      return;
    }
    this.writing += 1;
    this.save(result)
      .then(() => this.savedAgain())
      .catch((err: unknown) => this.saveFailed(cam, err))
      .finally(() => {
        this.writing -= 1;
      });
  }

  /** Why saves fail, while the last one failed; undefined while saving works. */
  get failing(): string | undefined {
    return this.lastProblem;
  }

  stats(): CollectionStats {
    return { saved: this.saved, failed: this.failed, dropped: this.dropped, deleted: this.deleted };
  }

  private saveFailed(camera: string, err: unknown): void {
    this.failed += 1;
    this.failedInARow += 1;
    // sharp's and libvips' messages span lines; a log line must not
    const problem = errorMessage(err).replace(/\s*\n\s*/g, "; ");
    this.lastProblem = problem;
    const admitted = this.repeats.admit(problem);
    if (admitted === undefined) return;
    const meanwhile = admitted.unlogged > 0 ? ` (${admitted.unlogged} more since the last line)` : "";
    this.logger.warn(
      { camera, dir: this.config.dir, failed: this.failed },
      `could not save a collected frame of camera ${camera} in ${this.config.dir}: ${problem}${meanwhile}; ` +
        `inspection goes on; ${this.failed} failed saves in all (stpmd_collection_frames_total{outcome="failed"})`,
    );
  }

  private savedAgain(): void {
    if (this.failedInARow === 0) return;
    this.lastProblem = undefined;
    this.logger.info(
      { failed: this.failedInARow },
      `collected frames are saved again, after ${this.failedInARow} failed saves`,
    );
    this.failedInARow = 0;
    this.repeats.clear();
  }

  /** A temp file a process killed mid-save left behind: never a frame, and it takes disk space. */
  private async removeStaleTemp(file: string): Promise<void> {
    try {
      await unlink(file);
      this.logger.info(
        { file },
        `removed ${file}, a collected frame's temp file left by an interrupted save`,
      );
    } catch (err) {
      this.logger.warn({ file }, `could not remove the stale temp file ${file}: ${errorMessage(err)}`);
    }
  }

  private async save(r: InspectionResult): Promise<void> {
    const { frame } = r;
    const stamp = new Date(frame.captureTs).toISOString().replace(/[-:.]/g, "");
    const name = `${frame.cameraId}_${stamp}_${frame.seq}.png`;
    const dir = path.join(this.config.dir, frame.cameraId);
    // each time, not once: a folder deleted while running (an operator clearing frames) would fail every save
    await makeDirectory(dir, this.dirMode);
    const png = await framePng(frame.original ?? frame);
    await writePng(path.join(dir, name), png, this.fileMode);
    this.saved += 1;
    this.track(frame.cameraId, name, png.length);
    await this.enforceLimits(frame.cameraId);
  }

  private track(camera: string, name: string, size: number): void {
    const list = this.filesByCamera.get(camera) ?? [];
    list.push({ name, size });
    this.filesByCamera.set(camera, list);
    this.bytes += size;
  }

  private async enforceLimits(camera: string): Promise<void> {
    const list = this.filesByCamera.get(camera)!;
    while (list.length > this.config.max_frames_per_camera) await this.deleteOldest(camera, list);
    while (this.bytes > this.config.max_bytes) {
      // over the byte budget: drop the oldest frame of whichever camera holds the most
      const fullest = [...this.filesByCamera.entries()].sort((a, b) => b[1].length - a[1].length)[0];
      if (!fullest || fullest[1].length === 0) break;
      await this.deleteOldest(fullest[0], fullest[1]);
    }
  }

  private async deleteOldest(camera: string, list: { name: string; size: number }[]): Promise<void> {
    const oldest = list.shift()!;
    this.bytes -= oldest.size;
    this.deleted += 1;
    const file = path.join(this.config.dir, camera, oldest.name);
    await unlink(file).catch((err: NodeJS.ErrnoException) => {
      // gone already (an operator cleared the folder): what deleting it was for
      if (err.code !== "ENOENT")
        this.logger.warn({ file }, `could not delete the old collected frame ${file}: ${err.message}`);
    });
  }
}
