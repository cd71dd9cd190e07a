/**
 * The daemon's Prometheus metrics, in a private registry (never prom-client's global one, so two daemons in one
 * process, or a test, never share series). Two sources:
 *
 * - what the daemon hands every interface as it happens: results (counted per camera in `onResult`) and inference
 *   batches (`onBatch`: size and duration histograms), so the counters are exactly what was fed;
 * - everything else from one `snapshot()` taken at each scrape: gauges (fps, state, threshold, outbox queued,
 *   ready, the broker/Sparkplug/OPC UA connections), model info, and the counters the daemon itself keeps (restarts, bad frames, drops, outbox
 *   overflowed/lost), mirrored as Prometheus counters.
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, type LabelValues, Registry } from "prom-client";
import type { CameraState } from "../../core/frame.js";
import type { InspectionResult } from "../../core/result.js";
import type { CollectionStats, LineControl, NodeSnapshot } from "../control.js";

/** Every value `stpmd_camera_state` has a series for, so a dashboard sees a 0 for the states a camera is not in. */
const CAMERA_STATES: readonly (CameraState | "disabled")[] = [
  "starting",
  "streaming",
  "restarting",
  "stalled",
  "idle",
  "stopped",
  "disabled",
];

/** The outcomes `stpmd_collection_frames_total` counts, each with a series from the start. */
const COLLECTION_OUTCOMES: readonly (keyof CollectionStats)[] = ["saved", "failed", "dropped", "deleted"];

/** The outcomes `stpmd_records_rows_total` counts, each with a series from the start (the records sink's counts). */
const RECORD_ROW_OUTCOMES = ["written", "failed", "dropped", "lost", "deleted"] as const;
/** The outcomes `stpmd_records_images_total` counts: the sink's `images_<outcome>` counts. */
const RECORD_IMAGE_OUTCOMES = ["saved", "failed", "dropped", "native_missed", "deleted"] as const;
/** What `stpmd_records_recoveries_total` counts: databases moved aside as corrupt, folders found deleted. */
const RECORD_RECOVERIES = { corrupt: "corrupt_moved", deleted: "recreated" } as const;

/** Seconds: a CPU batch of 8 takes tens of ms, a Jetson's TensorRT batch a few, a stalled one seconds. */
export const INFERENCE_SECONDS_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];
/** Powers of two up to inference.max_batch's maximum (64). */
export const BATCH_SIZE_BUCKETS = [1, 2, 4, 8, 16, 32, 64];

interface CameraCounters {
  inspected: Counter.Internal;
  defects: Counter.Internal;
  errors: Counter.Internal;
}

/**
 * A Prometheus counter that follows a count the daemon keeps: each scrape adds what the count grew by. A count
 * that went down (a camera removed and added again by a reload) starts its series again from that value, which
 * Prometheus reads as a counter reset.
 */
class MirroredCounter<T extends string> {
  private readonly counter: Counter<T>;
  private readonly last = new Map<string, number>();

  constructor(counter: Counter<T>) {
    this.counter = counter;
  }

  set(labels: LabelValues<T>, value: number): void {
    const key = JSON.stringify(labels);
    const last = this.last.get(key) ?? 0;
    if (value < last) {
      this.counter.remove(labels);
      this.counter.inc(labels, value);
    } else {
      this.counter.inc(labels, value - last);
    }
    this.last.set(key, value);
  }
}

/**
 * Sets a gauge without labels, or leaves it without a sample for `null` (prom-client gives such a gauge a 0 that
 * reset() restores): a node without that output has no series, so an alert on `== 0` never fires for it.
 */
function setOrAbsent(gauge: Gauge, value: number | null): void {
  if (value === null) gauge.remove({});
  else gauge.set(value);
}

export class LineMetrics {
  readonly registry = new Registry();
  private readonly control: LineControl;
  private readonly cameraCounters = new Map<string, CameraCounters>();
  private readonly inspected: Counter<"camera">;
  private readonly defects: Counter<"camera">;
  private readonly errors: Counter<"camera">;
  private readonly batchSeconds: Histogram;
  private readonly batchSize: Histogram;
  private readonly cameraFps: Gauge<"camera">;
  private readonly cameraState: Gauge<"camera" | "state">;
  private readonly cameraEnabled: Gauge<"camera">;
  private readonly cameraThreshold: Gauge<"camera">;
  private readonly cameraInfo: Gauge<"camera" | "bundle" | "model_version">;
  private readonly restarts: MirroredCounter<"camera">;
  private readonly badFrames: MirroredCounter<"camera">;
  private readonly dropped: MirroredCounter<never>;
  private readonly cameraDropped: MirroredCounter<"camera">;
  private readonly fps: Gauge;
  private readonly ready: Gauge;
  private readonly collection: Gauge;
  private readonly collectionFrames: MirroredCounter<"outcome">;
  private readonly outboxQueued: Gauge;
  private readonly outboxOverflowed: MirroredCounter<never>;
  private readonly outboxLost: MirroredCounter<never>;
  private readonly auditEntries: MirroredCounter<never>;
  private readonly auditFailures: MirroredCounter<never>;
  private readonly modelInfo: Gauge<"bundle" | "model_version" | "student_sha256">;
  private readonly outputUp: Gauge<"output" | "durable">;
  private readonly outputFailedBatches: MirroredCounter<"output">;
  private readonly withoutSnapshot: MirroredCounter<"camera">;
  private readonly recordRows: MirroredCounter<"outcome">;
  private readonly recordImages: MirroredCounter<"outcome">;
  private readonly recordRecoveries: MirroredCounter<"kind">;
  private readonly recordsHeld: Gauge;
  private readonly recordBytes: Gauge;
  private readonly recordsQueued: Gauge;
  private readonly brokerConnected: Gauge;
  private readonly sparkplugConnected: Gauge;
  private readonly sparkplugBorn: Gauge;
  private readonly opcuaSessions: Gauge;

  /** `processMetrics`: also export prom-client's process metrics (CPU, memory, event loop lag, GC). */
  constructor(control: LineControl, options: { processMetrics?: boolean } = {}) {
    this.control = control;
    const registers = [this.registry];
    const counter = <T extends string>(name: string, help: string, labelNames: T[]) =>
      new Counter<T>({ name, help, labelNames, registers });
    const gauge = <T extends string>(name: string, help: string, labelNames: T[]) =>
      new Gauge<T>({ name, help, labelNames, registers });
    this.inspected = counter("stpmd_camera_inspected_total", "Frames inspected.", ["camera"]);
    this.defects = counter("stpmd_camera_defects_total", "Frames judged defective.", ["camera"]);
    this.errors = counter(
      "stpmd_camera_errors_total",
      "Frames that could not be judged, verdict error: the model's score was not a finite number.",
      ["camera"],
    );
    this.batchSeconds = new Histogram({
      name: "stpmd_inference_batch_duration_seconds",
      help: "Time one inference batch took (all its frames together).",
      buckets: INFERENCE_SECONDS_BUCKETS,
      registers,
    });
    this.batchSize = new Histogram({
      name: "stpmd_inference_batch_size",
      help: "Frames per inference batch.",
      buckets: BATCH_SIZE_BUCKETS,
      registers,
    });
    this.cameraFps = gauge("stpmd_camera_fps", "Frames inspected per second.", ["camera"]);
    this.cameraState = gauge("stpmd_camera_state", "1 for the state the camera is in, 0 for the others.", [
      "camera",
      "state",
    ]);
    this.cameraEnabled = gauge("stpmd_camera_enabled", "1 if the camera is enabled.", ["camera"]);
    this.cameraThreshold = gauge(
      "stpmd_camera_threshold",
      "Image-score threshold in force (absent while unknown).",
      ["camera"],
    );
    this.cameraInfo = gauge("stpmd_camera_info", "The model bundle a camera is inspected with; always 1.", [
      "camera",
      "bundle",
      "model_version",
    ]);
    this.restarts = new MirroredCounter(
      counter("stpmd_camera_restarts_total", "Source restarts (errors, end of stream, stalls).", ["camera"]),
    );
    this.badFrames = new MirroredCounter(
      counter("stpmd_camera_bad_frames_total", "Frames or replay files skipped as unusable.", ["camera"]),
    );
    this.cameraDropped = new MirroredCounter(
      counter(
        "stpmd_camera_dropped_frames_total",
        "Frames of this camera dropped because its bundle's inference queue was full.",
        ["camera"],
      ),
    );
    this.dropped = new MirroredCounter(
      counter(
        "stpmd_dropped_frames_total",
        "Frames dropped because the inference queue was full (all cameras).",
        [],
      ),
    );
    this.fps = gauge("stpmd_fps", "Frames inspected per second, all cameras.", []);
    this.ready = gauge("stpmd_ready", "1 while a model is loaded and frames flow (as /readyz).", []);
    this.collection = gauge("stpmd_collection_enabled", "1 while frames are collected for retraining.", []);
    this.collectionFrames = new MirroredCounter(
      counter(
        "stpmd_collection_frames_total",
        "Frames the collector kept for retraining (saved), could not write (failed), had to skip behind slow writes (dropped), or deleted as the oldest beyond its bounds (deleted).",
        ["outcome"],
      ),
    );
    this.outboxQueued = gauge("stpmd_outbox_queued", "Defect events waiting in the outbox.", []);
    this.outboxOverflowed = new MirroredCounter(
      counter("stpmd_outbox_overflowed_total", "Defect events refused because the outbox was full.", []),
    );
    this.outboxLost = new MirroredCounter(
      counter("stpmd_outbox_lost_total", "Defect events lost (write failed, file vanished).", []),
    );
    this.auditEntries = new MirroredCounter(
      counter("stpmd_audit_entries_total", "State changes written to the audit log (fsynced).", []),
    );
    this.auditFailures = new MirroredCounter(
      counter(
        "stpmd_audit_failures_total",
        "Audit entries that could not be written: each a refused operator change or an unaudited reload.",
        [],
      ),
    );
    this.modelInfo = gauge("stpmd_model_info", "A loaded model bundle; always 1.", [
      "bundle",
      "model_version",
      "student_sha256",
    ]);
    this.outputUp = gauge(
      "stpmd_output_up",
      "1 while the output delivers (its broker connected, its server listening, its disk writable).",
      ["output", "durable"],
    );
    this.outputFailedBatches = new MirroredCounter(
      counter(
        "stpmd_output_failed_batches_total",
        "Inference batches an output failed on (each cost only that output's delivery).",
        ["output"],
      ),
    );
    this.withoutSnapshot = new MirroredCounter(
      counter(
        "stpmd_defects_without_snapshot_total",
        "Defect events sent without their snapshot (the renderer was busy or failed).",
        ["camera"],
      ),
    );
    this.recordRows = new MirroredCounter(
      counter(
        "stpmd_records_rows_total",
        "Part-record rows: committed (written), lost to a failed write such as a full disk (failed), dropped because the records queue was full (dropped), lost with a records thread that died (lost), deleted by retention (deleted).",
        ["outcome"],
      ),
    );
    this.recordImages = new MirroredCounter(
      counter(
        "stpmd_records_images_total",
        "Part-record image files (frames and maps) saved, failed to save, left out because the queue held too many pixels (dropped), deleted by retention; and frames saved as the model saw them because their camera no longer held them at native resolution (native_missed).",
        ["outcome"],
      ),
    );
    this.recordRecoveries = new MirroredCounter(
      counter(
        "stpmd_records_recoveries_total",
        "Part-record databases found corrupt and moved aside (kind corrupt), or found deleted while running and started again (kind deleted).",
        ["kind"],
      ),
    );
    this.recordsHeld = gauge("stpmd_records_rows", "Rows in the part-record database.", []);
    this.recordBytes = gauge(
      "stpmd_records_bytes",
      "Bytes the part record holds: the database's used pages plus the images.",
      [],
    );
    this.recordsQueued = gauge("stpmd_records_queued", "Rows waiting for the records thread.", []);
    // The connection gauges have a sample only while their output runs (setOrAbsent).
    this.brokerConnected = gauge(
      "stpmd_broker_connected",
      "1 while the MQTT output's session with the broker is up (while down, defect events wait in the outbox).",
      [],
    );
    this.sparkplugConnected = gauge(
      "stpmd_sparkplug_connected",
      "1 while the Sparkplug edge node's MQTT session is up.",
      [],
    );
    this.sparkplugBorn = gauge(
      "stpmd_sparkplug_born",
      "1 once the Sparkplug node's NBIRTH went out in its current session (a host takes its metrics as current).",
      [],
    );
    this.opcuaSessions = gauge("stpmd_opcua_sessions", "OPC UA client (PLC) sessions open.", []);
    if (options.processMetrics !== false) collectDefaultMetrics({ register: this.registry });
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** On the result path: counter increments on cached label children, nothing else. */
  onResult(result: InspectionResult): void {
    const counters = this.countersOf(result.frame.cameraId);
    counters.inspected.inc();
    if (result.verdict === "defect") counters.defects.inc();
    else if (result.verdict === "error") counters.errors.inc();
  }

  onBatch(size: number, inferenceMs: number): void {
    this.batchSize.observe(size);
    this.batchSeconds.observe(inferenceMs / 1000);
  }

  /** The exposition text: the gauges set from one snapshot taken now, then every series. */
  async render(snapshot: NodeSnapshot = this.control.snapshot()): Promise<string> {
    this.update(snapshot);
    return this.registry.metrics();
  }

  private countersOf(camera: string): CameraCounters {
    let counters = this.cameraCounters.get(camera);
    if (counters === undefined) {
      counters = {
        inspected: this.inspected.labels(camera),
        defects: this.defects.labels(camera),
        errors: this.errors.labels(camera),
      };
      // inc(0) creates the series, so a camera without results yet (or without defects) exposes a 0
      counters.inspected.inc(0);
      counters.defects.inc(0);
      counters.errors.inc(0);
      this.cameraCounters.set(camera, counters);
    }
    return counters;
  }

  private update(snapshot: NodeSnapshot): void {
    // Gauges are reset first so a camera or model that a reload removed leaves no stale series behind.
    for (const g of [this.cameraFps, this.cameraState, this.cameraEnabled, this.cameraThreshold]) g.reset();
    this.cameraInfo.reset();
    this.modelInfo.reset();
    this.outputUp.reset();
    for (const cam of snapshot.cameras) {
      const camera = cam.id;
      this.countersOf(camera);
      this.cameraFps.set({ camera }, cam.fps);
      for (const state of CAMERA_STATES) this.cameraState.set({ camera, state }, cam.state === state ? 1 : 0);
      this.cameraEnabled.set({ camera }, cam.enabled ? 1 : 0);
      if (cam.threshold !== null) this.cameraThreshold.set({ camera }, cam.threshold);
      this.cameraInfo.set({ camera, bundle: cam.bundle, model_version: cam.model_version ?? "" }, 1);
      this.restarts.set({ camera }, cam.restarts);
      this.badFrames.set({ camera }, cam.bad_frames);
      this.cameraDropped.set({ camera }, cam.dropped_frames);
    }
    this.dropped.set({}, snapshot.dropped_frames);
    this.fps.set(snapshot.fps);
    this.ready.set(snapshot.ready ? 1 : 0);
    this.collection.set(snapshot.collection.enabled ? 1 : 0);
    for (const outcome of COLLECTION_OUTCOMES) {
      this.collectionFrames.set({ outcome }, snapshot.collection[outcome]);
    }
    this.outboxQueued.set(snapshot.outbox.queued);
    this.outboxOverflowed.set({}, snapshot.outbox.overflowed);
    this.outboxLost.set({}, snapshot.outbox.lost);
    this.auditEntries.set({}, snapshot.audit.entries);
    this.auditFailures.set({}, snapshot.audit.failures);
    for (const sink of snapshot.sinks) {
      this.outputUp.set({ output: sink.name, durable: String(sink.durable) }, sink.ok ? 1 : 0);
      this.outputFailedBatches.set({ output: sink.name }, sink.failed_batches);
    }
    // every camera has a series (0 until one goes without), and a camera a reload removed keeps its count
    const withoutSnapshot = snapshot.sinks.find((sink) => sink.name === "mqtt")?.cameras ?? {};
    const cameras = new Set([...snapshot.cameras.map((cam) => cam.id), ...Object.keys(withoutSnapshot)]);
    for (const camera of cameras) {
      this.withoutSnapshot.set({ camera }, withoutSnapshot[camera]?.defects_without_snapshot ?? 0);
    }
    const records = snapshot.sinks.find((sink) => sink.name === "records")?.counts;
    if (records !== undefined) {
      for (const outcome of RECORD_ROW_OUTCOMES) this.recordRows.set({ outcome }, records[outcome] ?? 0);
      for (const outcome of RECORD_IMAGE_OUTCOMES) {
        this.recordImages.set({ outcome }, records[`images_${outcome}`] ?? 0);
      }
      for (const [kind, key] of Object.entries(RECORD_RECOVERIES))
        this.recordRecoveries.set({ kind }, records[key] ?? 0);
      this.recordsHeld.set(records.rows ?? 0);
      this.recordBytes.set(records.bytes ?? 0);
      this.recordsQueued.set(records.queued ?? 0);
    }
    const { broker, sparkplug, opcua_sessions } = snapshot.connections;
    setOrAbsent(this.brokerConnected, broker === null ? null : Number(broker));
    setOrAbsent(this.sparkplugConnected, sparkplug === null ? null : Number(sparkplug.connected));
    setOrAbsent(this.sparkplugBorn, sparkplug === null ? null : Number(sparkplug.born));
    setOrAbsent(this.opcuaSessions, opcua_sessions);
    for (const model of snapshot.models) {
      this.modelInfo.set(
        { bundle: model.bundle, model_version: model.model_version, student_sha256: model.student_sha256 },
        1,
      );
    }
  }
}
