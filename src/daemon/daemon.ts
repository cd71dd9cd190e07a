import { configProblemsError, type StpmdConfig } from "../config/index.js";
import { errorMessage } from "../core/errors.js";
import type { Logger } from "../core/log.js";
import { RateMeter } from "../core/rate-meter.js";
import { RepeatLimiter } from "../core/repeat-limiter.js";
import type { InspectionResult } from "../core/result.js";
import { AuditLog } from "../publish/audit/audit-log.js";
import type { AuditStore } from "../publish/audit.js";
import {
  ControlError,
  connectionsOf,
  type LineControl,
  type NodeSnapshot,
  type ReloadOutcome,
  type Requester,
  type SinkStatus,
} from "../publish/control.js";
import type { ResultSink, SinkFactory } from "../publish/sink.js";
import { createSinks, SINKS } from "../publish/sinks.js";
import type { CameraStatus, StatusReport } from "../publish/topics.js";
import { CandidateManager } from "../stations/candidates/manager.js";
import { StationRegistry } from "../stations/registry.js";
import { type ControlHost, StationControl } from "./line-control.js";
import { cameraSourceProblems, recoverStationBundles, stateDirProblems } from "./startup-checks.js";
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

/**
 * The inspection daemon: start-up checks, then the station registry (cameras → one bounded frame queue and
 * batched inference per model bundle) feeding every output (the result sinks of `publish/`: MQTT, collection, HTTP,
 * Sparkplug B, OPC UA); status, readiness and the systemd watchdog; an orderly stop. A broker outage, a failing
 * camera or a broken bundle never stops the others (the MQTT sink queues defect events on disk, cameras restart
 * themselves, a bundle that fails to reload keeps its old model, a sink that throws loses only its own delivery).
 *
 * The line's interfaces change state through {@link control} (./line-control.ts), which acts on the registry.
 */
export class Daemon {
  private readonly config: StpmdConfig;
  private readonly hooks: DaemonHooks;
  private readonly sinkFactories: readonly SinkFactory[];
  private sinks: ResultSink[] = [];
  /** Batches each sink failed on since start, by sink name. */
  private readonly sinkFailures = new Map<string, number>();
  /** A sink that fails on every batch is logged once a minute, with a count. */
  private readonly sinkRepeats = new RepeatLimiter();
  private readonly notifier: SystemdNotifier;
  private readonly registry: StationRegistry;
  /** Every state change, on disk before it is acknowledged (docs/audit.md). */
  readonly audit: AuditStore;
  /** The line's control: what every interface (and SIGHUP) changes state through. */
  readonly control: LineControl;
  /** Retrain jobs, shadow runs and promotions of the cameras' candidate models (docs/candidates.md). */
  readonly candidates: CandidateManager;
  private readonly stationControl: StationControl;
  /** What stop() is doing (see {@link stop}); "" before it is called. */
  stopStep = "";
  private collectionEnabled: boolean;
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly inspected = new RateMeter();
  private readonly startedAt = Date.now();
  private lastInspectedTs = 0;
  private readySent = false;
  private stopping = false;
  /**
   * While start-up runs: resolves once it has ended (never rejects), with whether the daemon now runs. A stop asked
   * for meanwhile waits for it, and so does a reload ({@link ControlHost.startup}).
   */
  private starting: Promise<boolean> | undefined;
  inspectedFrames = 0;

  constructor(
    config: StpmdConfig,
    private readonly logger: Logger,
    options: DaemonOptions = {},
  ) {
    this.config = config;
    this.hooks = options.hooks ?? {};
    this.collectionEnabled = config.collection.enabled;
    this.sinkFactories = options.sinks ?? SINKS;
    this.notifier = new SystemdNotifier(logger);
    this.audit = new AuditLog(
      {
        file: config.audit.file,
        maxBytes: config.audit.max_bytes,
        keep: config.audit.keep,
        fileMode: Number.parseInt(config.audit.file_mode, 8),
      },
      logger.child({ component: "audit" }),
    );
    this.registry = new StationRegistry(
      config,
      logger,
      (results, ms) => this.deliver(results, ms),
      () => this.modelSwappedOnDisk(),
    );
    this.candidates = new CandidateManager({
      config,
      registry: this.registry,
      logger,
      shadows: this.registry.shadows,
      events: {
        // an epoch's progress is in the next periodic status; a job's end is worth one now
        ended: (job) => this.stationControl.jobEnded(job),
      },
    });
    this.stationControl = new StationControl(
      this.registry,
      this.controlHost(),
      logger,
      options.configPath,
      this.audit,
      this.candidates,
    );
    this.control = this.stationControl;
  }

  /** The default bundle's model version (the first loaded one when no camera uses the default). */
  get modelVersion(): string | undefined {
    return this.registry.modelVersion;
  }

  get droppedFrames(): number {
    return this.registry.droppedFrames;
  }

  /** How often a camera's capture was built since start (1 + restarts by config changes and enables). */
  captureStarts(cameraId: string): number {
    return this.registry.captureStarts(cameraId);
  }

  /** An output's health and counters by name (`mqtt`, `collection`, …), undefined when it is not running. */
  sinkStatus(name: string): SinkStatus | undefined {
    return this.sinkStatuses().find((s) => s.name === name);
  }

  snapshot(): NodeSnapshot {
    return this.control.snapshot();
  }

  /** SIGHUP's path (see {@link StationControl.reload}). */
  reload(by: Requester): Promise<ReloadOutcome> {
    return this.control.reload(by);
  }

  /**
   * Checks what can be checked before anything runs (state directories, every station's model, each camera's
   * pipeline), then starts the outputs and then capture, so no result reaches an output that is not running yet.
   * Any failure here is fatal and rejects after undoing what was started, so the caller can exit at once: a daemon
   * that cannot serve must not linger half-started. A {@link stop} called meanwhile (a SIGTERM during start-up) ends
   * start-up after the step in progress, and this resolves; the stop then stops what was started.
   */
  async start(): Promise<void> {
    if (this.starting !== undefined || this.stopping) return;
    const steps = this.startSteps();
    this.starting = steps
      .then(
        () => true,
        () => false,
      )
      .then((started) => {
        this.starting = undefined;
        return started && !this.stopping;
      });
    await steps;
  }

  private async startSteps(): Promise<void> {
    const dirProblems = stateDirProblems(this.config);
    if (dirProblems.length > 0) throw configProblemsError(this.config, dirProblems);
    await this.candidates.repairLiveBundles();
    await recoverStationBundles(this.config, this.logger);
    const sinks = this.createSinks();
    // What the outputs can do without a model runs while the models load: OPC UA's modules, certificates and address
    // space take 1–3 s on the 2-core development box, 5–10 s while it is loaded, and took 25 s after the model in
    // issue 23's first start (measured: docs/line-integration/opcua.md#start-up).
    const preparing = Promise.all(sinks.map((sink) => sink.prepare?.()));
    // a rejection is taken below, after the models loaded; until then it must not count as unhandled
    preparing.catch(() => undefined);
    try {
      await this.registry.open();
    } catch (err) {
      await this.releasePrepared(sinks, [], preparing);
      throw err;
    }
    try {
      await preparing;
      if (!this.stopping) {
        const sizes = this.registry.captureSizes();
        const cameraProblems = cameraSourceProblems(this.config, (i) =>
          sizes.get(this.config.cameras[i]!.id),
        );
        if (cameraProblems.length > 0) throw configProblemsError(this.config, cameraProblems);
        await this.registry.loadMasks();
        this.registry.warnAboutRois();
        await this.startSinks(sinks);
      }
    } catch (err) {
      const started = this.sinks;
      this.sinks = [];
      for (const sink of [...started].reverse()) await this.stopSink(sink);
      await this.releasePrepared(sinks, started, preparing);
      await this.registry.close();
      throw err;
    }
    if (this.stopping) {
      // the stop asked for during start-up stops the started outputs; the prepared rest is released here
      await this.releasePrepared(sinks, this.sinks, preparing);
      return;
    }
    this.auditStart();
    await this.startCandidates();
    this.registry.start();
    if (this.everyCameraDisabled()) {
      // systemd (Type=notify) waits for READY=1, which the first inspected frame sends: with no camera enabled
      // none comes, and the start would time out and be retried for ever
      this.notifier.ready("started; every camera is disabled");
      this.logger.info("started with every camera disabled: not ready (/readyz) until one is enabled");
    }
    // seed the status before the first connect, so the first retained `online` already names the model and cameras
    this.publishStatus();
    this.timers.push(setInterval(() => this.publishStatus(), this.config.mqtt.status_interval_s * 1000));
    if (this.config.health.watchdog && this.notifier.watchdogMs > 0) {
      this.timers.push(setInterval(() => this.maybePingWatchdog(), this.notifier.watchdogMs / 2));
    }
  }

  /** Builds the enabled sinks (none is started: their constructors open nothing). */
  private createSinks(): ResultSink[] {
    return createSinks(
      {
        config: this.config,
        control: this.control,
        audit: this.audit,
        logger: this.logger,
        node: {
          requestOriginal: (id) => this.registry.requestOriginal(id),
          nativeFrame: (id, seq) => this.registry.nativeFrame(id, seq),
          collecting: () => this.collectionEnabled,
          statusReport: () => this.statusReport(),
        },
      },
      this.sinkFactories,
    );
  }

  /** Once `preparing` settled, stops the sinks that were prepared but not `started` (a failed or stopped start). */
  private async releasePrepared(
    sinks: readonly ResultSink[],
    started: readonly ResultSink[],
    preparing: Promise<unknown>,
  ): Promise<void> {
    await preparing.catch(() => undefined);
    for (const sink of sinks) {
      if (sink.prepare !== undefined && !started.includes(sink)) await this.stopSink(sink);
    }
  }

  /**
   * Starts the sinks in order, each one joining {@link sinks} once started (a failure: the caller stops those); a
   * stop asked for meanwhile ends this after the sink that is starting.
   */
  private async startSinks(sinks: readonly ResultSink[]): Promise<void> {
    this.logger.info({ outputs: sinks.map((s) => s.name) }, "starting the outputs");
    for (const sink of sinks) {
      if (this.stopping) return;
      await sink.start();
      this.sinks.push(sink);
    }
  }

  private async stopSink(sink: ResultSink): Promise<void> {
    await sink
      .stop()
      .catch((err: unknown) => this.logger.warn({ sink: sink.name, err }, "stopping an output"));
  }

  /**
   * The state the config file starts the line in, as the first entry of this run (via `config`), so the log shows
   * every threshold and enable from the start, not only the changes made since. A failure is counted and logged:
   * the daemon starts anyway.
   */
  /** Repairs the candidate folders and resumes shadow runs; a problem there is logged, never stops the line. */
  private async startCandidates(): Promise<void> {
    try {
      for (const job of await this.candidates.start()) this.stationControl.jobEnded(job);
    } catch (err) {
      this.logger.error({ err }, "candidate models: start-up repair failed; retrain jobs may be refused");
    }
  }

  private auditStart(): void {
    const cameras = this.control.snapshot().cameras.map(({ id, enabled, threshold, threshold_rule }) => ({
      id,
      enabled,
      threshold,
      threshold_rule,
    }));
    try {
      this.audit.appendSync({
        user: null,
        via: "config",
        action: "start",
        after: { cameras, collection: this.collectionEnabled },
        outcome: "ok",
      });
    } catch {
      // counted and logged by the log
    }
  }

  /** A bundle's file watch swapped its model: on record (via `file-watch`), and the status published. */
  private modelSwappedOnDisk(): void {
    try {
      this.audit.appendSync({
        user: null,
        via: "file-watch",
        action: "reload_result",
        after: { models: this.control.snapshot().models.map((m) => `${m.bundle}@${m.model_version}`) },
        outcome: "ok",
      });
    } catch {
      // counted and logged by the log: a new model on disk is served whether or not its entry was written
    }
    this.publishStatus();
  }

  /** What the line's control reads and changes of the daemon itself (the rest it asks the registry). */
  private controlHost(): ControlHost {
    return {
      nodeSnapshot: () => this.nodeSnapshot(),
      setCollection: (enabled) => {
        if (enabled && !this.config.collection.enabled) {
          throw new ControlError(
            "collection is disabled in the config file (collection.enabled); enable it there first",
          );
        }
        const old = this.collectionEnabled;
        this.collectionEnabled = enabled;
        return { old };
      },
      statusChanged: () => this.publishStatus(),
      isStopping: () => this.stopping,
      startup: () => this.starting,
    };
  }

  private deliver(results: InspectionResult[], inferenceMs: number): void {
    const now = Date.now();
    this.lastInspectedTs = now;
    this.inspectedFrames += results.length;
    this.inspected.add(results.length, now);
    // a batch never mixes bundles: its first frame's station names the model that judged it
    const station = results[0] ? this.registry.station(results[0].frame.cameraId) : undefined;
    const manifest = station ? this.registry.manifestOf(station) : undefined;
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
      recipe: this.registry.activeRecipe ?? null,
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
    for (const s of this.registry.stations()) {
      // a stopped or disabled camera is reported too, with what its last capture counted
      const { state, restarts, badFrames } = s.camera?.stats() ?? {
        state: "stopped" as const,
        ...s.lastCounts,
      };
      out[s.id] = {
        state,
        fps: Number(s.rate.rate().toFixed(2)),
        restarts,
        bad_frames: badFrames,
        errors: s.errors,
        model_version: this.registry.manifestOf(s)?.model_version ?? null,
        threshold: this.registry.thresholdOf(s),
        predicted_false_alarms: this.registry.falseAlarmsOf(s),
      };
    }
    return out;
  }

  /**
   * Tells every sink the node's status changed, and systemd in one line (with any output that is failing, and the
   * audit log while it cannot be written: every operator change is refused then).
   */
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
    const audit = this.audit.health();
    const auditFailing = audit.ok ? "" : `, ${audit.detail}`;
    this.notifier.status(
      `${fps} fps, ${dropped_frames} dropped, model ${this.modelVersion}${failing}${auditFailing}`,
    );
  }

  /**
   * Model loaded and frames flowing: the loops finished a batch within the watchdog interval (or, without a
   * watchdog, within 30 s) and nothing waits in a queue longer than that. Cameras that are all hardware-triggered
   * may be legitimately silent, so silence alone does not count as hung for them.
   */
  private isFlowing(limitMs: number): boolean {
    const now = Date.now();
    const oldest = this.registry.oldestQueuedCaptureTs();
    const queueStuck = oldest !== undefined && now - oldest > limitMs;
    const running = this.registry.stations().filter((s) => s.camera);
    const allTriggered = running.every((s) => s.config.trigger === "hardware");
    const flowing = now - this.lastInspectedTs < limitMs || (allTriggered && oldest === undefined);
    return flowing && !queueStuck && this.registry.models().length > 0;
  }

  /** Every camera disabled (in the config file or by an operator): nothing runs that could hang. */
  private everyCameraDisabled(): boolean {
    return !this.registry.stations().some((s) => s.enabled);
  }

  /**
   * WATCHDOG=1 only while frames actually flow, so a hung pipeline stops the pings and systemd restarts us; and
   * while every camera is disabled, where a restart would only undo an operator's disable (the config file's
   * enables come back), or, with every camera disabled in the file, restart the node every WatchdogSec.
   */
  private maybePingWatchdog(): void {
    if (this.everyCameraDisabled() || this.isFlowing(this.notifier.watchdogMs)) this.notifier.watchdog();
  }

  /** The node-wide part of the line's snapshot. */
  private nodeSnapshot(): Omit<NodeSnapshot, "cameras" | "models" | "recipe" | "recipes"> {
    const sinks = this.sinkStatuses();
    return {
      uptime_s: Math.round((Date.now() - this.startedAt) / 1000),
      fps: Number(this.inspected.rate().toFixed(2)),
      inspected: this.inspectedFrames,
      dropped_frames: this.droppedFrames,
      ready: this.readySent && this.isFlowing(this.notifier.watchdogMs || 30_000),
      // the two outputs the snapshot has always summed up: the MQTT outbox and collection (0 while not running)
      outbox: countsOf(sinks, "mqtt", ["queued", "overflowed", "lost"]),
      collection: {
        enabled: this.collectionEnabled,
        ...countsOf(sinks, "collection", ["saved", "failed", "dropped", "deleted"]),
      },
      audit: this.audit.health(),
      sinks,
      connections: connectionsOf(sinks),
    };
  }

  /**
   * SIGTERM (at any time: during start-up it first waits for the step in progress): stop capture, inspect what is
   * already queued, stop the outputs (the MQTT sink flushes its outbox), close the models.
   * {@link stopStep} names the step it is in, for a caller that gives up waiting.
   */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.notifier.stopping();
    const startup = this.starting;
    if (startup !== undefined) {
      this.stopStep = "finishing the start-up step in progress";
      this.logger.info(
        "stop asked for during start-up: stopping what was started after the step in progress",
      );
      await startup;
    }
    for (const t of this.timers) clearInterval(t);
    this.registry.stopCapture();
    this.stopStep = "inspecting the frames already queued";
    await this.registry.drain();
    this.publishStatus();
    // every output heard every inspected frame; the MQTT sink, registered first, stops last (flushing its outbox)
    for (const sink of [...this.sinks].reverse()) {
      this.stopStep = `stopping the output ${sink.name}`;
      await this.stopSink(sink);
    }
    this.stopStep = "stopping the retrain job";
    await this.candidates.close();
    this.stopStep = "closing the inference sessions";
    await this.registry.close();
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
