import { type FSWatcher, watch } from "node:fs";
import path from "node:path";
import { Camera } from "../capture/camera.js";
import { configProblemsError, type StpmdConfig } from "../config/index.js";
import type { Frame } from "../core/frame.js";
import type { Logger } from "../core/log.js";
import { RateMeter } from "../core/rate-meter.js";
import type { InspectionResult } from "../core/result.js";
import { ortProviders } from "../onnx/ort.js";
import { Collector } from "../pipeline/collector.js";
import { InspectionLoop } from "../pipeline/inspection-loop.js";
import { Inspector } from "../pipeline/inspector.js";
import { Publisher } from "../publish/publisher.js";
import type { CameraStatus } from "../publish/topics.js";
import { cameraSourceProblems, stateDirProblems } from "./startup-checks.js";
import { SystemdNotifier } from "./systemd.js";

export interface DaemonHooks {
  /** Every inspection result, after publishing (tests and the demo watch the stream here). */
  onResult?: (r: InspectionResult) => void;
}

/**
 * The inspection daemon: cameras → bounded frame queue → batched inference → MQTT, with collection beside it.
 * Each stage owns one thing and buffers flow one way; a broker outage or one failing camera never stops the
 * others (the publisher queues defect events on disk, cameras restart themselves).
 */
export class Daemon {
  private readonly loop: InspectionLoop;
  private readonly inspector: Inspector;
  private readonly publisher: Publisher;
  private readonly notifier: SystemdNotifier;
  private cameras: Camera[] = [];
  private collector: Collector | undefined;
  private readonly timers: NodeJS.Timeout[] = [];
  private watcher: FSWatcher | undefined;
  private bundleWatcher: FSWatcher | undefined;
  private reloadTimer: NodeJS.Timeout | undefined;
  private readonly inspected = new RateMeter();
  private readonly perCamera = new Map<string, RateMeter>();
  private lastInspectedTs = 0;
  private readySent = false;
  private stopping = false;
  inspectedFrames = 0;

  constructor(
    private readonly config: StpmdConfig,
    private readonly logger: Logger,
    private readonly hooks: DaemonHooks = {},
  ) {
    const inspectorLog = logger.child({ component: "inspector" });
    this.inspector = new Inspector(
      config.model.bundle,
      {
        providers: ortProviders(config.inference.providers),
        intraOpThreads: config.inference.intra_op_threads,
        onFallback: (provider, reason) =>
          logger.warn(
            { provider, reason: reason.split("\n")[0] },
            "execution provider unavailable; trying the next one",
          ),
      },
      inspectorLog,
    );
    this.loop = new InspectionLoop(this.inspector, config.inference, inspectorLog, (r) => this.deliver(r));
    this.publisher = new Publisher(config.mqtt, logger);
    this.notifier = new SystemdNotifier(logger);
  }

  get modelVersion(): string | undefined {
    return this.inspector.manifest?.model_version;
  }

  get droppedFrames(): number {
    return this.loop.droppedFrames;
  }

  publisherStats(): ReturnType<Publisher["stats"]> {
    return this.publisher.stats();
  }

  /**
   * Checks what can be checked before anything runs (state directories, the model, each camera's pipeline), then
   * starts publishing and capture. Any failure here is fatal and rejects after undoing what was started, so the
   * caller can exit at once: a daemon that cannot serve must not linger half-started.
   */
  async start(): Promise<void> {
    const dirProblems = stateDirProblems(this.config);
    if (dirProblems.length > 0) throw configProblemsError(this.config, dirProblems);
    const manifest = await this.inspector.load();
    this.logger.info(
      { model_version: manifest.model_version, bundle: this.config.model.bundle },
      "model loaded",
    );
    try {
      const cameraProblems = cameraSourceProblems(this.config, manifest.input);
      if (cameraProblems.length > 0) throw configProblemsError(this.config, cameraProblems);
      this.collector = await Collector.open(
        this.config.collection,
        this.logger.child({ component: "collector" }),
      );
      await this.publisher.start();
    } catch (err) {
      await this.inspector.close();
      throw err;
    }
    this.startCameras();
    // seed the status before the first connect, so the first retained `online` already names the model and cameras
    this.publishStatus();
    this.loop.start();
    this.timers.push(setInterval(() => this.publishStatus(), this.config.mqtt.status_interval_s * 1000));
    if (this.config.health.watchdog && this.notifier.watchdogMs > 0) {
      this.timers.push(setInterval(() => this.maybePingWatchdog(), this.notifier.watchdogMs / 2));
    }
    if (this.config.model.watch) this.watchBundle();
  }

  private startCameras(): void {
    const [width, height] = this.inspector.inputSize!;
    const continueFrom = new Map(this.cameras.map((c) => [c.id, c.stats().nextSeq]));
    this.cameras = this.config.cameras
      .filter((c) => c.enabled)
      .map((c) => {
        const cam = new Camera(c, {
          width,
          height,
          logger: this.logger.child({ camera: c.id }),
          firstSeq: continueFrom.get(c.id) ?? 0,
        });
        cam.on("frame", (f: Frame) => this.loop.push(f));
        this.perCamera.set(c.id, this.perCamera.get(c.id) ?? new RateMeter());
        cam.start();
        return cam;
      });
  }

  private deliver(results: InspectionResult[]): void {
    const now = Date.now();
    this.lastInspectedTs = now;
    this.inspectedFrames += results.length;
    this.inspected.add(results.length, now);
    for (const r of results) {
      this.perCamera.get(r.frame.cameraId)?.add(1, now);
      this.publisher.publishResult(r);
      this.collector?.consider(r, this.inspector.manifest?.validation_scores ?? []);
      this.hooks.onResult?.(r);
    }
    if (!this.readySent) {
      this.readySent = true;
      this.notifier.ready(`inspecting, model ${this.modelVersion}`);
      this.logger.info("first frame inspected; ready");
    }
  }

  private cameraStates(): Record<string, CameraStatus> {
    const out: Record<string, CameraStatus> = {};
    for (const cam of this.cameras) {
      const { state, restarts, badFrames } = cam.stats();
      const fps = Number((this.perCamera.get(cam.id)?.rate() ?? 0).toFixed(2));
      out[cam.id] = { state, fps, restarts, bad_frames: badFrames };
    }
    return out;
  }

  private publishStatus(): void {
    const fps = Number(this.inspected.rate().toFixed(2));
    this.publisher.publishStatus({
      model_version: this.modelVersion ?? null,
      fps,
      dropped_frames: this.loop.droppedFrames,
      cameras: this.cameraStates(),
    });
    const { brokerError, connected } = this.publisher.stats();
    const broker = connected || brokerError === undefined ? "" : `, broker: ${brokerError}`;
    this.notifier.status(
      `${fps} fps, ${this.loop.droppedFrames} dropped, model ${this.modelVersion}${broker}`,
    );
  }

  /**
   * WATCHDOG=1 only while frames actually flow: the inference loop finished a batch within the watchdog interval
   * and nothing waits in the queue longer than that. A hung pipeline therefore stops the pings and systemd
   * restarts the daemon. Cameras that are all hardware-triggered may be legitimately silent, so silence alone
   * does not count as hung for them.
   */
  private maybePingWatchdog(): void {
    const now = Date.now();
    const limit = this.notifier.watchdogMs;
    const oldest = this.loop.oldestCaptureTs();
    const queueStuck = oldest !== undefined && now - oldest > limit;
    const allTriggered = this.config.cameras.every((c) => !c.enabled || c.trigger === "hardware");
    const flowing = now - this.lastInspectedTs < limit || (allTriggered && oldest === undefined);
    if (flowing && !queueStuck) this.notifier.watchdog();
  }

  /** SIGHUP or a bundle change: swap in the new model, keeping the old one if the new one fails to load. */
  async reload(reason: string): Promise<void> {
    const before = this.inspector.inputSize;
    const swapped = await this.inspector.reloadIfChanged(reason);
    if (!swapped) return;
    const after = this.inspector.inputSize;
    if (before && after && (before[0] !== after[0] || before[1] !== after[1])) {
      // the capture caps carry the model size; restart cameras so GStreamer scales to the new one
      for (const cam of this.cameras) cam.stop();
      this.startCameras();
    }
    this.publishStatus();
  }

  /**
   * Reloads after the bundle changes on disk, debounced. Two watches, because each sees only half of the ways a
   * bundle is replaced: the parent folder sees the directory itself renamed or replaced (`retrain --out`, `mv`,
   * `cp -a`); the directory's own watch sees its files overwritten in place (`cp new/* bundle/`), which the
   * parent never hears of. The directory's watch follows its inode, so it is re-armed whenever the parent reports
   * the name, which is when a new directory may have taken its place.
   */
  private watchBundle(): void {
    const bundle = path.resolve(this.config.model.bundle);
    const parent = path.dirname(bundle);
    const name = path.basename(bundle);
    const changed = (): void => {
      if (this.stopping) return;
      if (this.reloadTimer) clearTimeout(this.reloadTimer);
      this.reloadTimer = setTimeout(() => {
        this.reload("bundle changed on disk").catch(() => undefined);
      }, this.config.model.watch_debounce_ms);
    };
    const watchDirectory = (): void => {
      this.bundleWatcher?.close();
      this.bundleWatcher = undefined;
      try {
        this.bundleWatcher = watch(bundle, changed);
        this.bundleWatcher.on("error", () => undefined); // the directory went away; the parent's watch re-arms
      } catch {
        // not there right now (being replaced); the parent's watch re-arms when it appears
      }
    };
    try {
      this.watcher = watch(parent, (_event, file) => {
        if (file !== null && !String(file).startsWith(name)) return;
        watchDirectory();
        changed();
      });
      this.watcher.on("error", (err) =>
        this.logger.warn({ err }, "bundle watch failed; use SIGHUP to reload"),
      );
    } catch (err) {
      this.logger.warn({ dir: parent, err }, "cannot watch the bundle folder; use SIGHUP to reload");
    }
    watchDirectory();
  }

  /** SIGTERM: stop capture, inspect what is already queued, flush MQTT, stop. */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.notifier.stopping();
    for (const t of this.timers) clearInterval(t);
    if (this.reloadTimer) clearTimeout(this.reloadTimer);
    this.watcher?.close();
    this.bundleWatcher?.close();
    for (const cam of this.cameras) cam.stop();
    await this.loop.drain();
    this.publishStatus();
    await this.publisher.stop();
    await this.inspector.close();
    this.logger.info({ inspected: this.inspectedFrames, dropped: this.loop.droppedFrames }, "stopped");
  }
}
