import type { MqttConfig } from "../../config/index.js";
import { errorMessage } from "../../core/errors.js";
import type { Logger } from "../../core/log.js";
import { RepeatLimiter } from "../../core/repeat-limiter.js";
import type { InspectionResult } from "../../core/result.js";
import { renderSnapshot } from "../../data/snapshot.js";
import type { DurableQueue, OutboxMessage } from "../durable-queue.js";
import {
  buildDefectPayload,
  defectEventId,
  encodePayload,
  type Qos,
  type SnapshotDelivery,
  type Topics,
} from "../topics.js";

/**
 * Defects waiting for their snapshot or their disk write. Beyond this the disk cannot keep up, and holding more
 * frames in memory would only move the failure to an out-of-memory kill; the new event is refused and counted.
 */
const MAX_PENDING_DEFECTS = 64;

/** Snapshots always travel at QoS 1: a retained picture is worth one acknowledgement, not QoS 2's four packets. */
const SNAPSHOT_QOS: Qos = 1;
const DEFAULT_MAX_CONCURRENT_SNAPSHOTS = 2;

/** A rendered snapshot, or why the event goes without one. */
type SnapshotOutcome = { jpeg: Buffer } | { skipped: string } | { jpeg: undefined };

/**
 * The defect path of publishing, apart from the connection: a bounded number of defects pending (beyond it a new
 * one is refused and counted), snapshot rendering with bounded concurrency (beyond it the event goes without a
 * picture, counted), and hand-over to the outbox in submission order, so a quick render never overtakes a slow one.
 * Each event and its snapshot become one outbox entry; every outcome (queued, refused, lost) is counted once.
 */
export class DefectWriter {
  /** `snapshotsSkipped`: events queued without the snapshot they should have had (all cameras). */
  readonly counts = { queued: 0, overflowed: 0, notQueued: 0, snapshotsSkipped: 0 };
  /** {@link counts}.snapshotsSkipped per camera, for status and the metrics. */
  readonly withoutSnapshot = new Map<string, number>();
  private pendingDefects = 0;
  private snapshotsRendering = 0;
  private enqueueChain: Promise<void> = Promise.resolve();
  private readonly maxConcurrentSnapshots: number;
  private readonly skipRepeats = new RepeatLimiter();

  constructor(
    private readonly config: Pick<MqttConfig, "snapshot" | "snapshot_quality" | "event_qos">,
    private readonly outbox: DurableQueue,
    private readonly topics: Topics,
    private readonly logger: Logger,
    options: { maxConcurrentSnapshots?: number } = {},
  ) {
    this.maxConcurrentSnapshots = options.maxConcurrentSnapshots ?? DEFAULT_MAX_CONCURRENT_SNAPSHOTS;
  }

  /** Defects waiting for their snapshot or their disk write. */
  get pending(): number {
    return this.pendingDefects;
  }

  /** Resolves once every defect submitted so far is on disk (or refused or lost). */
  settled(): Promise<void> {
    return this.enqueueChain.then(() => this.outbox.settled());
  }

  /**
   * Queues the defect event of `result` (and its snapshot). Never throws and never waits; the outbox's outcome is
   * counted when it settles.
   */
  submit(result: InspectionResult): void {
    const eventId = defectEventId(result);
    const cameraId = result.frame.cameraId;
    const topics = {
      defect: this.topics.camera(cameraId, "defect"),
      snapshot: this.topics.camera(cameraId, "snapshot"),
    };
    if (this.pendingDefects >= MAX_PENDING_DEFECTS) {
      this.counts.overflowed += 1;
      this.logger.error(
        { event_id: eventId, pending: this.pendingDefects },
        "defect event refused: too many pending writes",
      );
      return;
    }
    this.pendingDefects += 1;
    // Rendering starts now (bounded), but events are enqueued in submission order by chaining on the previous
    // enqueue, so a quick render cannot overtake a slow one. The chain orders the enqueue calls only: the disk
    // writes are awaited outside it, so the outbox can commit a burst of defects together.
    const snapshot = this.startSnapshot(result);
    const enqueued = this.enqueueChain.then(async () =>
      this.enqueueDefect(result, eventId, topics, await snapshot),
    );
    this.enqueueChain = enqueued.then(
      () => undefined,
      () => undefined,
    );
    enqueued
      .then(({ written }) => written)
      .catch((err: unknown) => {
        this.counts.notQueued += 1;
        this.logger.error({ event_id: eventId, err }, `defect event ${eventId} lost: could not queue it`);
      })
      .finally(() => {
        this.pendingDefects -= 1;
      });
  }

  private startSnapshot(result: InspectionResult): Promise<SnapshotOutcome> {
    if (this.config.snapshot === "none") return Promise.resolve({ jpeg: undefined });
    if (this.snapshotsRendering >= this.maxConcurrentSnapshots) {
      return Promise.resolve({ skipped: "snapshot renderer busy" });
    }
    this.snapshotsRendering += 1;
    return renderSnapshot(result.frame, result.map, result.threshold, {
      quality: this.config.snapshot_quality,
      regions: result.regions,
    })
      .then(
        (jpeg): SnapshotOutcome => ({ jpeg }),
        (err: unknown): SnapshotOutcome => ({ skipped: `snapshot rendering failed: ${errorMessage(err)}` }),
      )
      .finally(() => {
        this.snapshotsRendering -= 1;
      });
  }

  /**
   * Counts an event that went into the outbox without its snapshot (per camera and in all), when it is queued: so
   * the count is exactly the events sent without a picture, not those that were refused anyway.
   */
  private countSkippedSnapshot(cameraId: string, eventId: string, reason: string): void {
    this.counts.snapshotsSkipped += 1;
    const forCamera = (this.withoutSnapshot.get(cameraId) ?? 0) + 1;
    this.withoutSnapshot.set(cameraId, forCamera);
    // Under sustained overload this fires for every defect (17 of 2,241 at 8 cameras × 10 fps): one warning per
    // camera and reason a minute, with the running counts, the rest at debug.
    const kind = reason.startsWith("snapshot rendering failed") ? "failed" : reason;
    const admitted = this.skipRepeats.admit(`${kind} on ${cameraId}`);
    const meanwhile =
      admitted && admitted.unlogged > 0 ? `, ${admitted.unlogged} more since the last line` : "";
    this.logger[admitted ? "warn" : "debug"](
      {
        camera: cameraId,
        event_id: eventId,
        without_snapshot: forCamera,
        skipped: this.counts.snapshotsSkipped,
      },
      `defect event ${eventId} published without its snapshot: ${reason} (${forCamera} from camera ${cameraId} since start${meanwhile})`,
    );
  }

  /** Hands the event (and its snapshot, when it travels on its own topic) to the outbox; `written` settles on disk. */
  private enqueueDefect(
    result: InspectionResult,
    eventId: string,
    topics: { defect: string; snapshot: string },
    snapshot: SnapshotOutcome,
  ): { written: Promise<void> } {
    const jpeg = "jpeg" in snapshot ? snapshot.jpeg : undefined;
    const delivery: SnapshotDelivery = jpeg === undefined ? "none" : this.config.snapshot;
    const event = buildDefectPayload(result, delivery, delivery === "inline" ? jpeg : undefined);
    const messages: OutboxMessage[] = [
      {
        topic: topics.defect,
        payload: encodePayload("defect", event),
        qos: this.config.event_qos,
        retain: false,
        eventId,
        kind: "defect",
      },
    ];
    if (delivery === "topic" && jpeg !== undefined) {
      messages.push({
        topic: topics.snapshot,
        payload: encodePayload("snapshot", jpeg),
        qos: SNAPSHOT_QOS,
        retain: true,
        eventId,
        kind: "snapshot",
      });
    }
    // event and snapshot are one outbox entry: stored, refused or lost together, and counted once
    const written = this.outbox.enqueue(messages).then((outcome) => {
      if (outcome === "queued") {
        this.counts.queued += 1;
        if ("skipped" in snapshot)
          this.countSkippedSnapshot(result.frame.cameraId, eventId, snapshot.skipped);
      } else if (outcome === "overflow") this.counts.overflowed += 1;
      // "failed" is counted (and logged) by the outbox as lost
    });
    return { written };
  }
}
