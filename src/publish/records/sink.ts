/**
 * The records sink: the part record, one row per inspected frame, with images of defects and sampled normal frames
 * (`records.enabled`, docs/records.md). `deliver` runs on the frame path: it builds the rows and hands them to the
 * records thread without waiting (record-thread.ts); everything that touches the disk happens there.
 */
import type { RecordsConfig, ThresholdRule } from "../../config/index.js";
import { DEFAULT_DIR_MODE, DEFAULT_FILE_MODE, parseMode } from "../../core/durable-fs.js";
import type { InspectionResult } from "../../core/result.js";
import type { ResultBatch, ResultSink, SinkContext, SinkFactory, SinkHealth } from "../sink.js";
import { RecordsThread } from "./record-thread.js";
import type { RecordJob, WriterOptions } from "./record-writer.js";

const DAY_MS = 86_400_000;

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
  };
}

/**
 * Turns results into jobs for the records thread: every result a row; a defect's or an error's frame (and a
 * defect's map), and 1 in `normal_sample` good frames per camera, an image. Pixels are copied (other sinks still
 * read the frame) and the copies transferred to the thread, not cloned again.
 */
export class RecordJobs {
  /** Good frames seen per camera, for the 1-in-N sample (the first good frame of each camera is kept). */
  private readonly goodSeen = new Map<string, number>();

  constructor(
    private readonly config: RecordsConfig,
    private readonly cameraInfo: (camera: string) => { bundle: string | null; rule: string | null },
    private readonly admitsImage: (bytes: number) => boolean,
  ) {}

  /** Images left out because the thread's queue held too many pixels. */
  imagesDropped = 0;

  build(results: readonly InspectionResult[]): { jobs: RecordJob[]; transfer: ArrayBuffer[] } {
    const jobs: RecordJob[] = [];
    const transfer: ArrayBuffer[] = [];
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
        const bytes = frame.rgb.byteLength + (withMap ? result.map.byteLength : 0);
        if (this.admitsImage(queuedBytes + bytes)) {
          const rgb = frame.rgb.slice();
          const map = withMap ? result.map.slice() : undefined;
          job.image = { pixels: { width: frame.width, height: frame.height, rgb }, ...(map ? { map } : {}) };
          transfer.push(rgb.buffer as ArrayBuffer);
          if (map) transfer.push(map.buffer as ArrayBuffer);
          queuedBytes += bytes;
        } else {
          this.imagesDropped += 1;
        }
      }
      jobs.push(job);
    }
    return { jobs, transfer };
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

  constructor(private readonly context: SinkContext) {
    const config = context.config.records;
    this.thread = new RecordsThread(writerOptions(config), context.logger.child({ component: "records" }));
    this.jobs = new RecordJobs(
      config,
      (camera) => this.cameras.get(camera) ?? { bundle: null, rule: null },
      (bytes) => this.thread.admitsImage(bytes),
    );
  }

  async start(): Promise<void> {
    this.statusChanged();
    this.thread.start();
  }

  async stop(): Promise<void> {
    await this.thread.stop();
  }

  deliver(batch: ResultBatch): void {
    const { jobs, transfer } = this.jobs.build(batch.results);
    this.thread.post(jobs, transfer);
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
