import type { IClientPublishOptions, MqttClient } from "mqtt";
import type { MqttConfig } from "../../config/index.js";
import { settledBy } from "../../core/deadline.js";
import { errorMessage } from "../../core/errors.js";
import type { Logger } from "../../core/log.js";
import { RepeatLimiter } from "../../core/repeat-limiter.js";
import type { InspectionResult } from "../../core/result.js";
import { jsonTime } from "../../core/time.js";
import { DurableQueue, type OutboxMessage } from "../durable-queue.js";
import { MqttConnector } from "../mqtt-session.js";
import {
  buildResultPayload,
  encodePayload,
  type Qos,
  type SnapshotDelivery,
  type StatusPayload,
  type StatusReport,
  statusWill,
  Topics,
  topicMatches,
} from "../topics.js";
import { DefectWriter } from "./defect-writer.js";

export type SnapshotMode = SnapshotDelivery;

/** What the publisher needs beyond its `mqtt` config slice. */
export interface PublisherRuntime {
  /** Snapshots rendered at once; a defect beyond this is published without a picture (default 2). */
  maxConcurrentSnapshots?: number;
  /** How long {@link Publisher.stop} may take to publish `stopped` and flush the outbox (default 3000 ms). */
  stopTimeoutMs?: number;
}

export const DEFAULT_RESULT_QOS: Qos = 0;
const DEFAULT_STOP_TIMEOUT_MS = 3000;
/**
 * Bytes the socket may have buffered before results are dropped: on a slow link, results written faster than
 * they drain would otherwise queue without bound inside the socket.
 */
const MAX_RESULT_BACKLOG_BYTES = 1 << 20;

/** Part of stop()'s time kept for publishing `stopped` after the outbox drain. */
const STOPPED_STATUS_RESERVE_MS = 500;

/** Poll interval while stop() waits for the outbox to drain. */
const STOP_POLL_MS = 20;

export interface PublisherStats {
  connected: boolean;
  /** Why the last connection attempt failed (e.g. "Connection refused: Not authorized"), until one succeeds. */
  brokerError: string | undefined;
  resultsPublished: number;
  resultsDropped: number;
  /** Defect events written to the outbox. */
  eventsQueued: number;
  /** Defect events acknowledged by the broker. */
  eventsDelivered: number;
  /** Defect events refused because the outbox was full or too many were pending (`status.outbox.overflowed`). */
  eventsOverflowed: number;
  /**
   * Defect events lost: their outbox write failed, their stored file vanished or rotted, or they could not be
   * queued at all (`status.outbox.lost`).
   */
  eventsLost: number;
  snapshotsDelivered: number;
  /** Defects published without a snapshot because rendering was saturated or failed. */
  snapshotsSkipped: number;
  /** {@link snapshotsSkipped} per camera (cameras without any are left out). */
  defectsWithoutSnapshot: { [cameraId: string]: number };
  /** Defect events still waiting for their snapshot or their disk write (neither queued, refused nor lost yet). */
  eventsPending: number;
  /** Events in the outbox. */
  outboxQueued: number;
  /** Events the outbox itself refused as full (a part of {@link eventsOverflowed}). */
  outboxOverflowed: number;
  /** Delivered events whose outbox file could not be deleted yet (a read-only directory); retried, never resent. */
  outboxUndeleted: number;
}

/** What the connection side counts; the defect path ({@link DefectWriter}) and the outbox count the rest. */
type Counters = Pick<
  PublisherStats,
  "resultsPublished" | "resultsDropped" | "eventsDelivered" | "snapshotsDelivered"
>;

type Lifecycle = "new" | "running" | "stopping" | "stopped";

/**
 * What MQTT 5 says of a message besides its topic and payload: where a request wants its answer and the bytes that
 * answer must carry back. A 3.1.1 session, or a request without them, has neither.
 */
export interface MessageProperties {
  responseTopic?: string;
  correlationData?: Buffer;
}

/** Receives every message on a topic matching the filter it was subscribed with. */
export type MessageHandler = (topic: string, payload: Buffer, properties: MessageProperties) => void;

/**
 * What an output may do with the daemon's MQTT session: read topics and send its own (non-outbox) messages.
 * One connection per daemon, so a command answered over MQTT travels the same login, TLS and reconnect handling
 * as the results, and the broker's ACL sees one client.
 */
export interface MqttSession {
  /**
   * Subscribes `filter` (MQTT wildcards allowed) now if connected and again after every reconnect (the session
   * is clean, so the broker forgets subscriptions with the connection). Returns a function that unsubscribes.
   */
  subscribe(filter: string, qos: Qos, handler: MessageHandler): () => void;
  /**
   * Publishes one message now, not retained, without the outbox: resolves true once sent (QoS 0) or acknowledged,
   * false when it was not sent because the client is offline or stopping (it is not queued for later) or the broker
   * refused it (MQTT 5 says so in its PUBACK: an ACL). `correlationData` goes out as MQTT 5's Correlation Data.
   */
  publishMessage(topic: string, payload: Buffer, qos: Qos, correlationData?: Buffer): Promise<boolean>;
}

interface Subscription {
  qos: Qos;
  handler: MessageHandler;
}

/**
 * Publishes inspection results and defect events to MQTT.
 *
 * - Results go straight to the client when connected and are dropped (and counted) otherwise.
 * - Defect events and their snapshots are first written to the durable {@link DurableQueue}, then a single drain loop
 *   sends the head, waits for the broker's acknowledgement, acks the outbox and moves on. One message in flight
 *   at a time keeps delivery strictly ordered and the code simple; defects are rare enough that one round trip
 *   each is plenty. While disconnected the loop waits for `connect`.
 * - `<prefix>/status` is retained: the last will says `offline`, and `online` is republished on every connect
 *   (a broker restarted without persistence has forgotten it); `stopped` on a clean {@link stop}.
 *
 * Nothing on the result path blocks or throws: capture and inference must never stall on the broker.
 */
export class Publisher implements MqttSession {
  private readonly config: MqttConfig;
  private readonly logger: Logger;
  private readonly rootLogger: Logger;
  private readonly connector: MqttConnector;
  private readonly topics: Topics;
  private readonly maxConcurrentSnapshots: number | undefined;
  private readonly stopTimeoutMs: number;
  private lifecycle: Lifecycle = "new";
  private client: MqttClient | undefined;
  private outbox: DurableQueue | undefined;
  private readonly drainAbort = new AbortController();
  private drainTask: Promise<void> = Promise.resolve();
  private stopTask: Promise<void> | undefined;
  private defects: DefectWriter | undefined;
  private lastReport: StatusReport = {
    model_version: null,
    fps: 0,
    dropped_frames: 0,
    cameras: {},
    outputs: {},
    recipe: null,
  };
  /** A result the client refuses (a camera id that is no valid topic level) repeats every frame: once a minute. */
  private readonly refusedResults = new RepeatLimiter();
  private readonly drainFailures = new RepeatLimiter();
  private readonly subscriptions = new Map<string, Subscription>();
  private readonly counters: Counters = {
    resultsPublished: 0,
    resultsDropped: 0,
    eventsDelivered: 0,
    snapshotsDelivered: 0,
  };

  /** Connects nothing yet. `config` is the validated `mqtt` slice (the schema guarantees its ranges). */
  constructor(config: MqttConfig, logger: Logger, runtime: PublisherRuntime = {}) {
    this.config = config;
    this.rootLogger = logger;
    this.logger = logger.child({ component: "publisher" });
    this.connector = new MqttConnector({
      what: "MQTT",
      url: config.url,
      clientId: config.client_id,
      broker: config,
      reconnectPeriodMs: config.reconnect_period_ms,
      protocol: { version: config.protocol_version, key: "mqtt.protocol_version" },
      logger: this.logger,
      errorContext: () => ({ outbox_queued: this.outbox?.size ?? 0 }),
    });
    this.topics = new Topics(config.prefix);
    this.maxConcurrentSnapshots = runtime.maxConcurrentSnapshots;
    this.stopTimeoutMs = runtime.stopTimeoutMs ?? DEFAULT_STOP_TIMEOUT_MS;
  }

  /**
   * Opens the outbox (resuming what an earlier run left), reads TLS files and starts connecting. Resolves without
   * waiting for the broker: the daemon must run, and queue defects, while the broker is down.
   */
  async start(): Promise<void> {
    if (this.lifecycle !== "new") throw new Error(`Publisher.start() called when ${this.lifecycle}`);
    await this.connector.prepare();
    this.outbox = await DurableQueue.open(this.config.outbox, this.rootLogger);
    this.defects = new DefectWriter(this.config, this.outbox, this.topics, this.logger, {
      ...(this.maxConcurrentSnapshots ? { maxConcurrentSnapshots: this.maxConcurrentSnapshots } : {}),
    });
    let client: MqttClient;
    try {
      client = this.connector.connect({
        topic: this.topics.status(),
        payload: encodePayload("status", statusWill()),
        qos: 1,
        retain: true,
      });
    } catch (err) {
      await this.outbox.close();
      throw err;
    }
    this.lifecycle = "running";
    this.client = client;
    client.on("connect", () => this.onConnect());
    client.on("close", () => this.onClose());
    client.on("message", (topic, payload, packet) => this.onMessage(topic, payload, packet.properties));
    this.drainTask = this.drainLoop(client, this.outbox, this.drainAbort.signal);
  }

  get isConnected(): boolean {
    return this.client?.connected === true;
  }

  /** The underlying client, for diagnostics and tests. Publish through the Publisher, never through this. */
  get mqttClient(): MqttClient | undefined {
    return this.client;
  }

  stats(): PublisherStats {
    const defects = this.defects?.counts ?? { queued: 0, overflowed: 0, notQueued: 0, snapshotsSkipped: 0 };
    return {
      connected: this.isConnected,
      brokerError: this.connector.lastError,
      ...this.counters,
      eventsQueued: defects.queued,
      eventsOverflowed: defects.overflowed,
      snapshotsSkipped: defects.snapshotsSkipped,
      defectsWithoutSnapshot: Object.fromEntries(this.defects?.withoutSnapshot ?? []),
      eventsLost: defects.notQueued + (this.outbox?.lost ?? 0),
      eventsPending: this.defects?.pending ?? 0,
      outboxQueued: this.outbox?.size ?? 0,
      outboxOverflowed: this.outbox?.overflowed ?? 0,
      outboxUndeleted: this.outbox?.undeleted ?? 0,
    };
  }

  /**
   * Publishes the compact result (an error verdict as such, never as OK) and, for a defective frame, queues the defect event (and its snapshot). Never
   * throws and never waits: snapshot rendering and disk writes run in the background, reading `result.frame.rgb`
   * and `result.map` later, so the caller must not reuse those buffers for another frame.
   */
  publishResult(result: InspectionResult): void {
    try {
      if (this.lifecycle !== "running") {
        this.counters.resultsDropped += 1;
        return;
      }
      this.sendResult(result);
      if (result.verdict === "defect") this.defects!.submit(result);
    } catch (err) {
      this.counters.resultsDropped += 1;
      this.logRefusedResult(result.frame?.cameraId, err);
    }
  }

  subscribe(filter: string, qos: Qos, handler: MessageHandler): () => void {
    if (this.subscriptions.has(filter))
      throw new Error(`Publisher.subscribe: ${filter} is already subscribed`);
    const subscription: Subscription = { qos, handler };
    this.subscriptions.set(filter, subscription);
    if (this.lifecycle === "running" && this.isConnected) this.sendSubscribe(filter, qos);
    return () => {
      if (this.subscriptions.get(filter) !== subscription) return;
      this.subscriptions.delete(filter);
      if (this.client?.connected) this.client.unsubscribe(filter);
    };
  }

  publishMessage(topic: string, payload: Buffer, qos: Qos, correlationData?: Buffer): Promise<boolean> {
    const client = this.client;
    // A reply queued while offline would reach its requester late, after a timeout it already acted on.
    if (this.lifecycle !== "running" || client === undefined || !client.connected) {
      return Promise.resolve(false);
    }
    const properties = correlationData === undefined ? undefined : { correlationData };
    return publishAcknowledged(client, { topic, payload, qos, retain: false }, properties).then(
      () => true,
      (err: unknown) => {
        this.logger.warn({ topic, err }, "could not publish message");
        return false;
      },
    );
  }

  /** Publishes `online` with `report` now if connected; the report is also what every later reconnect sends. */
  publishStatus(report: StatusReport): void {
    this.lastReport = report;
    if (this.lifecycle === "running" && this.isConnected) {
      this.sendStatus("online").catch(() => undefined); // sendStatus logs its own failures
    }
  }

  /**
   * Publishes `stopped`, lets pending defects reach the disk and flushes the outbox for up to `stopTimeoutMs`,
   * then disconnects cleanly (so the broker does not fire the last will). Undelivered events stay on disk for the
   * next start. Never throws.
   */
  stop(): Promise<void> {
    if (this.stopTask === undefined) {
      if (this.lifecycle === "running") {
        this.stopTask = this.shutDown();
      } else {
        this.lifecycle = "stopped";
        this.stopTask = Promise.resolve();
      }
    }
    return this.stopTask;
  }

  private async shutDown(): Promise<void> {
    this.lifecycle = "stopping";
    const deadline = Date.now() + this.stopTimeoutMs;
    const client = this.client!;
    const outbox = this.outbox!;
    try {
      // every defect submitted so far is handed to the outbox, then on disk, before the drain below
      await settledBy(this.defects!.settled(), deadline);
      // drain first, so that `stopped` reports what is really left on disk; keep time for that last message
      const drainDeadline = deadline - Math.min(STOPPED_STATUS_RESERVE_MS, this.stopTimeoutMs / 4);
      while (outbox.size > 0 && client.connected && Date.now() < drainDeadline) await sleep(STOP_POLL_MS);
      if (client.connected) await settledBy(this.sendStatus("stopped"), deadline);
      if (outbox.size > 0) {
        this.logger.warn({ queued: outbox.size }, "publisher stopping with undelivered events; kept on disk");
      }
      this.drainAbort.abort();
      await this.drainTask;
      await this.disconnect(client, deadline);
      await outbox.close();
    } catch (err) {
      this.logger.error({ err }, "publisher stop failed");
    } finally {
      this.lifecycle = "stopped";
    }
  }

  private sendResult(result: InspectionResult): void {
    const topic = this.topics.camera(result.frame.cameraId, "result");
    const client = this.client!;
    const backlog = client.stream?.writableLength ?? 0;
    if (!client.connected || backlog > MAX_RESULT_BACKLOG_BYTES) {
      this.counters.resultsDropped += 1;
      return;
    }
    const payload = encodePayload("result", buildResultPayload(result));
    client.publish(topic, payload, { qos: this.config.result_qos, retain: false }, (err) => {
      if (err) this.counters.resultsDropped += 1;
      else this.counters.resultsPublished += 1;
    });
  }

  private async drainLoop(client: MqttClient, outbox: DurableQueue, signal: AbortSignal): Promise<void> {
    // How far into the head entry the broker has acknowledged, so a retry after a failed publish resumes with
    // the next message of the entry instead of resending the ones already delivered.
    let progress = { seq: -1, acked: 0 };
    while (!signal.aborted) {
      try {
        const head = await outbox.peek();
        if (head === undefined) {
          await outbox.waitForMessage(signal);
          continue;
        }
        if (!client.connected) {
          await nextConnect(client, signal);
          continue;
        }
        if (progress.seq !== head.seq) progress = { seq: head.seq, acked: 0 };
        // The entry's messages go in order (the event, then its snapshot); the entry is acked once all are.
        // mqtt.js keeps an unacknowledged QoS 1/2 publish across a reconnect and resends it, calling back once
        // the new connection acknowledges it, so waiting here survives broker restarts without a duplicate send.
        while (progress.acked < head.messages.length) {
          const message = head.messages[progress.acked]!;
          await abortable(publishAcknowledged(client, message), signal);
          progress.acked += 1;
          this.countDelivered(message);
        }
        await outbox.ack(head.seq);
      } catch (err) {
        if (signal.aborted) break;
        // With MQTT 5 a broker refusing the event (an ACL) says so on every retry: once a minute is enough.
        const admitted = this.drainFailures.admit(errorMessage(err));
        if (admitted !== undefined) {
          this.logger.warn(
            { err, unlogged: admitted.unlogged, queued: outbox.size },
            "outbox drain: publish failed; retrying (the event stays queued)",
          );
        }
        await sleep(this.config.reconnect_period_ms, signal);
      }
    }
  }

  private countDelivered(message: OutboxMessage): void {
    if (message.kind === "defect") this.counters.eventsDelivered += 1;
    else if (message.kind === "snapshot") this.counters.snapshotsDelivered += 1;
    this.logger.debug({ event_id: message.eventId, topic: message.topic }, "outbox message delivered");
  }

  private onConnect(): void {
    this.logger.info(
      { url: this.connector.safeUrl, client_id: this.config.client_id },
      "connected to MQTT broker",
    );
    if (this.lifecycle === "running") this.sendStatus("online").catch(() => undefined);
    for (const [filter, { qos }] of this.subscriptions) this.sendSubscribe(filter, qos);
  }

  private sendSubscribe(filter: string, qos: Qos): void {
    this.client!.subscribe(filter, { qos }, (err, granted) => {
      // A refusal is a SUBACK return code of 0x80 or more, not an error. (mosquitto 2.0 grants a subscription its
      // ACL forbids and then delivers nothing on it, so there only the ACL file tells.)
      const refused = err ?? granted?.find((grant) => grant.qos >= 0x80);
      if (refused !== undefined) {
        this.logger.error(
          { topic: filter, err: err ? errorMessage(err) : "refused by the broker (ACL?)" },
          "MQTT subscription failed",
        );
      } else {
        this.logger.debug({ topic: filter }, "subscribed");
      }
    });
  }

  /** Hands a message to the handlers whose filter matches; a throwing handler is logged and the others still run. */
  private onMessage(topic: string, payload: Buffer, packetProperties: MessageProperties | undefined): void {
    const properties: MessageProperties = {};
    if (packetProperties?.responseTopic !== undefined)
      properties.responseTopic = packetProperties.responseTopic;
    if (packetProperties?.correlationData !== undefined)
      properties.correlationData = packetProperties.correlationData;
    for (const [filter, { handler }] of this.subscriptions) {
      if (!topicMatches(filter, topic)) continue;
      try {
        handler(topic, payload, properties);
      } catch (err) {
        this.logger.error({ topic, err }, "MQTT message handler failed");
      }
    }
  }

  private onClose(): void {
    if (this.lifecycle === "running" && this.connector.lastError === undefined) {
      this.logger.warn({ url: this.connector.safeUrl }, "MQTT connection closed; reconnecting");
    }
  }

  private sendStatus(state: "online" | "stopped"): Promise<void> {
    const client = this.client!;
    const stats = this.stats();
    const status: StatusPayload = {
      state,
      ...this.lastReport,
      outbox: { queued: this.outbox?.size ?? 0, overflowed: stats.eventsOverflowed, lost: stats.eventsLost },
      defects_without_snapshot: stats.defectsWithoutSnapshot,
      uptime_s: Math.floor(process.uptime()),
      ts: jsonTime(Date.now()),
    };
    const message: OutboxMessage = {
      topic: this.topics.status(),
      payload: encodePayload("status", status),
      qos: 1,
      retain: true,
    };
    return publishAcknowledged(client, message).catch((err: unknown) => {
      this.logger.warn({ state, err }, "could not publish status");
    });
  }

  private async disconnect(client: MqttClient, deadline: number): Promise<void> {
    // A clean DISCONNECT tells the broker not to publish the last will, so `stopped` stays retained.
    const ended = new Promise<void>((resolve) => client.end(!client.connected, {}, () => resolve()));
    if (!(await settledBy(ended, Math.max(deadline, Date.now() + 200)))) {
      client.end(true);
    }
  }

  private logRefusedResult(cameraId: string | undefined, err: unknown): void {
    const admitted = this.refusedResults.admit(`${cameraId ?? ""}: ${errorMessage(err)}`);
    if (admitted === undefined) return;
    this.logger.error(
      { camera: cameraId, err, unlogged: admitted.unlogged },
      admitted.unlogged > 0
        ? `result not published (${admitted.unlogged} more since the last line)`
        : "result not published",
    );
  }
}

/**
 * Resolves once the broker acknowledged `message` (for QoS 0: once it was written to the socket); rejects when it
 * refused it (an MQTT 5 PUBACK reason code of 0x80 or more, e.g. 0x87 "Not authorized" from an ACL).
 */
function publishAcknowledged(
  client: MqttClient,
  message: OutboxMessage,
  properties?: IClientPublishOptions["properties"],
): Promise<void> {
  const options: IClientPublishOptions = { qos: message.qos, retain: message.retain };
  if (properties !== undefined) options.properties = properties;
  return new Promise((resolve, reject) => {
    client.publish(message.topic, message.payload, options, (err) => {
      if (err) reject(err);
      else resolve();
    });
  });
}

/**
 * Resolves on the client's next `connect` or when `signal` aborts. Unlike `events.once`, connection errors while
 * waiting do not reject: they are the normal state of a broker that is down, and are logged elsewhere.
 */
function nextConnect(client: MqttClient, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      client.removeListener("connect", done);
      signal.removeEventListener("abort", done);
      resolve();
    };
    client.once("connect", done);
    signal.addEventListener("abort", done, { once: true });
  });
}

function abortable<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener("abort", onAbort);
        resolve(value);
      },
      (err: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(err);
      },
    );
  });
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}
