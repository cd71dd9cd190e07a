/**
 * The records sink: the part record, one row per inspected frame, with images of defects and sampled normal frames
 * (`records.enabled`, docs/records.md). `deliver` runs on the frame path: it builds the rows and hands them to the
 * records thread without waiting (record-thread.ts); everything that touches the disk happens there.
 */
import type { RecordsConfig, ThresholdRule } from "../../config/index.js";
import { DEFAULT_DIR_MODE, DEFAULT_FILE_MODE, parseMode } from "../../core/durable-fs.js";
import { errorMessage } from "../../core/errors.js";
import type { Frame, NativeFrame } from "../../core/frame.js";
import type { InspectionResult } from "../../core/result.js";
import type { ResultBatch, ResultSink, SinkContext, SinkFactory, SinkHealth } from "../sink.js";
import { RecordsThread } from "./record-thread.js";
import type { RecordJob, WriterOptions } from "./record-writer.js";

const DAY_MS = 86_400_000;
/**
 * Native frames asked of the cameras at once; a defect beyond them is saved as the model saw it (counted
 * native_missed). Bounds what waits here beside the thread's queue: 4 frames of 2048×1536 are 36 MiB.
 */
const MAX_NATIVE_FETCHES = 4;

/** `sigma 3`, `value 0.5`, `false_alarm_rate 0.001` or `bundle`: a threshold rule as the row keeps it. */
export function ruleText(rule: ThresholdRule | "bundle"): string {
  if (rule === "bundle") return rule;
  const [kind, value] = Object.entries(rule)[0]!;
  return `${kind} ${value}`;
}

/** The writer's options from the config slice. */
export function writerOptions(config: RecordsConfig): WriterOptions {
  return {
    dir: config.dir,
    fileMode: config.file_mode !== undefined ? parseMode(config.file_mode) : DEFAULT_FILE_MODE,
    dirMode: config.dir_mode !== undefined ? parseMode(config.dir_mode) : DEFAULT_DIR_MODE,
    maxAgeMs: config.retention.max_age_days * DAY_MS,
    maxRows: config.retention.max_rows,
    maxBytes: config.retention.max_bytes,
    pngCompression: config.images.png_compression,
  };
}

/** A job whose image is the frame at the ROI's own resolution, still to be fetched from its camera. */
export interface NativeImage {
  job: RecordJob & { image: NonNullable<RecordJob["image"]> };
  frame: Frame;
}

/**
 * Turns results into jobs for the records thread: every result a row; a defect's or an error's frame (and a
 * defect's map), and 1 in `normal_sample` good frames per camera, an image. Pixels are copied (other sinks still
 * read the frame) and the copies transferred to the thread, not cloned again. A frame its camera keeps at the ROI's
 * own resolution (`frame.native`) is left `native`: its pixels are fetched ({@link RecordJobs.fetchNative}) before
 * the job goes to the thread.
 */
export class RecordJobs {
  /** Good frames seen per camera, for the 1-in-N sample (the first good frame of each camera is kept). */
  private readonly goodSeen = new Map<string, number>();
  private fetching = 0;

  constructor(
    private readonly config: RecordsConfig,
    private readonly cameraInfo: (camera: string) => { bundle: string | null; rule: string | null },
    private readonly admitsImage: (bytes: number) => boolean,
    private readonly nativeFrame?: (camera: string, seq: number) => Promise<NativeFrame | null>,
  ) {}

  /** Images left out because the thread's queue held too many pixels. */
  imagesDropped = 0;
  /** Images saved as the model saw them because the frame at native resolution was no longer held (or too many were asked for). */
  nativeMissed = 0;

  build(results: readonly InspectionResult[]): {
    jobs: RecordJob[];
    transfer: ArrayBuffer[];
    native: NativeImage[];
  } {
    const jobs: RecordJob[] = [];
    const transfer: ArrayBuffer[] = [];
    const native: NativeImage[] = [];
    let queuedBytes = 0;
    for (const result of results) {
      const { frame } = result;
      const info = this.cameraInfo(frame.cameraId);
      const job: RecordJob = {
        row: {
          camera: frame.cameraId,
          ts: frame.captureTs,
          seq: frame.seq,
          part_id: frame.partId ?? null,
          recipe: frame.recipe ?? null,
          bundle: info.bundle,
          model_version: result.modelVersion,
          threshold: Number.isFinite(result.threshold) ? result.threshold : null,
          threshold_rule: info.rule,
          score: Number.isFinite(result.score) ? result.score : null,
          verdict: result.verdict,
          error: result.error ?? null,
          regions: JSON.stringify(result.regions),
          latency_ms: Math.max(0, result.inferredTs - frame.captureTs),
          image: null,
          map: null,
          image_bytes: 0,
        },
      };
      if (this.wantsImage(result)) {
        const withMap = result.verdict === "defect";
        const fetch = this.fetchesNative(frame);
        const { width, height } = fetch ? frame.native! : frame;
        const bytes = width * height * 3 + (withMap ? result.map.byteLength : 0);
        if (this.admitsImage(queuedBytes + bytes)) {
          const map = withMap ? result.map.slice() : undefined;
          if (map) transfer.push(map.buffer as ArrayBuffer);
          if (fetch) {
            this.fetching += 1;
            const mapSize = { width: frame.width, height: frame.height };
            const image = {
              pixels: { width, height, rgb: new Uint8Array(0) },
              mapSize,
              ...(map ? { map } : {}),
            };
            job.image = image;
            native.push({ job: job as NativeImage["job"], frame });
          } else {
            const rgb = frame.rgb.slice();
            job.image = { pixels: { width, height, rgb }, ...(map ? { map } : {}) };
            transfer.push(rgb.buffer as ArrayBuffer);
          }
          queuedBytes += bytes;
        } else {
          this.imagesDropped += 1;
        }
      }
      jobs.push(job);
    }
    return { jobs, transfer, native };
  }

  /**
   * Fetches a native image's pixels from its camera (a copy, transferred to the thread): its frame as the model saw
   * it when the camera no longer holds it. Returns the buffer to transfer.
   */
  async fetchNative({ job, frame }: NativeImage): Promise<ArrayBuffer> {
    // a camera that is gone or rebuilt answers null; nothing here is worth losing the row for
    const ask = this.nativeFrame?.(frame.cameraId, frame.seq) ?? Promise.resolve(null);
    const native = await ask.catch(() => null);
    this.fetching -= 1;
    const { image } = job;
    let rgb: Uint8Array;
    if (native === null) {
      this.nativeMissed += 1;
      delete image.mapSize;
      rgb = frame.rgb.slice();
      image.pixels = { width: frame.width, height: frame.height, rgb };
    } else {
      rgb = native.rgb.slice();
      image.pixels = { width: native.width, height: native.height, rgb };
    }
    return rgb.buffer as ArrayBuffer;
  }

  /** Whether the frame's image is to be fetched at native resolution, or else taken as the model saw it. */
  private fetchesNative(frame: Frame): boolean {
    if (frame.native === undefined || this.nativeFrame === undefined) return false;
    if (this.fetching < MAX_NATIVE_FETCHES) return true;
    this.nativeMissed += 1;
    return false;
  }

  private wantsImage(result: InspectionResult): boolean {
    const { images } = this.config;
    if (result.verdict !== "ok") return images.defects;
    if (images.normal_sample === 0) return false;
    const camera = result.frame.cameraId;
    const seen = this.goodSeen.get(camera) ?? 0;
    this.goodSeen.set(camera, seen + 1);
    return seen % images.normal_sample === 0;
  }
}

class RecordsSink implements ResultSink {
  readonly name = "records";
  /** Held on disk, but a row the queue dropped or a full disk refused is not owed to anyone later. */
  readonly durable = false;
  private readonly thread: RecordsThread;
  private readonly jobs: RecordJobs;
  private cameras = new Map<string, { bundle: string | null; rule: string | null }>();
  /** Batches waiting for native frames, and those after them: posted in order, each when its frames came. */
  private posting: Promise<void> = Promise.resolve();
  private waiting = 0;

  constructor(private readonly context: SinkContext) {
    const config = context.config.records;
    this.thread = new RecordsThread(writerOptions(config), context.logger.child({ component: "records" }));
    this.jobs = new RecordJobs(
      config,
      (camera) => this.cameras.get(camera) ?? { bundle: null, rule: null },
      (bytes) => this.thread.admitsImage(bytes),
      config.images.native ? (camera, seq) => context.node.nativeFrame(camera, seq) : undefined,
    );
  }

  async start(): Promise<void> {
    this.statusChanged();
    this.thread.start();
  }

  async stop(): Promise<void> {
    await this.posting; // bounded: a native frame that does not come is given up after 2 s
    await this.thread.stop();
  }

  deliver(batch: ResultBatch): void {
    const { jobs, transfer, native } = this.jobs.build(batch.results);
    if (native.length === 0 && this.waiting === 0) {
      this.thread.post(jobs, transfer);
      return;
    }
    // the fetches start now, together; the batch is posted after the batches before it
    const fetched = Promise.all(native.map((image) => this.jobs.fetchNative(image)));
    this.waiting += 1;
    this.posting = this.posting
      .then(async () => {
        for (const buffer of await fetched) transfer.push(buffer);
        this.thread.post(jobs, transfer);
      })
      .catch((err: unknown) => {
        // cannot happen (fetchNative answers null rather than fail), but a row is never lost unsaid
        this.thread.counts.lost += jobs.length;
        this.context.logger.error(
          { err: errorMessage(err) },
          `records: ${jobs.length} rows lost waiting for native frames (counted lost)`,
        );
      })
      .finally(() => {
        this.waiting -= 1;
      });
  }

  /** A threshold, a reload or a swapped model changes what the next rows say: the snapshot is read here, not per frame. */
  statusChanged(): void {
    const cameras = new Map<string, { bundle: string | null; rule: string | null }>();
    for (const cam of this.context.control.snapshot().cameras) {
      cameras.set(cam.id, { bundle: cam.bundle, rule: ruleText(cam.threshold_rule) });
    }
    this.cameras = cameras;
  }

  health(): SinkHealth {
    const { thread } = this;
    const stats = thread.stats;
    const problem = thread.problem;
    return {
      ok: thread.open && problem === undefined,
      ...(problem !== undefined ? { detail: problem } : !thread.open ? { detail: "database not open" } : {}),
      counts: {
        written: stats?.written ?? 0,
        failed: stats?.failed ?? 0,
        dropped: thread.counts.dropped,
        lost: thread.counts.lost,
        deleted: stats?.deleted ?? 0,
        queued: thread.counts.queued,
        rows: stats?.rows ?? 0,
        bytes: stats?.bytes ?? 0,
        images_saved: stats?.images_saved ?? 0,
        images_failed: stats?.images_failed ?? 0,
        images_dropped: this.jobs.imagesDropped,
        images_native_missed: this.jobs.nativeMissed,
        images_deleted: stats?.images_deleted ?? 0,
        corrupt_moved: stats?.corrupt_moved ?? 0,
        recreated: stats?.recreated ?? 0,
      },
    };
  }
}

export const recordsSink: SinkFactory = {
  name: "records",
  create: (context) => (context.config.records.enabled ? new RecordsSink(context) : undefined),
};
