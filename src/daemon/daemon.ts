import { configProblemsError, type StpmdConfig } from "../config/index.js";
import type { Logger } from "../core/log.js";
import { RateMeter } from "../core/rate-meter.js";
import type { InspectionResult } from "../core/result.js";
import {
  ControlError,
  createLineInterfaces,
  type LineControl,
  type LineInterface,
  type NodeSnapshot,
  type ReloadOutcome,
  type Requester,
} from "../line/index.js";
import { Collector } from "../pipeline/collector.js";
import { Publisher } from "../publish/publisher.js";
import type { CameraStatus } from "../publish/topics.js";
import { StationRegistry } from "../stations/registry.js";
import { type ControlHost, StationControl } from "./line-control.js";
import { cameraSourceProblems, stateDirProblems } from "./startup-checks.js";
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
}

/**
 * The inspection daemon: start-up checks, then the station registry (cameras → one bounded frame queue and
 * batched inference per model bundle), the MQTT publisher, collection and the line's interfaces, wired together;
 * status, readiness and the systemd watchdog; an orderly stop. A broker outage, a failing camera or a broken bundle
 * never stops the others (the publisher queues defect events on disk, cameras restart themselves, a bundle that
 * fails to reload keeps its old model).
 *
 * The line's interfaces change state through {@link control} (./line-control.ts), which acts on the registry.
 */
export class Daemon {
  private readonly config: StpmdConfig;
  private readonly hooks: DaemonHooks;
  private readonly publisher: Publisher;
  private readonly notifier: SystemdNotifier;
  private readonly registry: StationRegistry;
  /** The line's control: what every interface (and SIGHUP) changes state through. */
  readonly control: LineControl;
  private collector: Collector | undefined;
  /** What stop() is doing (see {@link stop}); "" before it is called. */
  stopStep = "";
  private collectionEnabled: boolean;
  private lineInterfaces: LineInterface[] = [];
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly inspected = new RateMeter();
  private readonly startedAt = Date.now();
  private lastInspectedTs = 0;
  private readySent = false;
  private stopping = false;
  inspectedFrames = 0;

  constructor(
    config: StpmdConfig,
    private readonly logger: Logger,
    options: DaemonOptions = {},
  ) {
    this.config = config;
    this.hooks = options.hooks ?? {};
    this.collectionEnabled = config.collection.enabled;
    this.publisher = new Publisher(config.mqtt, logger);
    this.notifier = new SystemdNotifier(logger);
    this.registry = new StationRegistry(
      config,
      logger,
      (results, ms) => this.deliver(results, ms),
      () => this.publishStatus(),
    );
    this.control = new StationControl(this.registry, this.controlHost(), logger, options.configPath);
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

  publisherStats(): ReturnType<Publisher["stats"]> {
    return this.publisher.stats();
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
   * pipeline), then starts publishing, capture and the line's interfaces. Any failure here is fatal and rejects
   * after undoing what was started, so the caller can exit at once: a daemon that cannot serve must not linger
   * half-started.
   */
  async start(): Promise<void> {
    const dirProblems = stateDirProblems(this.config);
    if (dirProblems.length > 0) throw configProblemsError(this.config, dirProblems);
    await this.registry.open();
    try {
      const sizes = this.registry.captureSizes();
      const cameraProblems = cameraSourceProblems(this.config, (i) => sizes.get(this.config.cameras[i]!.id));
      if (cameraProblems.length > 0) throw configProblemsError(this.config, cameraProblems);
      await this.registry.loadMasks();
      this.registry.warnAboutRois();
      this.collector = await Collector.open(
        this.config.collection,
        this.logger.child({ component: "collector" }),
        { requestOriginal: (id) => this.registry.requestOriginal(id) },
      );
      await this.publisher.start();
    } catch (err) {
      await this.registry.close();
      throw err;
    }
    this.registry.start();
    // seed the status before the first connect, so the first retained `online` already names the model and cameras
    this.publishStatus();
    this.timers.push(setInterval(() => this.publishStatus(), this.config.mqtt.status_interval_s * 1000));
    if (this.config.health.watchdog && this.notifier.watchdogMs > 0) {
      this.timers.push(setInterval(() => this.maybePingWatchdog(), this.notifier.watchdogMs / 2));
    }
    this.lineInterfaces = createLineInterfaces(this.config, this.control, this.logger, {
      mqtt: this.publisher,
    });
    try {
      for (const line of this.lineInterfaces) await line.start();
    } catch (err) {
      await this.stop();
      throw err;
    }
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
    };
  }

  private deliver(results: InspectionResult[], inferenceMs: number): void {
    const now = Date.now();
    this.lastInspectedTs = now;
    this.inspectedFrames += results.length;
    this.inspected.add(results.length, now);
    this.hooks.onBatch?.(results);
    for (const line of this.lineInterfaces) line.onBatch?.(results.length, inferenceMs);
    for (const r of results) {
      this.publisher.publishResult(r);
      if (this.collectionEnabled)
        this.collector?.consider(r, this.registry.validationScores(r.frame.cameraId));
      this.hooks.onResult?.(r);
      for (const line of this.lineInterfaces) {
        try {
          line.onResult?.(r);
        } catch (err) {
          this.logger.error({ interface: line.name, err }, "line interface failed on a result");
        }
      }
    }
    if (!this.readySent) {
      this.readySent = true;
      this.notifier.ready(`inspecting, model ${this.modelVersion}`);
      this.logger.info("first frame inspected; ready");
    }
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
        model_version: this.registry.manifestOf(s)?.model_version ?? null,
        threshold: this.registry.thresholdOf(s),
      };
    }
    return out;
  }

  private publishStatus(): void {
    const fps = Number(this.inspected.rate().toFixed(2));
    const dropped = this.droppedFrames;
    this.publisher.publishStatus({
      model_version: this.modelVersion ?? null,
      fps,
      dropped_frames: dropped,
      cameras: this.cameraStates(),
    });
    const { brokerError, connected } = this.publisher.stats();
    const broker = connected || brokerError === undefined ? "" : `, broker: ${brokerError}`;
    this.notifier.status(`${fps} fps, ${dropped} dropped, model ${this.modelVersion}${broker}`);
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

  /** WATCHDOG=1 only while frames actually flow, so a hung pipeline stops the pings and systemd restarts us. */
  private maybePingWatchdog(): void {
    if (this.isFlowing(this.notifier.watchdogMs)) this.notifier.watchdog();
  }

  /** The node-wide part of the line's snapshot. */
  private nodeSnapshot(): Omit<NodeSnapshot, "cameras" | "models"> {
    const stats = this.publisher.stats();
    return {
      uptime_s: Math.round((Date.now() - this.startedAt) / 1000),
      fps: Number(this.inspected.rate().toFixed(2)),
      inspected: this.inspectedFrames,
      dropped_frames: this.droppedFrames,
      ready: this.readySent && this.isFlowing(this.notifier.watchdogMs || 30_000),
      outbox: { queued: stats.outboxQueued, overflowed: stats.eventsOverflowed, lost: stats.eventsLost },
      collection: {
        enabled: this.collectionEnabled,
        ...(this.collector?.stats() ?? { saved: 0, failed: 0, dropped: 0, deleted: 0 }),
      },
    };
  }

  /**
   * SIGTERM: stop the line's interfaces and capture, inspect what is already queued, flush MQTT, stop.
   * {@link stopStep} names the step it is in, for a caller that gives up waiting.
   */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.notifier.stopping();
    for (const t of this.timers) clearInterval(t);
    for (const line of this.lineInterfaces) {
      this.stopStep = `stopping the line interface ${line.name}`;
      await line.stop().catch((err: unknown) => this.logger.warn({ interface: line.name, err }, "stopping"));
    }
    this.registry.stopCapture();
    this.stopStep = "inspecting the frames already queued";
    await this.registry.drain();
    this.publishStatus();
    this.stopStep = "flushing MQTT";
    await this.publisher.stop();
    this.stopStep = "closing the inference sessions";
    await this.registry.close();
    this.stopStep = "stopped";
    this.logger.info({ inspected: this.inspectedFrames, dropped: this.droppedFrames }, "stopped");
  }
}
