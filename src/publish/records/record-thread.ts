/**
 * The daemon's side of the records thread: hands it jobs without waiting, and bounds what may wait. The sink's
 * `deliver` runs on the frame path, so it only builds rows and queues them; they gather here for {@link GATHER_MS}
 * and go to the thread in one message; the thread does every SQLite call and file write. At most {@link MAX_QUEUED_ROWS} rows and {@link MAX_QUEUED_IMAGE_BYTES} of pixels may be queued:
 * beyond them a batch's rows are dropped (counted) and a frame's image is left out of its row (counted), so a disk
 * that stalls for minutes costs records, never memory or inspection.
 */
import { Worker } from "node:worker_threads";
import { errorMessage } from "../../core/errors.js";
import type { Logger } from "../../core/log.js";
import type { FromWorker, ToWorker } from "./record-worker.js";
import type { RecordJob, WriterOptions, WriterStats } from "./record-writer.js";

/** Rows queued for the thread beyond which a batch is dropped: a minute of a 4-camera line at 40 fps, 60 s. */
export const MAX_QUEUED_ROWS = 10_000;
/** Pixels (frames and maps) queued beyond which a frame's image is left out of its row. */
export const MAX_QUEUED_IMAGE_BYTES = 64 * 1024 * 1024;

/**
 * How long rows gather on the main thread before one message takes them to the records thread (sooner at
 * {@link FLUSH_ROWS}). A message per inference batch (75 a second at 600 frames/s in batches of 8) cost the main
 * thread 0.1 ms a frame at 1 % defects — 415 ms of 467 ms in the sink's `deliver` under `--cpu-prof` of
 * benchmarks/records-cost.ts: each postMessage wakes the records thread, which on a 2-core box busy with inference
 * takes the core from the thread that woke it. Five messages a second wake it five times. A row is durable only
 * once committed either way; 200 ms is nothing to an archive.
 */
export const GATHER_MS = 200;
/** Rows gathered beyond which they are sent at once: bounds one message's clone (and the thread's transaction). */
const FLUSH_ROWS = 1000;

/** How long `stop` waits for the thread to write what it holds and close the database. */
const STOP_WAIT_MS = 10_000;
/** Least time between two starts of a thread that died (it should not: this is a native crash's backstop). */
const RESTART_AFTER_MS = 5_000;

export interface ThreadCounts {
  /** Rows dropped because the queue was full. */
  dropped: number;
  /** Images left out of their rows because the queue held too many pixels. */
  images_dropped: number;
  /** Rows queued now. */
  queued: number;
  /** Rows handed to a thread that died before writing them. */
  lost: number;
}

export class RecordsThread {
  private worker: Worker | undefined;
  private stopping = false;
  private diedAt = Number.NEGATIVE_INFINITY;
  private queuedRows = 0;
  private queuedImageBytes = 0;
  /** Image bytes per posted message, in order, so each reply frees what its jobs held. */
  private readonly inFlight: { rows: number; imageBytes: number }[] = [];
  stats: WriterStats | undefined;
  problem: string | undefined;
  open = false;
  readonly counts: ThreadCounts = { dropped: 0, images_dropped: 0, queued: 0, lost: 0 };
  private stopped: (() => void) | undefined;
  /** Jobs queued and not yet sent, with the pixel buffers they transfer. */
  private gathered: { jobs: RecordJob[]; transfer: ArrayBuffer[]; imageBytes: number } | undefined;
  private flushTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly options: WriterOptions,
    private readonly logger: Logger,
  ) {}

  start(): void {
    this.stopping = false;
    const worker = new Worker(new URL("./record-worker.js", import.meta.url), { workerData: this.options });
    worker.on("message", (msg: FromWorker) => this.onMessage(msg));
    worker.on("error", (err) =>
      this.logger.error({ err }, `the records thread failed: ${errorMessage(err)}`),
    );
    worker.on("exit", (code) => this.onExit(worker, code));
    this.worker = worker;
  }

  /** Whether an image of `bytes` may still be queued. */
  admitsImage(bytes: number): boolean {
    return this.queuedImageBytes + bytes <= MAX_QUEUED_IMAGE_BYTES;
  }

  /**
   * Queues jobs for the thread (sent within {@link GATHER_MS}); false (rows counted dropped) when the queue is full
   * or no thread runs.
   */
  post(jobs: RecordJob[], transfer: ArrayBuffer[]): boolean {
    if (this.worker === undefined && !this.stopping && Date.now() - this.diedAt >= RESTART_AFTER_MS)
      this.start();
    if (this.worker === undefined || this.stopping || this.queuedRows + jobs.length > MAX_QUEUED_ROWS) {
      this.counts.dropped += jobs.length;
      return false;
    }
    let imageBytes = 0;
    for (const buffer of transfer) imageBytes += buffer.byteLength;
    this.gathered ??= { jobs: [], transfer: [], imageBytes: 0 };
    const gathered = this.gathered;
    for (const job of jobs) gathered.jobs.push(job);
    for (const buffer of transfer) gathered.transfer.push(buffer);
    gathered.imageBytes += imageBytes;
    this.queuedRows += jobs.length;
    this.queuedImageBytes += imageBytes;
    this.counts.queued = this.queuedRows;
    if (gathered.jobs.length >= FLUSH_ROWS) this.flush();
    else this.flushTimer ??= setTimeout(() => this.flush(), GATHER_MS);
    return true;
  }

  /** Sends the gathered jobs to the thread in one message. */
  private flush(): void {
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    const gathered = this.gathered;
    this.gathered = undefined;
    if (gathered === undefined || this.worker === undefined) return;
    this.worker.postMessage({ type: "write", jobs: gathered.jobs } satisfies ToWorker, gathered.transfer);
    this.inFlight.push({ rows: gathered.jobs.length, imageBytes: gathered.imageBytes });
  }

  /** Asks the thread to write what it holds and close the database; terminates it after {@link STOP_WAIT_MS}. */
  async stop(): Promise<void> {
    const worker = this.worker;
    if (worker === undefined) return;
    this.flush();
    this.stopping = true;
    const done = new Promise<void>((resolve) => {
      this.stopped = resolve;
    });
    worker.postMessage({ type: "stop" } satisfies ToWorker);
    const timer = setTimeout(() => {
      this.logger.warn(
        { queued: this.queuedRows },
        `the records thread did not finish within ${STOP_WAIT_MS / 1000} s; ${this.queuedRows} queued rows are lost`,
      );
      void worker.terminate();
    }, STOP_WAIT_MS);
    await Promise.race([done, new Promise<void>((resolve) => worker.once("exit", () => resolve()))]);
    clearTimeout(timer);
    await worker.terminate();
    this.worker = undefined;
  }

  private onMessage(msg: FromWorker): void {
    switch (msg.type) {
      case "written": {
        // replies come in the order jobs were posted; a drain may cover several posts
        let rows = msg.rows;
        while (rows > 0 && this.inFlight.length > 0) {
          const first = this.inFlight[0]!;
          const taken = Math.min(rows, first.rows);
          first.rows -= taken;
          rows -= taken;
          this.queuedRows -= taken;
          if (first.rows === 0) {
            this.queuedImageBytes -= first.imageBytes;
            this.inFlight.shift();
          }
        }
        this.counts.queued = this.queuedRows;
        this.stats = msg.stats;
        this.problem = msg.problem;
        this.open = msg.open;
        return;
      }
      case "log":
        this.logger[msg.level](msg.fields, msg.msg);
        return;
      case "stopped":
        this.stopped?.();
    }
  }

  private onExit(worker: Worker, code: number): void {
    if (worker !== this.worker) return;
    this.worker = undefined;
    if (this.stopping) return;
    this.diedAt = Date.now();
    this.counts.lost += this.queuedRows;
    this.logger.error(
      { code, lost: this.queuedRows },
      `the records thread exited (code ${code}); ${this.queuedRows} queued rows are lost; ` +
        `a new one starts with the next batch after ${RESTART_AFTER_MS / 1000} s`,
    );
    this.queuedRows = 0;
    this.queuedImageBytes = 0;
    this.inFlight.length = 0;
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    this.gathered = undefined;
    this.counts.queued = 0;
    this.open = false;
  }
}
