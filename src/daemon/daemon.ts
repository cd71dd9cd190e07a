import { type FSWatcher, watch } from "node:fs";
import path from "node:path";
import { isDeepStrictEqual } from "node:util";
import { Ajv } from "ajv";
import { bundleGeometry, type Manifest } from "../bundle/bundle.js";
import { Camera } from "../capture/camera.js";
import {
  type CameraConfig,
  configProblemsError,
  loadConfig,
  type StpmdConfig,
  type ThresholdRule,
  thresholdRuleSchema,
} from "../config/index.js";
import { errorMessage } from "../core/errors.js";
import type { Frame } from "../core/frame.js";
import type { Logger } from "../core/log.js";
import { RateMeter } from "../core/rate-meter.js";
import { RepeatLimiter } from "../core/repeat-limiter.js";
import type { InspectionResult } from "../core/result.js";
import { loadBinaryImage } from "../data/images.js";
import { ortProviders } from "../onnx/ort.js";
import { InspectionLoop } from "../pipeline/inspection-loop.js";
import { Inspector } from "../pipeline/inspector.js";
import {
  type CameraSnapshot,
  ControlError,
  type LineControl,
  type NodeSnapshot,
  type ReloadOutcome,
  type Requester,
  type SinkStatus,
} from "../publish/control.js";
import type { ResultSink, SinkFactory } from "../publish/sink.js";
import { createSinks, SINKS } from "../publish/sinks.js";
import type { CameraStatus, StatusReport } from "../publish/topics.js";
import { cameraSourceProblems, roiWarnings, stateDirProblems } from "./startup-checks.js";
import {
  MAX_PENDING_TRIGGERS,
  type MaskImage,
  needsCameraRestart,
  requesterLabel,
  Station,
  stationBundle,
} from "./stations.js";
import { SystemdNotifier } from "./systemd.js";

export interface DaemonHooks {
  /** Every inspection result, after publishing (tests and the demo watch the stream here). */
  onResult?: (r: InspectionResult) => void;
  /** Every inference batch's results (all from one bundle). */
  onBatch?: (results: InspectionResult[]) => void;
}

export interface DaemonOptions {
  /** The config file, re-read on SIGHUP ({@link Daemon.reload}); without it SIGHUP reloads only the models. */
  configPath?: string;
  hooks?: DaemonHooks;
  /** The outputs to build (default: every registered one, {@link SINKS}). */
  sinks?: readonly SinkFactory[];
}

/** One loaded bundle: its model, its own frame queue and batches (batches never mix bundles), its file watch. */
interface ModelSlot {
  dir: string;
  inspector: Inspector;
  loop: InspectionLoop;
  watchers: FSWatcher[];
  reloadTimer: NodeJS.Timeout | undefined;
}

/**
 * The inspection daemon: cameras → one bounded frame queue and batched inference per model bundle → every output
 * (the result sinks of `publish/`: MQTT, collection, HTTP, Sparkplug B, OPC UA). Each camera is a station with its
 * own model, ROI, ignore mask and threshold. Each stage owns one thing and buffers flow one way; a broker outage, a
 * failing camera or a broken bundle never stops the others (the MQTT sink queues defect events on disk, cameras
 * restart themselves, a bundle that fails to reload keeps its old model, a sink that throws loses only its own
 * delivery).
 *
 * It is also the line's {@link LineControl}: thresholds, enables, collection and reloads from any interface go
 * through the methods below, which validate, apply and log them with who asked.
 */
export class Daemon implements LineControl {
  private config: StpmdConfig;
  private readonly configPath: string | undefined;
  private readonly hooks: DaemonHooks;
  private readonly sinkFactories: readonly SinkFactory[];
  private sinks: ResultSink[] = [];
  /** Batches each sink failed on since start, by sink name. */
  private readonly sinkFailures = new Map<string, number>();
  /** A sink that fails on every batch is logged once a minute, with a count. */
  private readonly sinkRepeats = new RepeatLimiter();
  private readonly notifier: SystemdNotifier;
  private readonly models = new Map<string, ModelSlot>();
  private readonly stations = new Map<string, Station>();
  /** What stop() is doing (see {@link stop}); "" before it is called. */
  stopStep = "";
  private collectionEnabled: boolean;
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly inspected = new RateMeter();
  private readonly startedAt = Date.now();
  private lastInspectedTs = 0;
  private readySent = false;
  private stopping = false;
  private reloading: Promise<ReloadOutcome> | undefined;
  inspectedFrames = 0;

  constructor(
    config: StpmdConfig,
    private readonly logger: Logger,
    options: DaemonOptions = {},
  ) {
    this.config = config;
    this.configPath = options.configPath;
    this.hooks = options.hooks ?? {};
    this.collectionEnabled = config.collection.enabled;
    this.sinkFactories = options.sinks ?? SINKS;
    this.notifier = new SystemdNotifier(logger);
  }

  /** The default bundle's model version (the first loaded one when no camera uses the default). */
  get modelVersion(): string | undefined {
    const slot = this.models.get(path.resolve(this.config.model.bundle)) ?? [...this.models.values()][0];
    return slot?.inspector.manifest?.model_version;
  }

  get droppedFrames(): number {
    let dropped = 0;
    for (const slot of this.models.values()) dropped += slot.loop.droppedFrames;
    return dropped;
  }

  /** How often a camera's capture was built since start (1 + restarts by config changes and enables). */
  captureStarts(cameraId: string): number {
    return this.stations.get(cameraId)?.captureStarts ?? 0;
  }

  /** An output's health and counters by name (`mqtt`, `collection`, …), undefined when it is not running. */
  sinkStatus(name: string): SinkStatus | undefined {
    return this.sinkStatuses().find((s) => s.name === name);
  }

  /**
   * Checks what can be checked before anything runs (state directories, every station's model, each camera's
   * pipeline), then starts the outputs and then capture, so no result reaches an output that is not running yet.
   * Any failure here is fatal and rejects after undoing what was started, so the caller can exit at once: a daemon
   * that cannot serve must not linger half-started.
   */
  async start(): Promise<void> {
    const dirProblems = stateDirProblems(this.config);
    if (dirProblems.length > 0) throw configProblemsError(this.config, dirProblems);
    try {
      for (const camera of this.config.cameras) {
        this.stations.set(
          camera.id,
          new Station(camera, this.bundleOf(camera), this.cameraLogger(camera.id)),
        );
      }
      for (const dir of this.bundlesInUse()) {
        let manifest: Manifest;
        try {
          manifest = await this.openSlot(dir).inspector.load();
        } catch (err) {
          // named by the key that chose the bundle, as check-config names it
          const i = this.config.cameras.findIndex((c) => c.enabled && this.bundleOf(c) === dir);
          const camera = this.config.cameras[i];
          const keyPath = camera?.model ? ["cameras", i, "model"] : ["model", "bundle"];
          throw configProblemsError(this.config, [{ path: keyPath, message: errorMessage(err) }]);
        }
        this.logger.info({ model_version: manifest.model_version, bundle: dir }, "model loaded");
      }
      const sizes = this.captureSizes();
      const cameraProblems = cameraSourceProblems(this.config, (i) => sizes.get(this.config.cameras[i]!.id));
      if (cameraProblems.length > 0) throw configProblemsError(this.config, cameraProblems);
      for (const station of this.stations.values()) station.maskImage = await maskImageOf(station.config);
      this.warnAboutRois();
      await this.startSinks();
    } catch (err) {
      for (const slot of this.models.values()) await slot.inspector.close();
      this.models.clear();
      throw err;
    }
    for (const station of this.stations.values()) if (station.enabled) this.startCamera(station);
    // seed the status before the first connect, so the first retained `online` already names the model and cameras
    this.publishStatus();
    for (const slot of this.models.values()) slot.loop.start();
    this.timers.push(setInterval(() => this.publishStatus(), this.config.mqtt.status_interval_s * 1000));
    if (this.config.health.watchdog && this.notifier.watchdogMs > 0) {
      this.timers.push(setInterval(() => this.maybePingWatchdog(), this.notifier.watchdogMs / 2));
    }
  }

  /** Builds the enabled sinks and starts them in order; if one fails, those started are stopped again. */
  private async startSinks(): Promise<void> {
    const sinks = createSinks(
      {
        config: this.config,
        control: this,
        logger: this.logger,
        node: {
          requestOriginal: (id) => this.stations.get(id)?.camera?.requestOriginal() ?? false,
          collecting: () => this.collectionEnabled,
          statusReport: () => this.statusReport(),
        },
      },
      this.sinkFactories,
    );
    const started: ResultSink[] = [];
    try {
      for (const sink of sinks) {
        await sink.start();
        started.push(sink);
      }
    } catch (err) {
      for (const sink of started.reverse()) await this.stopSink(sink);
      throw err;
    }
    this.sinks = sinks;
  }

  private async stopSink(sink: ResultSink): Promise<void> {
    await sink
      .stop()
      .catch((err: unknown) => this.logger.warn({ sink: sink.name, err }, "stopping an output"));
  }

  private bundleOf(camera: CameraConfig): string {
    return path.resolve(stationBundle(camera, this.config));
  }

  private cameraLogger(id: string): Logger {
    return this.logger.child({ camera: id });
  }

  /** Bundles of the enabled stations (a disabled camera's bundle is loaded when it is enabled). */
  private bundlesInUse(): Set<string> {
    const dirs = new Set<string>();
    for (const s of this.stations.values()) if (s.enabled) dirs.add(s.bundle);
    return dirs;
  }

  private openSlot(dir: string): ModelSlot {
    const existing = this.models.get(dir);
    if (existing) return existing;
    const log = this.logger.child({ component: "inspector", bundle: dir });
    const inspector = new Inspector(
      dir,
      {
        providers: ortProviders(this.config.inference.providers),
        intraOpThreads: this.config.inference.intra_op_threads,
        onFallback: (provider, reason) =>
          log.warn(
            { provider, reason: reason.split("\n")[0] },
            "execution provider unavailable; trying the next one",
          ),
      },
      log,
      this.config.inference.max_batch,
    );
    const loop = new InspectionLoop(
      inspector,
      this.config.inference,
      log,
      (results, ms) => this.deliver(results, ms),
      (cameraId, manifest) => this.stationView(cameraId, manifest),
    );
    const slot: ModelSlot = { dir, inspector, loop, watchers: [], reloadTimer: undefined };
    this.models.set(dir, slot);
    if (this.config.model.watch) this.watchBundle(slot);
    return slot;
  }

  private async closeSlot(slot: ModelSlot): Promise<void> {
    this.models.delete(slot.dir);
    for (const w of slot.watchers) w.close();
    if (slot.reloadTimer) clearTimeout(slot.reloadTimer);
    await slot.loop.drain();
    await slot.inspector.close();
    this.logger.info({ bundle: slot.dir }, "model unloaded (no camera uses it)");
  }

  private stationView(cameraId: string, manifest: Manifest) {
    const station = this.stations.get(cameraId);
    // a frame of a camera removed while its batch ran: judge it by the bundle's own threshold
    if (!station) return { threshold: manifest.threshold };
    return station.view(manifest);
  }

  /** Capture size of every camera whose model is loaded, from the model's geometry. */
  private captureSizes(): Map<string, { width: number; height: number }> {
    const sizes = new Map<string, { width: number; height: number }>();
    for (const s of this.stations.values()) {
      const size = this.models.get(s.bundle)?.inspector.inputSize;
      if (size) sizes.set(s.id, { width: size[0], height: size[1] });
    }
    return sizes;
  }

  private warnAboutRois(): void {
    for (const s of this.stations.values()) {
      const manifest = this.models.get(s.bundle)?.inspector.manifest;
      if (!manifest) continue;
      for (const warning of roiWarnings(s.config, bundleGeometry(manifest))) {
        this.logger.warn({ camera: s.id, bundle: s.bundle }, warning);
      }
    }
  }

  /**
   * Reloads a bundle if it changed on disk; after a swap, the cameras of that bundle whose capture size no longer
   * matches restart, because the capture caps carry the model's size. One path for SIGHUP and the file watch.
   */
  private async reloadSlot(slot: ModelSlot, reason: string): Promise<"swapped" | "unchanged" | "failed"> {
    const result = await slot.inspector.reloadIfChanged(reason);
    if (result !== "swapped") return result;
    const size = slot.inspector.inputSize;
    for (const s of this.stations.values()) {
      const cam = s.camera;
      if (s.bundle === slot.dir && cam && size && (cam.width !== size[0] || cam.height !== size[1])) {
        this.restartCamera(s);
      }
    }
    return result;
  }

  private startCamera(station: Station): void {
    const slot = this.models.get(station.bundle);
    const size = slot?.inspector.inputSize;
    if (!slot || !size) {
      this.logger.error(
        { camera: station.id, bundle: station.bundle },
        "camera not started: its model is not loaded",
      );
      return;
    }
    const cam = new Camera(station.config, {
      width: size[0],
      height: size[1],
      logger: this.cameraLogger(station.id),
      firstSeq: station.nextSeq,
      originalMaxLongSide: this.config.collection.max_long_side,
    });
    cam.on("frame", (f: Frame) => {
      station.nextSeq = f.seq + 1;
      const partId = station.takePartId(Date.now());
      // `partId` travels with the frame into its result and event (a PLC trigger's answer)
      slot.loop.push(partId === undefined ? f : { ...f, partId });
    });
    station.camera = cam;
    station.captureStarts += 1;
    cam.start();
  }

  private stopCamera(station: Station): void {
    if (!station.camera) return;
    const stats = station.camera.stats();
    station.nextSeq = Math.max(station.nextSeq, stats.nextSeq);
    station.lastCounts = { restarts: stats.restarts, badFrames: stats.badFrames };
    station.camera.stop();
    station.camera = undefined;
  }

  private restartCamera(station: Station): void {
    this.stopCamera(station);
    if (station.enabled) this.startCamera(station);
  }

  private deliver(results: InspectionResult[], inferenceMs: number): void {
    const now = Date.now();
    this.lastInspectedTs = now;
    this.inspectedFrames += results.length;
    this.inspected.add(results.length, now);
    for (const r of results) this.stations.get(r.frame.cameraId)?.record(r, now);
    // a batch never mixes bundles: its first frame's station names the model that judged it
    const station = results[0] ? this.stations.get(results[0].frame.cameraId) : undefined;
    const manifest = station ? this.models.get(station.bundle)?.inspector.manifest : undefined;
    const batch = { results, inferenceMs, manifest };
    for (const sink of this.sinks) {
      try {
        sink.deliver(batch);
      } catch (err) {
        this.sinkFailed(sink, "a batch", err);
      }
    }
    this.hooks.onBatch?.(results);
    if (this.hooks.onResult) for (const r of results) this.hooks.onResult(r);
    if (!this.readySent) {
      this.readySent = true;
      this.notifier.ready(`inspecting, model ${this.modelVersion}`);
      this.logger.info("first frame inspected; ready");
    }
  }

  /**
   * A sink that throws loses only its own delivery: counted (its `failed_batches` in the status), and logged once
   * per problem, then once a minute with the count, since a broken sink fails on every batch.
   */
  private sinkFailed(sink: ResultSink, what: "a batch" | "a status change", err: unknown): void {
    const failed = (this.sinkFailures.get(sink.name) ?? 0) + (what === "a batch" ? 1 : 0);
    this.sinkFailures.set(sink.name, failed);
    const admitted = this.sinkRepeats.admit(`${sink.name}: ${errorMessage(err)}`);
    if (admitted === undefined) return;
    const meanwhile = admitted.unlogged > 0 ? ` (${admitted.unlogged} more since the last line)` : "";
    this.logger.error(
      { sink: sink.name, err, failed_batches: failed },
      `output ${sink.name} failed on ${what}${meanwhile}; the other outputs were served`,
    );
  }

  private sinkStatuses(): SinkStatus[] {
    return this.sinks.map((sink) => {
      let health: ReturnType<ResultSink["health"]>;
      try {
        health = sink.health();
      } catch (err) {
        health = { ok: false, detail: `health check failed: ${errorMessage(err)}` };
      }
      return {
        name: sink.name,
        durable: sink.durable,
        ...health,
        failed_batches: this.sinkFailures.get(sink.name) ?? 0,
      };
    });
  }

  private statusReport(): StatusReport {
    return {
      model_version: this.modelVersion ?? null,
      fps: Number(this.inspected.rate().toFixed(2)),
      dropped_frames: this.droppedFrames,
      cameras: this.cameraStates(),
      outputs: Object.fromEntries(
        this.sinkStatuses().map(({ name, ok, durable, detail, failed_batches }) => [
          name,
          { ok, durable, ...(detail !== undefined ? { detail } : {}), failed_batches },
        ]),
      ),
    };
  }

  private cameraStates(): Record<string, CameraStatus> {
    const out: Record<string, CameraStatus> = {};
    for (const s of this.stations.values()) {
      // a stopped or disabled camera is reported too, with what its last capture counted
      const { state, restarts, badFrames } = s.camera?.stats() ?? {
        state: "stopped" as const,
        ...s.lastCounts,
      };
      const manifest = this.models.get(s.bundle)?.inspector.manifest;
      out[s.id] = {
        state,
        fps: Number(s.rate.rate().toFixed(2)),
        restarts,
        bad_frames: badFrames,
        model_version: manifest?.model_version ?? null,
        threshold: manifest ? s.threshold(manifest) : null,
      };
    }
    return out;
  }

  /** Tells every sink the node's status changed, and systemd in one line (with any output that is failing). */
  private publishStatus(): void {
    for (const sink of this.sinks) {
      try {
        sink.statusChanged?.();
      } catch (err) {
        this.sinkFailed(sink, "a status change", err);
      }
    }
    const { fps, dropped_frames } = this.statusReport();
    const failing = this.sinkStatuses()
      .filter((s) => !s.ok && s.detail !== undefined)
      .map((s) => `, ${s.name}: ${s.detail}`)
      .join("");
    this.notifier.status(`${fps} fps, ${dropped_frames} dropped, model ${this.modelVersion}${failing}`);
  }

  /**
   * Model loaded and frames flowing: the loops finished a batch within the watchdog interval (or, without a
   * watchdog, within 30 s) and nothing waits in a queue longer than that. Cameras that are all hardware-triggered
   * may be legitimately silent, so silence alone does not count as hung for them.
   */
  private isFlowing(limitMs: number): boolean {
    const now = Date.now();
    let oldest: number | undefined;
    for (const slot of this.models.values()) {
      const ts = slot.loop.oldestCaptureTs();
      if (ts !== undefined && (oldest === undefined || ts < oldest)) oldest = ts;
    }
    const queueStuck = oldest !== undefined && now - oldest > limitMs;
    const running = [...this.stations.values()].filter((s) => s.camera);
    const allTriggered = running.every((s) => s.config.trigger === "hardware");
    const flowing = now - this.lastInspectedTs < limitMs || (allTriggered && oldest === undefined);
    return flowing && !queueStuck && this.models.size > 0;
  }

  /** WATCHDOG=1 only while frames actually flow, so a hung pipeline stops the pings and systemd restarts us. */
  private maybePingWatchdog(): void {
    if (this.isFlowing(this.notifier.watchdogMs)) this.notifier.watchdog();
  }

  // --- LineControl -------------------------------------------------------------------------------------------

  private station(camera: unknown): Station {
    if (typeof camera !== "string") throw new ControlError(`camera must be a string (got ${typeof camera})`);
    const s = this.stations.get(camera);
    if (!s)
      throw new ControlError(`unknown camera "${camera}" (known: ${[...this.stations.keys()].join(", ")})`);
    return s;
  }

  snapshot(): NodeSnapshot {
    const sinks = this.sinkStatuses();
    const cameras: CameraSnapshot[] = [...this.stations.values()].map((s) => {
      const manifest = this.models.get(s.bundle)?.inspector.manifest;
      const camStats = s.camera?.stats();
      return {
        id: s.id,
        enabled: s.enabled,
        state: camStats?.state ?? "disabled",
        fps: Number(s.rate.rate().toFixed(2)),
        inspected: s.inspected,
        defects: s.defects,
        restarts: camStats?.restarts ?? 0,
        bad_frames: camStats?.badFrames ?? 0,
        dropped_frames: this.models.get(s.bundle)?.loop.droppedByCamera()[s.id] ?? 0,
        bundle: s.bundle,
        model_version: manifest?.model_version ?? null,
        threshold: manifest ? s.threshold(manifest) : null,
        threshold_rule: s.thresholdRule ?? "bundle",
        ...(s.last ? { last: s.last } : {}),
      };
    });
    const models = [...this.models.values()].flatMap((slot) => {
      const m = slot.inspector.manifest;
      return m
        ? [{ bundle: slot.dir, model_version: m.model_version, student_sha256: m.student.sha256 }]
        : [];
    });
    return {
      uptime_s: Math.round((Date.now() - this.startedAt) / 1000),
      fps: Number(this.inspected.rate().toFixed(2)),
      inspected: this.inspectedFrames,
      dropped_frames: this.droppedFrames,
      ready: this.readySent && this.isFlowing(this.notifier.watchdogMs || 30_000),
      models,
      // the two outputs the snapshot has always summed up: the MQTT outbox and collection (0 while not running)
      outbox: countsOf(sinks, "mqtt", ["queued", "overflowed", "lost"]),
      collection: {
        enabled: this.collectionEnabled,
        ...countsOf(sinks, "collection", ["saved", "failed", "dropped", "deleted"]),
      },
      cameras,
      sinks,
    };
  }

  setThreshold(
    camera: string,
    rule: ThresholdRule,
    by: Requester,
  ): { old: number | null; new: number | null } {
    const s = this.station(camera);
    const problem = thresholdRuleProblem(rule);
    if (problem) throw new ControlError(`threshold for camera "${camera}": ${problem}`);
    const manifest = this.models.get(s.bundle)?.inspector.manifest;
    const old = manifest ? s.threshold(manifest) : null;
    s.setThresholdRule(rule);
    const now = manifest ? s.threshold(manifest) : null;
    this.logger.info(
      { camera, by: requesterLabel(by), old, new: now, rule },
      `threshold of camera ${camera} set by ${requesterLabel(by)}: ${old} → ${now}`,
    );
    this.publishStatus();
    return { old, new: now };
  }

  async enableCamera(camera: string, enabled: boolean, by: Requester): Promise<void> {
    const s = this.station(camera);
    if (typeof enabled !== "boolean")
      throw new ControlError(`enabled must be true or false (got ${typeof enabled})`);
    if (s.enabled === enabled) return;
    if (this.stopping) throw new ControlError("the daemon is stopping");
    if (enabled && !this.models.has(s.bundle)) {
      const slot = this.openSlot(s.bundle);
      try {
        await slot.inspector.load();
      } catch (err) {
        await this.closeSlot(slot);
        throw new ControlError(
          `camera "${camera}" cannot start: its model does not load (${errorMessage(err)})`,
        );
      }
      slot.loop.start();
    }
    s.enabled = enabled;
    this.logger.info(
      { camera, by: requesterLabel(by), old: !enabled, new: enabled },
      `camera ${camera} ${enabled ? "enabled" : "disabled"} by ${requesterLabel(by)}`,
    );
    if (enabled) this.startCamera(s);
    else this.stopCamera(s);
    await this.unloadUnusedModels();
    this.publishStatus();
  }

  setCollection(enabled: boolean, by: Requester): void {
    if (typeof enabled !== "boolean")
      throw new ControlError(`enabled must be true or false (got ${typeof enabled})`);
    if (enabled && !this.config.collection.enabled) {
      throw new ControlError(
        "collection is disabled in the config file (collection.enabled); enable it there first",
      );
    }
    const old = this.collectionEnabled;
    this.collectionEnabled = enabled;
    this.logger.info(
      { by: requesterLabel(by), old, new: this.collectionEnabled },
      `collection ${enabled ? "started" : "stopped"} by ${requesterLabel(by)}`,
    );
  }

  trigger(camera: string, partId: string, by: Requester, expiresInMs = Number.POSITIVE_INFINITY): void {
    const s = this.station(camera);
    if (typeof partId !== "string") throw new ControlError(`part id must be a string (got ${typeof partId})`);
    if (!s.camera) throw new ControlError(`camera "${camera}" is not running`);
    if (s.pendingParts.length >= MAX_PENDING_TRIGGERS) {
      throw new ControlError(
        `camera "${camera}" already holds ${MAX_PENDING_TRIGGERS} triggers waiting for a frame; refusing part "${partId}"`,
      );
    }
    s.pendingParts.push({ partId, expiresAt: Date.now() + expiresInMs });
    this.logger.debug({ camera, part_id: partId, by: requesterLabel(by) }, "trigger");
  }

  /**
   * SIGHUP (and every interface's "reload"): re-reads the config file, if the daemon has one, and applies what
   * changed without a restart — thresholds, ignore masks and enables at once; a camera whose capture settings or
   * model changed restarts alone; added and removed cameras start and stop. An invalid file is rejected with its
   * problems logged and the running config kept. Then every bundle is reloaded if it changed on disk (a broken one
   * keeps its old model). Keys that need a restart of the daemon (MQTT, inference, …) are named in a warning.
   */
  reload(by: Requester): Promise<ReloadOutcome> {
    // concurrent requests (a SIGHUP while an operator's reload runs) share one reload
    this.reloading ??= this.doReload(by, requesterLabel(by)).finally(() => {
      this.reloading = undefined;
    });
    return this.reloading;
  }

  private async doReload(by: Requester, reason: string): Promise<ReloadOutcome> {
    const outcome: ReloadOutcome = { configApplied: false, problems: [], swapped: [], failed: [] };
    if (this.stopping) return outcome;
    this.logger.info({ by: requesterLabel(by) }, `reload requested by ${reason}`);
    if (this.configPath !== undefined) {
      let next: StpmdConfig | undefined;
      try {
        next = loadConfig(this.configPath);
      } catch (err) {
        outcome.problems = errorMessage(err)
          .split("\n")
          .filter((l) => l.trim() !== "");
        this.logger.error(
          { file: this.configPath, problems: outcome.problems },
          `new configuration rejected; keeping the running one: ${outcome.problems.join("; ")}`,
        );
      }
      if (next) {
        await this.applyConfig(next, outcome);
        outcome.configApplied = outcome.problems.length === 0;
      }
    }
    for (const slot of [...this.models.values()]) {
      const result = await this.reloadSlot(slot, reason);
      if (result === "failed") outcome.failed.push(slot.dir);
      if (result === "swapped") outcome.swapped.push(slot.dir);
    }
    this.warnAboutRois();
    this.publishStatus();
    return outcome;
  }

  private async applyConfig(next: StpmdConfig, outcome: ReloadOutcome): Promise<void> {
    const needRestart = Object.keys(next).filter(
      (key) =>
        key !== "cameras" &&
        key !== "model" &&
        !isDeepStrictEqual(next[key as keyof StpmdConfig], this.config[key as keyof StpmdConfig]),
    );
    if (!isDeepStrictEqual({ ...next.model, bundle: "" }, { ...this.config.model, bundle: "" }))
      needRestart.push("model.watch");
    if (needRestart.length > 0) {
      this.logger.warn(
        { keys: needRestart },
        `changed keys take effect at the next start: ${needRestart.join(", ")}`,
      );
    }
    const old = this.config;
    // only cameras and the default bundle are applied at run time; the rest keeps its running values
    this.config = { ...old, cameras: next.cameras, model: { ...old.model, bundle: next.model.bundle } };
    const nextIds = new Set(next.cameras.map((c) => c.id));
    for (const s of [...this.stations.values()]) {
      if (nextIds.has(s.id)) continue;
      this.stopCamera(s);
      this.stations.delete(s.id);
      this.logger.info({ camera: s.id }, "camera removed from the configuration; stopped");
    }
    for (const camera of next.cameras) {
      const bundle = this.bundleOf(camera);
      let maskImage: MaskImage | undefined;
      try {
        maskImage = await maskImageOf(camera);
      } catch (err) {
        outcome.problems.push(`cameras (id "${camera.id}").ignore.mask: ${errorMessage(err)}`);
        this.logger.error(
          { camera: camera.id, err },
          "ignore mask unreadable; keeping this camera's previous settings",
        );
        continue;
      }
      const existing = this.stations.get(camera.id);
      if (!existing) {
        const s = new Station(camera, bundle, this.cameraLogger(camera.id));
        s.maskImage = maskImage;
        this.stations.set(camera.id, s);
        if (s.enabled && (await this.ensureModel(bundle, camera.id, outcome))) this.startCamera(s);
        this.logger.info({ camera: camera.id, enabled: s.enabled }, "camera added by the configuration");
        continue;
      }
      const restart = needsCameraRestart(existing.config, camera) || existing.bundle !== bundle;
      const wasEnabled = existing.enabled;
      existing.applyConfig(camera, maskImage);
      if (existing.bundle !== bundle) {
        if (!(await this.ensureModel(bundle, camera.id, outcome))) {
          this.stopCamera(existing);
          continue;
        }
        existing.bundle = bundle;
      }
      if (existing.enabled && !(await this.ensureModel(bundle, camera.id, outcome))) continue;
      if (!existing.enabled) this.stopCamera(existing);
      else if (restart || !wasEnabled || !existing.camera) {
        this.restartCamera(existing);
        if (restart) this.logger.info({ camera: camera.id }, "camera restarted with its new settings");
      }
    }
    await this.unloadUnusedModels();
  }

  /** Loads `bundle` if no station had it loaded yet; false (logged, in `outcome`) when it does not load. */
  private async ensureModel(bundle: string, camera: string, outcome: ReloadOutcome): Promise<boolean> {
    if (this.models.get(bundle)?.inspector.manifest) return true;
    const slot = this.openSlot(bundle);
    try {
      const manifest = await slot.inspector.load();
      this.logger.info({ model_version: manifest.model_version, bundle }, "model loaded");
      slot.loop.start();
      return true;
    } catch (err) {
      await this.closeSlot(slot);
      outcome.failed.push(bundle);
      outcome.problems.push(`cameras (id "${camera}").model: ${errorMessage(err)}`);
      this.logger.error({ camera, bundle, err }, "camera's model does not load; the camera is not started");
      return false;
    }
  }

  private async unloadUnusedModels(): Promise<void> {
    const inUse = this.bundlesInUse();
    for (const slot of [...this.models.values()]) if (!inUse.has(slot.dir)) await this.closeSlot(slot);
  }

  /**
   * Reloads a bundle after it changes on disk, debounced. Two watches, because each sees only half of the ways a
   * bundle is replaced: the parent folder sees the directory itself renamed or replaced (`retrain --out`, `mv`,
   * `cp -a`); the directory's own watch sees its files overwritten in place (`cp new/* bundle/`), which the
   * parent never hears of. The directory's watch follows its inode, so it is re-armed whenever the parent reports
   * the name, which is when a new directory may have taken its place.
   */
  private watchBundle(slot: ModelSlot): void {
    const bundle = slot.dir;
    const parent = path.dirname(bundle);
    const name = path.basename(bundle);
    const changed = (): void => {
      if (this.stopping || this.models.get(bundle) !== slot) return;
      if (slot.reloadTimer) clearTimeout(slot.reloadTimer);
      slot.reloadTimer = setTimeout(() => {
        this.reloadSlot(slot, "bundle changed on disk")
          .then((result) => {
            if (result === "swapped") this.publishStatus();
          })
          .catch(() => undefined);
      }, this.config.model.watch_debounce_ms);
    };
    let directoryWatch: FSWatcher | undefined;
    const watchDirectory = (): void => {
      directoryWatch?.close();
      slot.watchers = slot.watchers.filter((w) => w !== directoryWatch);
      directoryWatch = undefined;
      try {
        directoryWatch = watch(bundle, changed);
        directoryWatch.on("error", () => undefined); // the directory went away; the parent's watch re-arms
        slot.watchers.push(directoryWatch);
      } catch {
        // not there right now (being replaced); the parent's watch re-arms when it appears
      }
    };
    try {
      const parentWatch = watch(parent, (_event, file) => {
        if (file !== null && !String(file).startsWith(name)) return;
        watchDirectory();
        changed();
      });
      parentWatch.on("error", (err) =>
        this.logger.warn({ err, bundle }, "bundle watch failed; use SIGHUP to reload"),
      );
      slot.watchers.push(parentWatch);
    } catch (err) {
      this.logger.warn({ dir: parent, err }, "cannot watch the bundle folder; use SIGHUP to reload");
    }
    watchDirectory();
  }

  /**
   * SIGTERM: stop capture, inspect what is already queued, stop the outputs (the MQTT sink flushes its outbox),
   * close the models.
   * {@link stopStep} names the step it is in, for a caller that gives up waiting.
   */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.notifier.stopping();
    for (const t of this.timers) clearInterval(t);
    for (const s of this.stations.values()) this.stopCamera(s);
    for (const slot of this.models.values()) {
      for (const w of slot.watchers) w.close();
      if (slot.reloadTimer) clearTimeout(slot.reloadTimer);
    }
    this.stopStep = "inspecting the frames already queued";
    await Promise.all([...this.models.values()].map((slot) => slot.loop.drain()));
    this.publishStatus();
    // every output heard every inspected frame; the MQTT sink, registered first, stops last (flushing its outbox)
    for (const sink of [...this.sinks].reverse()) {
      this.stopStep = `stopping the output ${sink.name}`;
      await this.stopSink(sink);
    }
    this.stopStep = "closing the inference sessions";
    for (const slot of this.models.values()) await slot.inspector.close();
    this.stopStep = "stopped";
    this.logger.info({ inspected: this.inspectedFrames, dropped: this.droppedFrames }, "stopped");
  }
}

/** The counters `keys` of the sink named `name`, 0 for each it lacks (or when that sink is not running). */
function countsOf<K extends string>(
  sinks: readonly SinkStatus[],
  name: string,
  keys: readonly K[],
): Record<K, number> {
  const counts = sinks.find((s) => s.name === name)?.counts ?? {};
  return Object.fromEntries(keys.map((key) => [key, counts[key] ?? 0])) as Record<K, number>;
}

/** A camera's ignore-mask image, if it names one. */
function maskImageOf(camera: CameraConfig): Promise<MaskImage | undefined> {
  const file = camera.ignore?.mask;
  return file ? loadBinaryImage(file) : Promise.resolve(undefined);
}

/** The config file's own threshold rules (one definition), checked again for values that come from clients. */
const isThresholdRule = new Ajv().compile(thresholdRuleSchema("A camera's threshold rule."));

/** Why a threshold rule from a client is unusable, in one line. */
function thresholdRuleProblem(rule: unknown): string | undefined {
  if (isThresholdRule(rule)) return undefined;
  return `${JSON.stringify(rule)} is not one of {value: x > 0}, {sigma: 0…100}, {false_alarm_rate: 0 < p < 1}`;
}
