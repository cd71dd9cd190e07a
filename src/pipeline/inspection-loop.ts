import { performance } from "node:perf_hooks";
import type { InferenceConfig } from "../config/index.js";
import { errorMessage } from "../core/errors.js";
import type { Frame } from "../core/frame.js";
import type { Logger } from "../core/log.js";
import { RepeatLimiter } from "../core/repeat-limiter.js";
import type { InspectionResult } from "../core/result.js";
import { FrameQueue } from "./frame-queue.js";
import type { Inspector, StationLookup } from "./inspector.js";

/**
 * Batches handed to the inspector before the oldest one's results are back. Two keep the inference thread busy
 * while the main thread post-processes; more would only add latency, since the thread scores one at a time.
 */
const BATCHES_IN_FLIGHT = 2;

/**
 * The inspection stage's frame loop: frames from any camera → bounded frame queue (drop-oldest, counted) →
 * batches of up to `max_batch` frames, waiting at most `max_wait_ms` for a batch to fill → the inspector →
 * results, delivered in batch order to the one consumer the daemon wires in.
 */
export class InspectionLoop {
  private readonly queue: FrameQueue;
  private running: Promise<void> | undefined;
  /** Batches whose inference failed (their frames are named in the log; the loop goes on). */
  failedBatches = 0;
  /** Batches whose results the consumer threw on (named in the log; the loop goes on). */
  failedDeliveries = 0;
  /** Repeated failures (a dead inference thread, a GPU error) fail every batch, at up to the frame rate. */
  private readonly repeats = new RepeatLimiter();

  constructor(
    private readonly inspector: Inspector,
    private readonly config: InferenceConfig,
    private readonly logger: Logger,
    private readonly deliver: (results: InspectionResult[], inferenceMs: number) => void,
    private readonly station: StationLookup,
  ) {
    this.queue = new FrameQueue(config.queue_size);
  }

  push(frame: Frame): void {
    this.queue.push(frame);
  }

  /** Frames dropped by the full queue since start. */
  get droppedFrames(): number {
    return this.queue.droppedTotal();
  }

  /** Frames dropped by the full queue since start, per camera. */
  droppedByCamera(): Record<string, number> {
    return this.queue.droppedByCamera();
  }

  /** Capture time of the oldest frame waiting, if any (the watchdog's "is the queue stuck" test). */
  oldestCaptureTs(): number | undefined {
    return this.queue.oldestCaptureTs();
  }

  start(): void {
    this.running ??= this.run();
  }

  /** Accepts no more frames, inspects and delivers the ones already queued, then resolves. */
  async drain(): Promise<void> {
    this.queue.close();
    await this.running;
  }

  /** Logs a failed batch naming its frames: each distinct problem once, then at most once a minute with a count. */
  private report(what: string, batch: readonly Frame[], err: unknown): void {
    const problem = `${what}: ${errorMessage(err).split("\n")[0]}`;
    const admitted = this.repeats.admit(problem);
    if (admitted === undefined) return;
    const since = admitted.unlogged > 0 ? ` (and ${admitted.unlogged} more batches since the last line)` : "";
    this.logger.error({ err, frames: batch.map((f) => `${f.cameraId}#${f.seq}`) }, `${problem}${since}`);
  }

  /**
   * Keeps up to {@link BATCHES_IN_FLIGHT} batches with the inspector at once, so the inference thread already holds
   * the next batch while the main thread finds regions and publishes the last one (stages overlap, buffers flow one
   * way). Results are delivered in batch order.
   */
  private async run(): Promise<void> {
    const { max_batch, max_wait_ms } = this.config;
    const inFlight: Promise<void>[] = [];
    let delivered: Promise<void> = Promise.resolve();
    for (;;) {
      if (inFlight.length >= BATCHES_IN_FLIGHT) await inFlight.shift();
      const batch = await this.queue.takeBatch(max_batch, max_wait_ms);
      if (batch.length === 0) break; // closed and drained
      const started = performance.now();
      const inspected = this.inspector.inspect(batch, this.station).catch((err: unknown) => {
        // one bad batch must not end the loop; the frames are counted as lost and named in the log
        this.failedBatches += 1;
        this.report("inference failed for a batch; continuing", batch, err);
        return undefined;
      });
      delivered = delivered.then(async () => {
        const results = await inspected;
        if (!results) return;
        try {
          this.deliver(results, performance.now() - started);
        } catch (err) {
          // a consumer's bug must not end the loop either: later batches would never be delivered
          this.failedDeliveries += 1;
          this.report("delivering a batch's results failed; continuing", batch, err);
        }
      });
      inFlight.push(delivered);
    }
    await delivered;
  }
}
