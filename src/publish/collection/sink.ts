/**
 * The collection sink: keeps frames judged normal with margin as material for the next retrain
 * (`collection.enabled`; the operator's switch, `setCollection`, pauses it at run time).
 */
import type { ResultBatch, ResultSink, SinkContext, SinkFactory, SinkHealth } from "../sink.js";
import { Collector } from "./collector.js";

class CollectionSink implements ResultSink {
  readonly name = "collection";
  /** A rolling sample for retraining, not a delivery: a frame not saved is not owed to anyone. */
  readonly durable = false;
  private collector: Collector | undefined;

  constructor(private readonly context: SinkContext) {}

  async start(): Promise<void> {
    const { config, logger, node } = this.context;
    this.collector = await Collector.open(config.collection, logger.child({ component: "collector" }), {
      requestOriginal: (cameraId) => node.requestOriginal(cameraId),
    });
  }

  /** Saves in flight finish on their own (each is temp + rename: never half a file). */
  async stop(): Promise<void> {}

  deliver(batch: ResultBatch): void {
    const collector = this.collector;
    if (collector === undefined || !this.context.node.collecting()) return;
    const scores = batch.manifest?.validation_scores ?? [];
    for (const result of batch.results) collector.consider(result, scores);
  }

  health(): SinkHealth {
    const failing = this.collector?.failing;
    return {
      ok: this.collector !== undefined && failing === undefined,
      ...(failing !== undefined ? { detail: failing } : {}),
      counts: { ...(this.collector?.stats() ?? { saved: 0, failed: 0, dropped: 0, deleted: 0 }) },
    };
  }
}

export const collectionSink: SinkFactory = {
  name: "collection",
  create: (context) => (context.config.collection.enabled ? new CollectionSink(context) : undefined),
};
