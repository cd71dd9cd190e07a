/**
 * The MQTT sink: the daemon's MQTT API on one connection — results, defect events through the durable outbox,
 * snapshots, the retained status, and (with `mqtt.commands.enabled`) the operator's commands.
 */
import type { ResultBatch, ResultSink, SinkContext, SinkFactory, SinkHealth } from "../sink.js";
import { Topics } from "../topics.js";
import { MqttCommands } from "./commands.js";
import { Publisher, type PublisherStats } from "./publisher.js";

export class MqttSink implements ResultSink {
  readonly name = "mqtt";
  readonly durable = true;
  readonly publisher: Publisher;
  private readonly commands: MqttCommands | undefined;
  private readonly context: SinkContext;

  constructor(context: SinkContext) {
    const { config, control, logger, executor } = context;
    this.context = context;
    this.publisher = new Publisher(config.mqtt, logger);
    this.commands = config.mqtt.commands.enabled
      ? new MqttCommands({
          session: this.publisher,
          topics: new Topics(config.mqtt.prefix),
          control,
          logger,
          executor,
        })
      : undefined;
  }

  /** Opens the outbox and starts connecting (without waiting for the broker), then takes commands. */
  async start(): Promise<void> {
    await this.publisher.start();
    try {
      await this.commands?.start();
    } catch (err) {
      await this.publisher.stop();
      throw err;
    }
  }

  /** Stops taking commands, then publishes `stopped` and flushes the outbox within the publisher's deadline. */
  async stop(): Promise<void> {
    await this.commands?.stop();
    await this.publisher.stop();
  }

  deliver(batch: ResultBatch): void {
    for (const result of batch.results) this.publisher.publishResult(result);
  }

  /** Publishes the node's status; without this sink's own entry, which a message over MQTT makes moot. */
  statusChanged(): void {
    const report = this.context.node.statusReport();
    const { [this.name]: _self, ...outputs } = report.outputs;
    this.publisher.publishStatus({ ...report, outputs });
  }

  health(): SinkHealth {
    const stats: PublisherStats = this.publisher.stats();
    return {
      ok: stats.connected,
      ...(stats.brokerError !== undefined ? { detail: stats.brokerError } : {}),
      connection: { connected: stats.connected },
      counts: {
        queued: stats.outboxQueued,
        undeleted: stats.outboxUndeleted,
        overflowed: stats.eventsOverflowed,
        lost: stats.eventsLost,
        events_queued: stats.eventsQueued,
        events_delivered: stats.eventsDelivered,
        results_published: stats.resultsPublished,
        results_dropped: stats.resultsDropped,
        defects_without_snapshot: stats.snapshotsSkipped,
      },
      cameras: Object.fromEntries(
        Object.entries(stats.defectsWithoutSnapshot).map(([camera, count]) => [
          camera,
          { defects_without_snapshot: count },
        ]),
      ),
    };
  }
}

export const mqttSink: SinkFactory = {
  name: "mqtt",
  create: (context) => new MqttSink(context),
};
