/**
 * The one kind of output: a result sink. Every way a result leaves the daemon — MQTT, Sparkplug B, OPC UA, the HTTP
 * metrics and console, collection — is a {@link ResultSink} in its own folder under `publish/`, built by a
 * {@link SinkFactory} listed once in `sinks.ts`. The daemon knows sinks only through this interface: it starts them
 * before any camera runs, hands each every inference batch, tells them when the node's status changed, puts their
 * health in its status, and stops them after the last queued frame was inspected. A new output (a part-record
 * store, shadow verdicts, a fieldbus) is a new folder and one line in `sinks.ts`.
 */
import type { Manifest } from "../bundle/bundle.js";
import type { StpmdConfig } from "../config/index.js";
import type { NativeFrame } from "../core/frame.js";
import type { Logger } from "../core/log.js";
import type { InspectionResult } from "../core/result.js";
import type { AuditStore } from "./audit.js";
import type { CommandExecutor } from "./commands.js";
import type { LineControl } from "./control.js";
import type { StatusReport } from "./topics.js";

/** One inference batch as every sink receives it: the results, all judged by one model bundle. */
export interface ResultBatch {
  readonly results: readonly InspectionResult[];
  /** How long inference of the batch took. */
  readonly inferenceMs: number;
  /** The manifest of the bundle that judged the batch (validation scores, version); undefined in tests only. */
  readonly manifest: Manifest | undefined;
}

/** How a sink is doing, as the node's status shows it (`snapshot().sinks`). */
export interface SinkHealth {
  /** Whether the sink delivers now (its broker is connected, its server listens, its disk takes writes). */
  ok: boolean;
  /** Why not, in one line (a broker's refusal, a disk error); absent when there is nothing to say. */
  detail?: string;
  /** The sink's own counters (events queued, overflowed, lost; frames saved …), for status and metrics. */
  counts?: Readonly<Record<string, number>>;
  /** Counters the sink keeps per camera (MQTT: `defects_without_snapshot`), by camera id. */
  cameras?: Readonly<Record<string, Readonly<Record<string, number>>>>;
  /** Its link to its far end now, for the node's `connections` and the connection gauges of /metrics. */
  connection?: SinkConnection;
}

/** A sink's link to its far end, as far as the sink has one (each field only where it applies). */
export interface SinkConnection {
  /** Its MQTT session with the broker is up (MQTT, Sparkplug). */
  connected?: boolean;
  /** Sparkplug: NBIRTH sent in the current session, so a host takes the node's metrics as current. */
  born?: boolean;
  /** OPC UA: client (PLC) sessions open now. */
  sessions?: number;
}

export interface ResultSink {
  /** The sink's name in logs and in the node's status; unique among the sinks. */
  readonly name: string;
  /**
   * Whether what it is handed survives an outage of its far end and a restart of the daemon (held on disk in a
   * {@link DurableQueue}): the MQTT outbox and the Sparkplug history are; a live view (OPC UA, metrics) is not.
   */
  readonly durable: boolean;
  /**
   * Work that needs the configuration only (not a loaded model, not the control's snapshot), which the daemon runs
   * while it loads the models so that {@link start} is quick: OPC UA loads node-opcua, makes its certificates and
   * its standard address space here (1–10 s on a 2-core machine, by its load). A rejection stops the
   * daemon's start like one of start(); stop() is called after it even when start() never was.
   */
  prepare?(): Promise<void>;
  /** Opens what the sink needs (connections, servers, folders). A rejection stops the daemon's start. */
  start(): Promise<void>;
  /** Flushes what it can within its own deadline and closes. Never rejects for a far end that is gone. */
  stop(): Promise<void>;
  /**
   * Every inference batch, in order. Must not block: a sink that writes or sends queues the work. A throw costs
   * this sink this batch only (the daemon counts and logs it); the other sinks still get the batch.
   */
  deliver(batch: ResultBatch): void;
  /** The node's state changed (a threshold, an enable, a reload, a swapped model) or its status interval passed. */
  statusChanged?(): void;
  health(): SinkHealth;
}

/** What the daemon lends its sinks besides the control: the few things a snapshot does not carry. */
export interface NodeServices {
  /** Asks a camera for its next frame at collection size; false when it cannot give one. */
  requestOriginal(cameraId: string): boolean;
  /**
   * Frame `seq` of camera `cameraId` at the ROI's own resolution, while the camera's capture still keeps it (a
   * frame whose `native` is set, shortly after its verdict); null once it does not.
   */
  nativeFrame(cameraId: string, seq: number): Promise<NativeFrame | null>;
  /** Whether the operator's collection switch is on ({@link LineControl.setCollection}). */
  collecting(): boolean;
  /** The node's status as `<prefix>/status` carries it (cameras' capture state, the default model). */
  statusReport(): StatusReport;
}

/** What every sink is built from. */
export interface SinkContext {
  config: StpmdConfig;
  /** The line's control: sinks read state through `snapshot()` and change it only through its methods. */
  control: LineControl;
  /** The audit log: routes that change state append to it, `/api/audit` reads it. */
  audit: AuditStore;
  logger: Logger;
  /** The one executor of operator commands, so commands from MQTT and the console run one at a time in order. */
  executor: CommandExecutor;
  node: NodeServices;
}

/** One registration in `sinks.ts`: builds its sink when the configuration enables it. */
export interface SinkFactory {
  readonly name: string;
  create(context: SinkContext): ResultSink | undefined;
}
