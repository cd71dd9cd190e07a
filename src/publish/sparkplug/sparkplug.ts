/**
 * The Sparkplug B 3.0 edge node: SCADA sees the daemon as an edge node (`spBv1.0/<group>/N…/<node>`) with one
 * device per camera (`spBv1.0/<group>/D…/<node>/<camera>`).
 *
 * It keeps its own MQTT session, apart from the publisher's, because Sparkplug dictates the session: a clean
 * session, the NDEATH as the will (QoS 1, not retained) carrying a bdSeq that grows with every CONNECT across
 * restarts, NCMD/DCMD subscribed before the NBIRTH, and, with a primary host, no births before its STATE says
 * online. mqtt.js reconnects with the options of the first CONNECT, so the node disables that and opens a new
 * client (with a new will) for each session itself, through the same {@link MqttConnector} as the publisher (one set
 * of connect options, one handling of a broker that keeps refusing).
 *
 * Report by exception: counters go out at most once per `report_interval_ms`, only those that changed; each
 * defect goes out at once as its own DDATA stamped with its capture time. While the node is not born (broker
 * unreachable, primary host offline) defects are held in an {@link DurableQueue} on disk and replayed with
 * `is_historical` after the next births.
 */
import type { MqttClient } from "mqtt";
import { get as sparkplugNamespace } from "sparkplug-payload";
import type { TypeStr, UMetric, UPayload } from "sparkplug-payload/lib/sparkplugbpayload.js";
import type { MqttConfig, SparkplugConfig } from "../../config/index.js";
import { settledWithin } from "../../core/deadline.js";
import { errorMessage, StpmdError } from "../../core/errors.js";
import type { Logger } from "../../core/log.js";
import { RepeatLimiter } from "../../core/repeat-limiter.js";
import { defectiveFlag, type InspectionResult, type LastResult, type Verdict } from "../../core/result.js";
import {
  type CameraSnapshot,
  ControlError,
  type LineControl,
  type NodeSnapshot,
  type Requester,
} from "../control.js";
import { DurableQueue } from "../durable-queue.js";
import { MqttConnector } from "../mqtt-session.js";
import type { ResultBatch, ResultSink, SinkHealth } from "../sink.js";
import { defectEventId } from "../topics.js";
import { BdSeqStore } from "./bdseq.js";

const NAMESPACE = "spBv1.0";
const codec = sparkplugNamespace(NAMESPACE)!; // null only for a namespace the package does not know

/** seq runs 0–255 over every message of a session after the NBIRTH (which has 0), then wraps. */
const SEQ_MODULO = 256;
/** How long stop() waits for the NDEATH's PUBACK before disconnecting anyway. */
const STOP_TIMEOUT_MS = 2000;
/** The bdSeq metric's datatype: Int64, as the specification's payload descriptions give it (was UInt64). */
const BDSEQ_TYPE = "Int64";
/** Metrics of the NBIRTH that no report repeats: bdSeq and the two Node Control commands. */
const NODE_CONTROL_METRICS = 3;
/** Bytes the socket may have buffered before a DDATA/NDATA is dropped rather than queued in memory. */
const MAX_BACKLOG_BYTES = 1 << 20;

export const NODE_REBIRTH = "Node Control/Rebirth";
export const NODE_RELOAD = "Node Control/Reload Model";
export const DEVICE_THRESHOLD = "Threshold";
export const DEVICE_ENABLED = "Enabled";
/**
 * A camera's candidate model commands (issue 22, docs/candidates.md): Boolean DCMD metrics, true = do it (false is
 * ignored), declared false in every DBIRTH so a host knows it may write them. `Model/Shadow` is the shadow run's
 * state, written true or false to start or stop it.
 */
export const MODEL_COMMANDS = {
  retrain: "Model/Retrain",
  cancelRetrain: "Model/Cancel Retrain",
  shadow: "Model/Shadow",
  promote: "Model/Promote",
  rollback: "Model/Rollback",
  discard: "Model/Discard",
} as const;
/** The publisher's sink, whose session `Connection/MQTT` reports. */
const MQTT_SINK = "mqtt";
/** The recipe in force (String, empty: none): a node metric in every NBIRTH, writable by NCMD (docs/recipes.md). */
export const NODE_RECIPE = "Recipe";

type Value = number | boolean | string | null;

/** A metric as the node builds it: always named (no aliases), with its Sparkplug datatype. */
export interface Metric {
  name: string;
  type: TypeStr;
  value: Value;
  timestamp?: number;
}

/** The last result of a camera as the node reports it under `Last/…`. */
interface LastMetrics {
  captureTs: number;
  seq: number;
  /** Null (is_null) when the score was not a finite number. */
  score: number | null;
  threshold: number;
  verdict: Verdict;
  /** Null (is_null) with the verdict `error`: the frame was not judged, so it is neither defective nor good. */
  defective: boolean | null;
  eventId: string;
  partId: string;
  regions: number;
  /** The recipe the frame was judged under; empty: the camera's own settings. */
  recipe: string;
}

/** The topics of one edge node. Group, node and camera ids are topic levels the config has validated. */
export class SparkplugTopics {
  readonly group: string;
  readonly node: string;

  constructor(group: string, node: string) {
    this.group = group;
    this.node = node;
  }

  nodeTopic(verb: "NBIRTH" | "NDATA" | "NDEATH" | "NCMD"): string {
    return `${NAMESPACE}/${this.group}/${verb}/${this.node}`;
  }

  deviceTopic(verb: "DBIRTH" | "DDATA" | "DDEATH" | "DCMD", camera: string): string {
    return `${NAMESPACE}/${this.group}/${verb}/${this.node}/${camera}`;
  }

  /** DCMD for every camera, one subscription. */
  deviceCommands(): string {
    return `${NAMESPACE}/${this.group}/DCMD/${this.node}/+`;
  }

  static state(hostId: string): string {
    return `${NAMESPACE}/STATE/${hostId}`;
  }
}

/** Where and as whom the node connects: `sparkplug.url` and credentials, else the publisher's. */
export function sparkplugBroker(
  sparkplug: SparkplugConfig,
  mqtt: MqttConfig,
): { url: string; username?: string; password?: string; tls: MqttConfig["tls"]; clientId: string } {
  const own = sparkplug.username !== undefined;
  const username = own ? sparkplug.username : mqtt.username;
  const password = own ? sparkplug.password : mqtt.password;
  return {
    url: sparkplug.url ?? mqtt.url,
    ...(username !== undefined ? { username } : {}),
    ...(password !== undefined ? { password } : {}),
    tls: mqtt.tls,
    // Not the publisher's id: two sessions under one id knock each other off the broker.
    clientId: `${mqtt.client_id}-sparkplug`,
  };
}

export interface SparkplugOptions {
  sparkplug: SparkplugConfig;
  mqtt: MqttConfig;
}

type Lifecycle = "new" | "running" | "stopped";

export class SparkplugNode implements ResultSink {
  readonly name = "sparkplug";
  /** Defects are held in the history while the node is not born. */
  readonly durable = true;
  private readonly config: SparkplugConfig;
  private readonly broker: ReturnType<typeof sparkplugBroker>;
  private readonly control: LineControl;
  private readonly logger: Logger;
  private readonly rootLogger: Logger;
  private readonly topics: SparkplugTopics;
  private readonly stateTopic: string | undefined;
  private readonly bdSeqStore: BdSeqStore;
  private readonly by: Requester = { via: "sparkplug" };
  private lifecycle: Lifecycle = "new";
  private readonly connector: MqttConnector;
  private history: DurableQueue | undefined;
  private client: MqttClient | undefined;
  private bdSeq = 0;
  /**
   * Whether the broker answered the CONNECT that carried {@link bdSeq} (a CONNACK, accepted or refused). Sparkplug
   * counts CONNECT packets: an attempt that never reached a broker (connection refused, DNS, TLS, timeout) keeps
   * its bdSeq for the next one. Measured before: a 17 s outage took bdSeq from 1 to 18, so a ~4-minute outage
   * wrapped the 0–255 range and reused values a host had already seen.
   */
  private bdSeqUsed = true;
  private seq = 0;
  private born = false;
  /** Whether this session's SUBACK for NCMD/DCMD (and STATE) arrived: no birth before it. */
  private subscribed = false;
  /** The primary host's last STATE this session: undefined until the retained one arrived. */
  private hostOnline: boolean | undefined;
  /** Timestamp of the newest STATE seen; an older one arriving later is stale and ignored (Sparkplug 3.0). */
  private lastStateTs = Number.NEGATIVE_INFINITY;
  private reportTimer: NodeJS.Timeout | undefined;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private replaying: Promise<void> | undefined;
  /** What the host was last told, metric by metric, so a report carries only the changes. */
  private nodeSent = new Map<string, Value>();
  private readonly devicesSent = new Map<string, Map<string, Value>>();
  private readonly last = new Map<string, LastMetrics>();
  private backlogDrops = 0;
  /** Sparkplug sessions (accepted CONNECTs) since start, and when the current one began: `Connection/…`. */
  private sessions = 0;
  private sessionStart = 0;
  /** A backed-up socket drops every report until it drains: one line a minute. */
  private readonly backlogRepeats = new RepeatLimiter();

  constructor(options: SparkplugOptions, control: LineControl, logger: Logger) {
    this.config = options.sparkplug;
    if (this.config.group_id === undefined) {
      throw new StpmdError("ERR_CONFIG_INVALID", "sparkplug.group_id is required when sparkplug is enabled");
    }
    this.broker = sparkplugBroker(options.sparkplug, options.mqtt);
    this.control = control;
    this.rootLogger = logger;
    this.logger = logger.child({ component: "sparkplug" });
    this.topics = new SparkplugTopics(this.config.group_id, this.config.edge_node_id);
    this.stateTopic =
      this.config.primary_host_id === undefined
        ? undefined
        : SparkplugTopics.state(this.config.primary_host_id);
    this.bdSeqStore = new BdSeqStore(this.config.bdseq_file, this.logger);
    this.connector = new MqttConnector({
      what: "Sparkplug",
      url: this.broker.url,
      clientId: this.broker.clientId,
      broker: this.broker,
      // One CONNECT per client: a reconnect needs a new will with the next bdSeq, so the node reconnects itself.
      reconnectPeriodMs: 0,
      logger: this.logger,
      errorContext: () => ({ bd_seq: this.bdSeq }),
    });
  }

  /** Whether NBIRTH and the DBIRTHs of this session are out (for diagnostics and tests). */
  get isBorn(): boolean {
    return this.born;
  }

  /** The bdSeq of the current (or last) session. */
  get currentBdSeq(): number {
    return this.bdSeq;
  }

  /** Opens the history and starts connecting; resolves without waiting for the broker. */
  async start(): Promise<void> {
    if (this.lifecycle !== "new") throw new Error(`SparkplugNode.start() called when ${this.lifecycle}`);
    await this.connector.prepare();
    this.history = await DurableQueue.open(this.config.history, this.rootLogger);
    this.lifecycle = "running";
    try {
      await this.openSession();
    } catch (err) {
      this.lifecycle = "stopped";
      await this.history.close();
      throw err;
    }
  }

  /** Publishes NDEATH, disconnects cleanly (so the broker does not fire the will) and closes the history. */
  async stop(): Promise<void> {
    if (this.lifecycle !== "running") {
      this.lifecycle = "stopped";
      return;
    }
    this.lifecycle = "stopped";
    clearTimeout(this.reconnectTimer);
    this.endBirth();
    const client = this.client;
    this.client = undefined;
    if (client !== undefined) await this.endSession(client);
    await this.replaying;
    await this.history?.close();
  }

  deliver(batch: ResultBatch): void {
    for (const result of batch.results) this.onResult(result);
  }

  health(): SinkHealth {
    const detail = this.born
      ? undefined
      : (this.connector.lastError ??
        (this.stateTopic !== undefined && this.client?.connected === true && this.hostOnline !== true
          ? "waiting for the primary host"
          : undefined));
    return {
      ok: this.born,
      ...(detail !== undefined ? { detail } : {}),
      connection: { connected: this.client?.connected === true, born: this.born },
      counts: {
        queued: this.history?.size ?? 0,
        overflowed: this.history?.overflowed ?? 0,
        lost: this.history?.lost ?? 0,
      },
    };
  }

  onResult(result: InspectionResult): void {
    try {
      const camera = result.frame.cameraId;
      const last = toLastMetrics({
        captureTs: result.frame.captureTs,
        seq: result.frame.seq,
        score: result.score,
        threshold: result.threshold,
        verdict: result.verdict,
        ...(result.verdict === "defect" ? { eventId: defectEventId(result) } : {}),
        ...(result.frame.partId !== undefined ? { partId: result.frame.partId } : {}),
        regions: result.regions.length,
        ...(result.frame.recipe !== undefined ? { recipe: result.frame.recipe } : {}),
      });
      this.last.set(camera, last);
      // an error verdict goes out with the next report (Last/Verdict, Errors), not held like a defect
      if (result.verdict === "defect" && this.lifecycle === "running") this.reportDefect(camera, last);
    } catch (err) {
      this.logger.error({ err, camera: result.frame?.cameraId }, "sparkplug: result not reported");
    }
  }

  // ---- session ----

  private async openSession(): Promise<void> {
    if (this.lifecycle !== "running") return;
    if (this.bdSeqUsed) {
      this.bdSeq = await this.bdSeqStore.next();
      this.bdSeqUsed = false;
    }
    if (this.lifecycle !== "running") return;
    this.hostOnline = undefined;
    this.subscribed = false;
    const client = this.connector.connect({
      topic: this.topics.nodeTopic("NDEATH"),
      payload: this.encode(this.deathPayload()),
      qos: 1,
      retain: false,
    });
    this.client = client;
    client.on("packetreceive", (packet) => {
      if (packet.cmd === "connack" && client === this.client) this.bdSeqUsed = true;
    });
    client.on("connect", () => this.onConnect(client));
    client.on("message", (topic, payload) => this.onMessage(client, topic, payload));
    client.on("close", () => this.onClose(client));
  }

  private onConnect(client: MqttClient): void {
    if (client !== this.client) return;
    this.sessions += 1;
    this.sessionStart = Date.now();
    this.logger.info(
      { url: this.connector.safeUrl, bd_seq: this.bdSeq, client_id: this.broker.clientId },
      "sparkplug: connected",
    );
    const subscriptions: Record<string, { qos: 1 }> = {
      [this.topics.nodeTopic("NCMD")]: { qos: 1 },
      [this.topics.deviceCommands()]: { qos: 1 },
    };
    if (this.stateTopic !== undefined) subscriptions[this.stateTopic] = { qos: 1 };
    client.subscribe(subscriptions, (err, granted) => {
      if (client !== this.client) return;
      if (err) {
        this.logger.error({ err }, "sparkplug: subscribing to NCMD/DCMD failed; reconnecting");
        client.end(true);
        return;
      }
      this.subscribed = true;
      const refused = (granted ?? []).filter((grant) => grant.qos === 128).map((grant) => grant.topic);
      if (refused.length > 0) {
        this.logger.error({ topics: refused }, "sparkplug: the broker refused subscriptions (ACL?)");
      }
      // Births only now: a command sent in reply to them must find the subscription in place.
      if (this.stateTopic === undefined) this.birth();
      else if (this.hostOnline === true) this.birth();
      else
        this.logger.info(
          { primary_host: this.config.primary_host_id },
          "sparkplug: waiting for the primary host",
        );
    });
  }

  private onClose(client: MqttClient): void {
    if (client !== this.client) return;
    this.client = undefined;
    client.removeAllListeners("message");
    this.endBirth();
    if (this.lifecycle !== "running") return;
    this.reconnectTimer = setTimeout(() => {
      this.openSession().catch((err: unknown) => {
        this.logger.error({ err }, "sparkplug: could not open a session");
      });
    }, this.config.reconnect_period_ms);
  }

  /** Ends a session on purpose: NDEATH first (the broker drops the will on a clean DISCONNECT), then DISCONNECT. */
  private async endSession(client: MqttClient): Promise<void> {
    if (client.connected) {
      await settledWithin(
        new Promise<void>((resolve) => {
          client.publish(
            this.topics.nodeTopic("NDEATH"),
            this.encode(this.deathPayload()),
            { qos: 1, retain: false },
            () => resolve(),
          );
        }),
        STOP_TIMEOUT_MS,
      );
    }
    await settledWithin(
      new Promise<void>((resolve) => client.end(false, {}, () => resolve())),
      STOP_TIMEOUT_MS,
    );
    client.end(true);
  }

  private endBirth(): void {
    this.born = false;
    clearInterval(this.reportTimer);
    this.reportTimer = undefined;
  }

  // ---- births and reports ----

  /** NBIRTH (seq 0) and a DBIRTH per camera (enabled or not), then the reports and the replay of held defects. */
  private birth(): void {
    const client = this.client;
    if (client === undefined || !client.connected || this.lifecycle !== "running") return;
    const snapshot = this.control.snapshot();
    const now = Date.now();
    const nodeMetrics = [
      { name: "bdSeq", type: BDSEQ_TYPE, value: this.bdSeq },
      { name: NODE_REBIRTH, type: "Boolean", value: false },
      { name: NODE_RELOAD, type: "Boolean", value: false },
      ...this.nodeMetrics(snapshot),
    ] satisfies Metric[];
    this.seq = 0;
    this.publish(this.topics.nodeTopic("NBIRTH"), { timestamp: now, seq: 0, metrics: nodeMetrics }, true);
    this.nodeSent = new Map(nodeMetrics.map((metric) => [metric.name, metric.value]));
    this.devicesSent.clear();
    for (const camera of snapshot.cameras) this.deviceBirth(camera, now);
    this.born = true;
    this.logger.info(
      { bd_seq: this.bdSeq, devices: [...this.devicesSent.keys()] },
      "sparkplug: births published",
    );
    clearInterval(this.reportTimer);
    this.reportTimer = setInterval(() => this.report(), this.config.report_interval_ms);
    this.replay();
  }

  private deviceBirth(camera: CameraSnapshot, now: number): void {
    const metrics = this.deviceMetrics(camera);
    this.publish(
      this.topics.deviceTopic("DBIRTH", camera.id),
      { timestamp: now, seq: this.nextSeq(), metrics },
      true,
    );
    this.devicesSent.set(camera.id, new Map(metrics.map((metric) => [metric.name, metric.value])));
  }

  private deviceDeath(camera: string): void {
    this.publish(this.topics.deviceTopic("DDEATH", camera), { timestamp: Date.now(), seq: this.nextSeq() });
    this.devicesSent.delete(camera);
  }

  /** The periodic report: changed node metrics as NDATA, cameras born or dead, changed device metrics as DDATA. */
  private report(): void {
    try {
      if (!this.born) return;
      const snapshot = this.control.snapshot();
      const now = Date.now();
      const nodeMetrics = this.nodeMetrics(snapshot);
      const declared =
        nodeMetrics.length + NODE_CONTROL_METRICS === this.nodeSent.size &&
        nodeMetrics.every((metric) => this.nodeSent.has(metric.name));
      if (!declared) {
        // a metric the NBIRTH did not declare, or one it declared that is gone (a model added or removed by a
        // reload), needs a new birth
        this.logger.info("sparkplug: the node's metrics changed; rebirth");
        this.birth();
        return;
      }
      const changedNode = changes(nodeMetrics, this.nodeSent, ["Uptime"]);
      if (changedNode.length > 0) {
        this.publish(this.topics.nodeTopic("NDATA"), {
          timestamp: now,
          seq: this.nextSeq(),
          metrics: changedNode,
        });
        // What the host now holds: without this every later report repeated each metric that differed from the
        // NBIRTH, and one that went back to its birth value (a broker down, up, down again) was never reported.
        for (const metric of changedNode) this.nodeSent.set(metric.name, metric.value);
      }
      this.reconcileDevices(snapshot, now);
      for (const camera of snapshot.cameras) this.reportDevice(snapshot, camera.id, now);
    } catch (err) {
      this.logger.error({ err }, "sparkplug: report failed");
    }
  }

  /** The camera's metrics that changed since its DBIRTH or last DDATA, as one DDATA (nothing when none did). */
  private reportDevice(snapshot: NodeSnapshot, id: string, now: number): void {
    const sent = this.devicesSent.get(id);
    const camera = snapshot.cameras.find((c) => c.id === id);
    if (sent === undefined || camera === undefined) return;
    const changed = changes(this.deviceMetrics(camera), sent);
    if (changed.length > 0) this.deviceData(id, changed, now);
  }

  /**
   * DBIRTH for every configured camera without one, DDEATH for a born camera the configuration no longer has.
   *
   * A disabled camera stays born, with `Enabled` false and `State` "disabled": Sparkplug's DDEATH says the node
   * lost its connection to the device, so a host marks every tag of it stale and has no live device to write to
   * (Sparkplug 3.0, "Device Session Termination"). A camera switched off on purpose is neither: its values are
   * current, and the DCMD that switches it back on must reach a device the host knows is online. Before, a disable
   * sent DDEATH and a host showed the camera's threshold and counters as stale until it was enabled again.
   */
  private reconcileDevices(snapshot: NodeSnapshot, now: number): void {
    const configured = new Map(snapshot.cameras.map((c) => [c.id, c]));
    for (const id of [...this.devicesSent.keys()]) if (!configured.has(id)) this.deviceDeath(id);
    for (const camera of configured.values())
      if (!this.devicesSent.has(camera.id)) this.deviceBirth(camera, now);
  }

  private deviceData(camera: string, metrics: Metric[], now: number): void {
    this.publish(this.topics.deviceTopic("DDATA", camera), { timestamp: now, seq: this.nextSeq(), metrics });
    const sent = this.devicesSent.get(camera);
    for (const metric of metrics) sent?.set(metric.name, metric.value);
  }

  /** A defect: one DDATA now when born, else held on disk for a historical replay. */
  private reportDefect(camera: string, last: LastMetrics): void {
    const metrics = lastMetrics(last);
    if (this.born && this.devicesSent.has(camera)) {
      this.deviceData(camera, metrics, Date.now());
      return;
    }
    if (this.born) return; // a result of a camera removed by a reload: the host was told it is dead
    const payload: UPayload = { timestamp: last.captureTs, metrics };
    this.history
      ?.enqueue({
        topic: this.topics.deviceTopic("DDATA", camera),
        payload: this.encode(payload),
        qos: 0,
        retain: false,
        eventId: last.eventId,
        kind: "sparkplug-defect",
      })
      .catch((err: unknown) =>
        this.logger.error({ err, event_id: last.eventId }, "sparkplug: defect not held"),
      );
  }

  /** Sends the held defects, oldest first, as DDATA with `is_historical`, while the session stays born. */
  private replay(): void {
    const history = this.history;
    if (history === undefined || this.replaying !== undefined) return;
    this.replaying = (async () => {
      let sent = 0;
      for (;;) {
        // defects submitted before the births may still be on their way to the disk
        let head = await history.peek();
        if (head === undefined) {
          await history.settled();
          head = await history.peek();
        }
        if (head === undefined || !this.born || this.client === undefined) break;
        const message = head.messages[0]!;
        const camera = message.topic.slice(message.topic.lastIndexOf("/") + 1);
        if (this.devicesSent.has(camera)) {
          const held = codec.decodePayload(message.payload);
          const metrics = (held.metrics ?? []).map((metric) => ({ ...metric, isHistorical: true }));
          await this.publishAsync(message.topic, { timestamp: Date.now(), seq: this.nextSeq(), metrics });
          sent += 1;
        } else {
          this.logger.warn(
            { camera, event_id: head.eventId },
            "sparkplug: held defect of a camera that is no longer configured; dropped",
          );
        }
        await history.ack(head.seq);
      }
      if (sent > 0) this.logger.info({ replayed: sent }, "sparkplug: held defects replayed as historical");
    })()
      .catch((err: unknown) => this.logger.error({ err }, "sparkplug: replay of held defects failed"))
      .finally(() => {
        this.replaying = undefined;
      });
  }

  private nodeMetrics(snapshot: NodeSnapshot): Metric[] {
    const metrics: Metric[] = [
      { name: "FPS", type: "Double", value: round1(snapshot.fps) },
      { name: "Inspected", type: "UInt64", value: snapshot.inspected },
      { name: "Dropped Frames", type: "UInt64", value: snapshot.dropped_frames },
      { name: "Ready", type: "Boolean", value: snapshot.ready },
      { name: "Outbox/Queued", type: "UInt64", value: snapshot.outbox.queued },
      { name: "Outbox/Overflowed", type: "UInt64", value: snapshot.outbox.overflowed },
      { name: "Outbox/Lost", type: "UInt64", value: snapshot.outbox.lost },
      { name: "History/Queued", type: "UInt64", value: this.history?.size ?? 0 },
      { name: "Uptime", type: "UInt64", value: Math.floor(snapshot.uptime_s) },
      ...this.connectionMetrics(snapshot),
      { name: NODE_RECIPE, type: "String", value: snapshot.recipe ?? "" },
    ];
    snapshot.models.forEach((model, i) => {
      metrics.push(
        { name: `Models/${i}/Bundle`, type: "String", value: model.bundle },
        { name: `Models/${i}/Version`, type: "String", value: model.model_version },
        { name: `Models/${i}/Student SHA256`, type: "String", value: model.student_sha256 },
      );
    });
    return metrics;
  }

  /**
   * The node's connections as a host sees them. Its own session shows as `Sessions` (each reconnect adds one, so
   * a flapping link is visible although the host only hears the node while it is connected) and `Session Start`;
   * the primary host's last STATE; the publisher's MQTT session (`<prefix>/…` events and the outbox), which can be
   * down while this one is up. Null (is_null) where there is nothing to report: no primary host configured, no
   * MQTT output.
   */
  private connectionMetrics(snapshot: NodeSnapshot): Metric[] {
    const mqtt = snapshot.sinks.find((sink) => sink.name === MQTT_SINK);
    return [
      { name: "Connection/Sessions", type: "UInt64", value: this.sessions },
      { name: "Connection/Session Start", type: "DateTime", value: this.sessionStart },
      { name: "Connection/Primary Host", type: "String", value: this.config.primary_host_id ?? "" },
      {
        name: "Connection/Primary Host Online",
        type: "Boolean",
        value: this.stateTopic === undefined ? null : this.hostOnline === true,
      },
      { name: "Connection/MQTT", type: "Boolean", value: mqtt === undefined ? null : mqtt.ok },
      {
        name: "Connection/MQTT Detail",
        type: "String",
        value: mqtt?.ok === false ? (mqtt.detail ?? "") : "",
      },
    ];
  }

  private deviceMetrics(camera: CameraSnapshot): Metric[] {
    const metrics: Metric[] = [
      { name: "State", type: "String", value: camera.state },
      { name: DEVICE_ENABLED, type: "Boolean", value: camera.enabled },
      { name: DEVICE_THRESHOLD, type: "Double", value: camera.threshold },
      { name: "FPS", type: "Double", value: round1(camera.fps) },
      { name: "Inspected", type: "UInt64", value: camera.inspected },
      { name: "Defects", type: "UInt64", value: camera.defects },
      { name: "Errors", type: "UInt64", value: camera.errors },
      { name: "Restarts", type: "UInt64", value: camera.restarts },
      { name: "Bad Frames", type: "UInt64", value: camera.bad_frames },
      { name: "Model Version", type: "String", value: camera.model_version ?? "" },
      // labels in force from the review console (0 without it): births declare them, DDATA carries changes
      { name: "Review/False Alarms", type: "UInt64", value: camera.review?.false_alarms ?? 0 },
      { name: "Review/Confirmed Defects", type: "UInt64", value: camera.review?.confirmed_defects ?? 0 },
      ...modelMetrics(camera),
    ];
    metrics.push(...lastMetrics(this.last.get(camera.id) ?? fromSnapshot(camera)));
    return metrics;
  }

  // ---- commands ----

  private onMessage(client: MqttClient, topic: string, payload: Buffer): void {
    if (client !== this.client) return;
    try {
      if (topic === this.stateTopic) this.onState(payload);
      else if (topic === this.topics.nodeTopic("NCMD")) this.onNodeCommand(payload);
      else if (topic.startsWith(this.topics.deviceTopic("DCMD", ""))) {
        this.onDeviceCommand(topic.slice(this.topics.deviceTopic("DCMD", "").length), payload);
      }
    } catch (err) {
      this.logger.error({ topic, err }, "sparkplug: message not handled");
    }
  }

  private onState(payload: Buffer): void {
    let state: unknown;
    try {
      state = JSON.parse(payload.toString("utf8"));
    } catch {
      state = undefined;
    }
    const online = (state as { online?: unknown } | undefined)?.online;
    const timestamp = (state as { timestamp?: unknown } | undefined)?.timestamp;
    if (typeof online !== "boolean" || typeof timestamp !== "number") {
      this.logger.warn(
        { topic: this.stateTopic, payload: payload.toString("utf8").slice(0, 200) },
        'sparkplug: STATE payload is not {"online": boolean, "timestamp": number}; ignored',
      );
      return;
    }
    if (timestamp < this.lastStateTs) {
      this.logger.debug({ timestamp, newest: this.lastStateTs }, "sparkplug: stale STATE ignored");
      return;
    }
    this.lastStateTs = timestamp;
    const was = this.hostOnline;
    this.hostOnline = online;
    if (online && !this.born && this.subscribed) {
      this.logger.info({ primary_host: this.config.primary_host_id }, "sparkplug: primary host online");
      this.birth();
    } else if (!online && this.born) {
      this.logger.warn(
        { primary_host: this.config.primary_host_id },
        "sparkplug: primary host offline; ending the session and holding defects until it returns",
      );
      // Sparkplug 3.0: an edge node whose primary host is offline terminates its session (NDEATH, DISCONNECT)
      // and waits, connected again, for STATE online before its next births.
      const client = this.client;
      this.endBirth();
      if (client !== undefined) {
        this.endSession(client).catch((err: unknown) => {
          this.logger.warn({ err }, "sparkplug: ending the session failed");
        });
      }
    } else if (!online && was === undefined) {
      this.logger.info(
        { primary_host: this.config.primary_host_id },
        "sparkplug: primary host offline; waiting",
      );
    }
  }

  private onNodeCommand(payload: Buffer): void {
    const metrics = this.decodeCommand("NCMD", payload);
    if (metrics === undefined) return;
    for (const metric of metrics) {
      const name = metric.name ?? `(alias ${String(metric.alias)})`;
      if (name === NODE_REBIRTH || name === NODE_RELOAD) {
        if (metric.type !== "Boolean") {
          this.logger.warn(
            { metric: name, datatype: metric.type },
            `sparkplug: NCMD ${name} must be Boolean`,
          );
          continue;
        }
        if (metric.value !== true) continue;
        if (name === NODE_REBIRTH) this.rebirth();
        else this.reload();
        continue;
      }
      if (name === NODE_RECIPE) {
        this.selectRecipe(metric);
        continue;
      }
      this.logger.warn({ metric: name }, `sparkplug: NCMD for unknown metric "${name}" ignored`);
    }
  }

  private rebirth(): void {
    if (!this.born) {
      this.logger.info("sparkplug: rebirth requested before the births; they follow when the host is online");
      return;
    }
    this.logger.info({ bd_seq: this.bdSeq }, "sparkplug: rebirth requested");
    this.birth();
  }

  private reload(): void {
    this.logger.info("sparkplug: model reload requested");
    this.control.reload(this.by).then(
      (outcome) => {
        this.logger.info(
          {
            config_applied: outcome.configApplied,
            problems: outcome.problems,
            swapped: outcome.swapped,
            failed: outcome.failed,
          },
          "sparkplug: reload done",
        );
        this.report();
      },
      (err: unknown) => this.logger.error({ err }, "sparkplug: reload failed"),
    );
  }

  /** NCMD `Recipe`: switches the line through the control; NDATA carries the recipe in force after it. */
  private selectRecipe(metric: UMetric): void {
    if (metric.type !== "String" || typeof metric.value !== "string") {
      this.logger.warn(
        { metric: NODE_RECIPE, datatype: metric.type },
        `sparkplug: NCMD ${NODE_RECIPE} must be String, got ${metric.type}; ignored`,
      );
      return;
    }
    const name = metric.value === "" ? null : metric.value;
    this.control.selectRecipe(name, this.by).then(
      (change) => {
        this.logger.info({ old: change.old, new: change.new }, "sparkplug: recipe selected by NCMD");
        this.report();
      },
      (err: unknown) => {
        if (err instanceof ControlError) {
          this.logger.warn({ reason: err.message }, `sparkplug: NCMD ${NODE_RECIPE} refused: ${err.message}`);
        } else this.logger.error({ err }, `sparkplug: NCMD ${NODE_RECIPE} failed`);
      },
    );
  }

  private onDeviceCommand(camera: string, payload: Buffer): void {
    const metrics = this.decodeCommand(`DCMD for camera "${camera}"`, payload);
    if (metrics === undefined) return;
    const known = this.control.snapshot().cameras.some((c) => c.id === camera);
    if (!known) {
      this.logger.warn({ camera }, `sparkplug: DCMD for unknown camera "${camera}" ignored`);
      return;
    }
    for (const metric of metrics) {
      const name = metric.name ?? `(alias ${String(metric.alias)})`;
      if (name === DEVICE_THRESHOLD) this.applyThreshold(camera, metric);
      else if (name === DEVICE_ENABLED) this.applyEnabled(camera, metric);
      else if (MODEL_COMMAND_NAMES.has(name)) this.applyModelCommand(camera, name, metric);
      else this.logger.warn({ camera, metric: name }, `sparkplug: DCMD for unknown metric "${name}" ignored`);
    }
  }

  private applyThreshold(camera: string, metric: UMetric): void {
    if ((metric.type !== "Double" && metric.type !== "Float") || typeof metric.value !== "number") {
      this.logger.warn(
        { camera, datatype: metric.type },
        `sparkplug: DCMD Threshold for camera "${camera}" must be Double or Float, got ${metric.type}; ignored`,
      );
      return;
    }
    try {
      const change = this.control.setThreshold(camera, { value: metric.value }, this.by);
      this.logger.info({ camera, old: change.old, new: change.new }, "sparkplug: threshold set by DCMD");
      if (this.born && this.devicesSent.has(camera)) {
        this.deviceData(camera, [{ name: DEVICE_THRESHOLD, type: "Double", value: change.new }], Date.now());
      }
    } catch (err) {
      this.logRefused(camera, DEVICE_THRESHOLD, err);
    }
  }

  private applyEnabled(camera: string, metric: UMetric): void {
    if (metric.type !== "Boolean" || typeof metric.value !== "boolean") {
      this.logger.warn(
        { camera, datatype: metric.type },
        `sparkplug: DCMD Enabled for camera "${camera}" must be Boolean, got ${metric.type}; ignored`,
      );
      return;
    }
    const enabled = metric.value;
    this.control.enableCamera(camera, enabled, this.by).then(
      () => {
        this.logger.info({ camera, enabled }, "sparkplug: camera enabled state set by DCMD");
        // The device stays born either way: `Enabled` and `State` go out now as DDATA (see reconcileDevices).
        if (this.born) this.reportDevice(this.control.snapshot(), camera, Date.now());
      },
      (err: unknown) => this.logRefused(camera, DEVICE_ENABLED, err),
    );
  }

  /** A `Model/*` DCMD: through the control (audited there), then the device's changed metrics as DDATA. */
  private applyModelCommand(camera: string, name: string, metric: UMetric): void {
    if (metric.type !== "Boolean" || typeof metric.value !== "boolean") {
      this.logger.warn(
        { camera, datatype: metric.type },
        `sparkplug: DCMD ${name} for camera "${camera}" must be Boolean, got ${metric.type}; ignored`,
      );
      return;
    }
    const value = metric.value;
    const c = MODEL_COMMANDS;
    let action: Promise<unknown> | undefined;
    if (name === c.shadow) action = this.control.setShadow(camera, value, this.by);
    else if (!value)
      return; // false: nothing to do
    else if (name === c.retrain) action = this.control.startRetrain(camera, this.by);
    else if (name === c.cancelRetrain) action = this.control.cancelRetrain(camera, this.by);
    else if (name === c.promote) action = this.control.promote(camera, this.by);
    else if (name === c.rollback) action = this.control.rollback(camera, this.by);
    else if (name === c.discard) action = this.control.discardCandidate(camera, this.by);
    action?.then(
      () => {
        this.logger.info(
          { camera, metric: name, value },
          `sparkplug: DCMD ${name} for camera "${camera}" done`,
        );
        if (this.born) this.reportDevice(this.control.snapshot(), camera, Date.now());
      },
      (err: unknown) => this.logRefused(camera, name, err),
    );
  }

  private logRefused(camera: string, metric: string, err: unknown): void {
    if (err instanceof ControlError) {
      this.logger.warn(
        { camera, metric, reason: err.message },
        `sparkplug: DCMD ${metric} refused: ${err.message}`,
      );
    } else {
      this.logger.error({ camera, metric, err }, `sparkplug: DCMD ${metric} failed`);
    }
  }

  /** The metrics of a command, or undefined (logged) when the payload is not a Sparkplug B protobuf. */
  private decodeCommand(what: string, payload: Buffer): UMetric[] | undefined {
    try {
      return codec.decodePayload(payload).metrics ?? [];
    } catch (err) {
      this.logger.warn(
        { bytes: payload.length, err: errorMessage(err) },
        `sparkplug: ${what} is not a Sparkplug B payload (${errorMessage(err)}); ignored`,
      );
      return undefined;
    }
  }

  // ---- encoding and sending ----

  private deathPayload(): UPayload {
    return { timestamp: Date.now(), metrics: [{ name: "bdSeq", type: BDSEQ_TYPE, value: this.bdSeq }] };
  }

  /**
   * Every metric goes out with a timestamp (tck-id-payloads-name-birth-data-requirement: "timestamp MUST be
   * included with every metric" of NBIRTH, DBIRTH, NDATA and DDATA): its own where it has one (a frame's capture
   * time), else the payload's — before, 5,737 of 15,662 metrics a host received carried none.
   */
  private encode(payload: UPayload): Buffer {
    const at = payload.timestamp;
    const stamped: UPayload =
      payload.metrics == null || at == null
        ? payload
        : {
            ...payload,
            metrics: payload.metrics.map((m) => (m.timestamp == null ? { ...m, timestamp: at } : m)),
          };
    const bytes = codec.encodePayload(stamped);
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  private nextSeq(): number {
    this.seq = (this.seq + 1) % SEQ_MODULO;
    return this.seq;
  }

  /**
   * QoS 0, not retained (Sparkplug 3.0 for every message but NDEATH). A DATA message is dropped (and counted) when
   * the socket is backed up; a birth always goes, since what follows it means nothing without it.
   */
  private publish(topic: string, payload: UPayload, birth = false): void {
    const client = this.client;
    if (client === undefined || !client.connected) return;
    if (!birth && (client.stream?.writableLength ?? 0) > MAX_BACKLOG_BYTES) {
      this.backlogDrops += 1;
      if (this.backlogRepeats.admit("backlog") !== undefined) {
        this.logger.warn(
          { dropped: this.backlogDrops },
          `sparkplug: socket backed up; DATA messages dropped (${this.backlogDrops} since start)`,
        );
      }
      return;
    }
    client.publish(topic, this.encode(payload), { qos: 0, retain: false });
  }

  private publishAsync(topic: string, payload: UPayload): Promise<void> {
    const client = this.client;
    if (client === undefined || !client.connected) return Promise.reject(new Error("not connected"));
    return new Promise((resolve, reject) => {
      client.publish(topic, this.encode(payload), { qos: 0, retain: false }, (err) =>
        err ? reject(err) : resolve(),
      );
    });
  }
}

/** The metrics whose value differs from what was sent; `always` ride along whenever something else changed. */
function changes(metrics: Metric[], sent: Map<string, Value>, always: string[] = []): Metric[] {
  const changed = metrics.filter(
    (metric) => !always.includes(metric.name) && sent.get(metric.name) !== metric.value,
  );
  if (changed.length === 0) return changed;
  return [...changed, ...metrics.filter((metric) => always.includes(metric.name))];
}

function lastMetrics(last: LastMetrics | undefined): Metric[] {
  const timestamp = last?.captureTs;
  const at = timestamp === undefined ? {} : { timestamp };
  return [
    { name: "Last/Seq", type: "UInt64", value: last?.seq ?? null, ...at },
    { name: "Last/Score", type: "Double", value: last?.score ?? null, ...at },
    { name: "Last/Threshold", type: "Double", value: last?.threshold ?? null, ...at },
    { name: "Last/Verdict", type: "String", value: last?.verdict ?? "", ...at },
    { name: "Last/Defective", type: "Boolean", value: last === undefined ? false : last.defective, ...at },
    { name: "Last/Event Id", type: "String", value: last?.eventId ?? "", ...at },
    { name: "Last/Part Id", type: "String", value: last?.partId ?? "", ...at },
    // Int32, not UInt32: sparkplug-payload writes UInt32 into long_value where the spec's schema says int_value, so
    // a host decoding by the spec read no value (found by decoding with the spec's .proto, test/…/tck.test.ts)
    { name: "Last/Regions", type: "Int32", value: last?.regions ?? 0, ...at },
    { name: "Last/Recipe", type: "String", value: last?.recipe ?? "", ...at },
  ];
}

function fromSnapshot(camera: CameraSnapshot): LastMetrics | undefined {
  const last = camera.last;
  if (last === undefined) return undefined;
  return toLastMetrics({
    captureTs: Date.parse(last.capture_ts), // the snapshot's ISO time; Sparkplug's own is epoch ms
    seq: last.seq,
    score: last.score ?? Number.NaN,
    threshold: last.threshold,
    verdict: last.verdict,
    ...(last.event_id !== undefined ? { eventId: last.event_id } : {}),
    ...(last.part_id !== undefined ? { partId: last.part_id } : {}),
    regions: last.regions,
  });
}

/** A result as the `Last/…` metrics show it: a score that is not a finite number, and its verdict, as null. */
function toLastMetrics(last: LastResult): LastMetrics {
  return {
    captureTs: last.captureTs,
    seq: last.seq,
    score: Number.isFinite(last.score) ? last.score : null,
    threshold: last.threshold,
    verdict: last.verdict,
    defective: defectiveFlag(last.verdict),
    eventId: last.eventId ?? "",
    partId: last.partId ?? "",
    regions: last.regions,
    recipe: last.recipe ?? "",
  };
}

const MODEL_COMMAND_NAMES: ReadonlySet<string> = new Set(Object.values(MODEL_COMMANDS));

/**
 * A camera's candidate model as Sparkplug carries it: the candidate's version, the job's state and epoch, the
 * shadow's frames (empty or 0 without one), and the command metrics a host writes (declared false).
 */
function modelMetrics(camera: CameraSnapshot): Metric[] {
  const view = camera.candidate;
  const c = MODEL_COMMANDS;
  return [
    { name: "Model/Candidate Version", type: "String", value: view?.candidate?.model_version ?? "" },
    { name: "Model/Job State", type: "String", value: view?.job?.state ?? "" },
    { name: "Model/Job Epoch", type: "Int32", value: view?.job?.epoch ?? 0 },
    { name: "Model/Shadow Frames", type: "Int64", value: view?.shadow?.frames ?? 0 },
    { name: c.shadow, type: "Boolean", value: view?.shadow?.state === "running" },
    { name: c.retrain, type: "Boolean", value: false },
    { name: c.cancelRetrain, type: "Boolean", value: false },
    { name: c.promote, type: "Boolean", value: false },
    { name: c.rollback, type: "Boolean", value: false },
    { name: c.discard, type: "Boolean", value: false },
  ];
}

/** Frame rates to 0.1 fps: finer changes would make every report carry them. */
function round1(value: number): number {
  return Math.round(value * 10) / 10;
}
