import path from "node:path";
import { bundleGeometry, bundlePartScore, loadBundle, type Manifest } from "../bundle/bundle.js";
import { Camera } from "../capture/camera.js";
import { framesAwaitingVerdict } from "../capture/frame-source.js";
import {
  type CameraConfig,
  cameraChanges,
  cameraUnderRecipe,
  changedKeys,
  configProblemsError,
  keepRestartKeys,
  recipeNames,
  type StpmdConfig,
  type ThresholdRule,
} from "../config/index.js";
import { keepsNativeFrames } from "../config/rules.js";
import { errorMessage } from "../core/errors.js";
import type { Frame, NativeFrame } from "../core/frame.js";
import type { Logger } from "../core/log.js";
import type { InspectionResult } from "../core/result.js";
import { loadBinaryImage } from "../data/images.js";
import type { StationView } from "../pipeline/inspector.js";
import { describePartScore } from "../stpm/part-score.js";
import type { PredictedFalseAlarms } from "../stpm/threshold.js";
import { ShadowScheduler } from "./candidates/shadow.js";
import { type BatchConsumer, ModelSlot } from "./model-slot.js";
import {
  MAX_PENDING_TRIGGERS,
  type MaskImage,
  needsCameraRestart,
  roiWarnings,
  Station,
  stationBundle,
} from "./station.js";

/** A refused station request (unknown camera, not running, model does not load): the message says why. */
export class StationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "StationError";
  }
}

/** What a run-time change of the stations did: problems (one line each) and bundles that failed to load. */
export interface StationChanges {
  problems: string[];
  failed: string[];
}

/** What a recipe switch did: the recipe before and after, and the bundles loaded for it. */
export interface RecipeSwitch {
  old: string | undefined;
  new: string | undefined;
  /** Bundles loaded (and so checked) for the switch, which no station had loaded before. */
  loaded: string[];
}

/** Bundles a model reload swapped, and those whose new model failed to load (their old model is kept). */
export interface ModelReloads {
  swapped: string[];
  failed: string[];
}

/**
 * The stations at run time, below the daemon: each camera's station (config, capture, threshold, ignore mask,
 * counters), the model slots their bundles are loaded in, loading and unloading them as stations come and go, and
 * watching each bundle on disk. A frame's whole way through judging stays here: the camera hands it to its
 * station's slot with its part id, the slot's loop looks up the station's view, and the results are recorded on
 * their station before the one consumer the daemon wires in ({@link BatchConsumer}) receives them.
 *
 * Cameras are built, started and stopped only in {@link startCamera} and {@link stopCamera}.
 */
export class StationRegistry {
  /** The config in force: cameras and the default bundle as applied at run time, the rest as at start. */
  private config: StpmdConfig;
  private readonly slots = new Map<string, ModelSlot>();
  private readonly byId = new Map<string, Station>();
  private stopping = false;
  /** The recipe in force (undefined: the cameras' own settings); see {@link selectRecipe}. */
  private active: string | undefined;
  /** The recipe switch or config change running now: they run one after the other, never interleaved. */
  private changing: Promise<unknown> = Promise.resolve();
  /**
   * The candidates' shadow runs (issue 22): each judges a share of its camera's live results after the consumer
   * had them, never delivered; its batches wait while the camera's live model has frames queued.
   */
  readonly shadows: ShadowScheduler;

  /**
   * @param consume every batch's results, after each was recorded on its station.
   * @param modelSwapped called after the file watch swapped a bundle's model (status changed).
   */
  constructor(
    config: StpmdConfig,
    private readonly logger: Logger,
    private readonly consume: BatchConsumer,
    private readonly modelSwapped: () => void = () => undefined,
  ) {
    this.config = config;
    this.active = config.active_recipe;
    this.shadows = new ShadowScheduler({
      candidates: config.candidates,
      inference: config.inference,
      logger,
      host: {
        liveBusy: (camera) => this.liveBusy(camera),
        lookup: (cameraId, manifest, recipe) => this.view(cameraId, manifest, recipe),
        liveManifest: (camera) => this.liveManifest(camera),
      },
    });
  }

  // --- queries ----------------------------------------------------------------------------------------------

  /** The recipe in force; undefined when each camera judges by its own settings. */
  get activeRecipe(): string | undefined {
    return this.active;
  }

  /** The recipes the config offers, in file order. */
  recipeNames(): string[] {
    return Object.keys(this.config.recipes);
  }

  /** The stations, in config order. */
  stations(): Station[] {
    return [...this.byId.values()];
  }

  station(id: string): Station | undefined {
    return this.byId.get(id);
  }

  /** The loaded model slots, one per bundle in use. */
  models(): ModelSlot[] {
    return [...this.slots.values()];
  }

  /** The manifest of the model a station's frames are judged by, if it is loaded. */
  manifestOf(station: Station): Manifest | undefined {
    return this.slots.get(station.bundle)?.inspector.manifest;
  }

  /** The threshold in force for a station, null while its model is not loaded. */
  thresholdOf(station: Station): number | null {
    const manifest = this.manifestOf(station);
    return manifest ? station.threshold(manifest) : null;
  }

  /** The threshold's false-alarm rate as the validation normals of the station's model predict it; null without a model. */
  falseAlarmsOf(station: Station): PredictedFalseAlarms | null {
    const manifest = this.manifestOf(station);
    return (manifest && station.view(manifest).falseAlarms) ?? null;
  }

  /** How the station's maps become part scores under its model ("max", "smoothed_max (σ = 4 px)"); null without a model. */
  partScoreOf(station: Station): string | null {
    const manifest = this.manifestOf(station);
    return manifest ? describePartScore(station.view(manifest).score ?? bundlePartScore(manifest)) : null;
  }

  /** The validation image scores of the model a camera's frames are judged by (collection's yardstick). */
  validationScores(cameraId: string): number[] {
    const station = this.byId.get(cameraId);
    return (station && this.manifestOf(station)?.validation_scores) ?? [];
  }

  /** The default bundle's model version (the first loaded one when no camera uses the default). */
  get modelVersion(): string | undefined {
    const slot = this.slots.get(path.resolve(this.config.model.bundle)) ?? this.models()[0];
    return slot?.inspector.manifest?.model_version;
  }

  get droppedFrames(): number {
    let dropped = 0;
    for (const slot of this.slots.values()) dropped += slot.loop.droppedFrames;
    return dropped;
  }

  /** This station's frames dropped by its bundle's full queue. */
  droppedFramesOf(station: Station): number {
    return this.slots.get(station.bundle)?.loop.droppedByCamera()[station.id] ?? 0;
  }

  /** How often a camera's capture was built since start (1 + restarts by config changes and enables). */
  captureStarts(cameraId: string): number {
    return this.byId.get(cameraId)?.captureStarts ?? 0;
  }

  /** Asks a running camera for one frame at collection size (false when it is not running or busy). */
  requestOriginal(cameraId: string): boolean {
    return this.byId.get(cameraId)?.camera?.requestOriginal() ?? false;
  }

  /** Frame `seq` of a camera at the ROI's own resolution, while its capture keeps it (Camera.nativeFrame). */
  nativeFrame(cameraId: string, seq: number): Promise<NativeFrame | null> {
    return this.byId.get(cameraId)?.camera?.nativeFrame(seq) ?? Promise.resolve(null);
  }

  /** Capture time of the oldest frame waiting in any queue (the watchdog's "is a queue stuck" test). */
  oldestQueuedCaptureTs(): number | undefined {
    let oldest: number | undefined;
    for (const slot of this.slots.values()) {
      const ts = slot.loop.oldestCaptureTs();
      if (ts !== undefined && (oldest === undefined || ts < oldest)) oldest = ts;
    }
    return oldest;
  }

  /** Capture size of every camera whose model is loaded, from the model's geometry. */
  captureSizes(): Map<string, { width: number; height: number }> {
    const sizes = new Map<string, { width: number; height: number }>();
    for (const s of this.byId.values()) {
      const size = this.slots.get(s.bundle)?.inspector.inputSize;
      if (size) sizes.set(s.id, { width: size[0], height: size[1] });
    }
    return sizes;
  }

  // --- lifecycle --------------------------------------------------------------------------------------------

  /**
   * Builds the stations and loads the model of every enabled one; a model that does not load rejects with the
   * config problem naming the key that chose it (as check-config names it), after closing what was loaded.
   */
  async open(): Promise<void> {
    try {
      for (const own of this.config.cameras) {
        const camera = this.underRecipe(own);
        this.byId.set(
          camera.id,
          new Station(camera, this.bundleOf(camera), this.cameraLogger(camera.id), this.active),
        );
      }
      for (const dir of this.bundlesInUse()) {
        let manifest: Manifest;
        try {
          manifest = await this.openSlot(dir).load();
        } catch (err) {
          throw configProblemsError(this.config, [{ path: this.bundleKey(dir), message: errorMessage(err) }]);
        }
        this.logger.info({ model_version: manifest.model_version, bundle: dir }, "model loaded");
      }
    } catch (err) {
      await this.close();
      throw err;
    }
  }

  /** The config key that chose bundle `dir` for an enabled camera (a recipe's, a camera's, or the default). */
  private bundleKey(dir: string): (string | number)[] {
    const i = this.config.cameras.findIndex((c) => {
      const camera = this.underRecipe(c);
      return camera.enabled && this.bundleOf(camera) === dir;
    });
    const camera = this.config.cameras[i];
    if (camera && this.active !== undefined && this.config.recipes[this.active]?.[camera.id]?.bundle) {
      return ["recipes", this.active, camera.id, "bundle"];
    }
    return camera?.model ? ["cameras", i, "model"] : ["model", "bundle"];
  }

  /** A camera's settings under the recipe in force. */
  private underRecipe(camera: CameraConfig): CameraConfig {
    return cameraUnderRecipe(camera, this.config, this.active);
  }

  /** Reads every station's ignore-mask image (a start-up failure: the caller closes the registry). */
  async loadMasks(): Promise<void> {
    for (const station of this.byId.values()) station.maskImage = await maskImageOf(station.config);
  }

  /**
   * Starts the enabled cameras and every slot's inspection loop, and resumes (in the background) the shadow runs
   * the last daemon left running.
   */
  start(): void {
    for (const station of this.byId.values()) if (station.enabled) this.startCamera(station);
    for (const slot of this.slots.values()) slot.loop.start();
    void this.shadows.resume([...this.byId.keys()]);
  }

  /** Stops every camera and bundle watch: nothing new enters the queues. */
  stopCapture(): void {
    this.stopping = true;
    for (const s of this.byId.values()) this.stopCamera(s);
    for (const slot of this.slots.values()) slot.unwatch();
  }

  /** Inspects and delivers the frames already queued. */
  async drain(): Promise<void> {
    await Promise.all(this.models().map((slot) => slot.loop.drain()));
    await this.shadows.idle();
  }

  /** Releases every model (after {@link drain}, or on a failed start). */
  async close(): Promise<void> {
    this.stopping = true;
    await this.shadows.close();
    for (const slot of this.slots.values()) {
      slot.unwatch();
      await slot.inspector.close();
    }
    this.slots.clear();
  }

  // --- run-time changes -------------------------------------------------------------------------------------

  /** The station named `cameraId`, or a refusal naming the known ones. */
  require(cameraId: string): Station {
    const s = this.byId.get(cameraId);
    if (!s)
      throw new StationError(`unknown camera "${cameraId}" (known: ${[...this.byId.keys()].join(", ")})`);
    return s;
  }

  /** Sets a station's threshold rule; the thresholds in force before and after (null without a model). */
  setThresholdRule(cameraId: string, rule: ThresholdRule): { old: number | null; new: number | null } {
    const s = this.require(cameraId);
    const old = this.thresholdOf(s);
    s.setThresholdRule(rule);
    return { old, new: this.thresholdOf(s) };
  }

  /** Starts or stops a camera, loading its model first (refused if it does not load); false if nothing changed. */
  async setEnabled(cameraId: string, enabled: boolean): Promise<boolean> {
    const s = this.require(cameraId);
    if (s.enabled === enabled) return false;
    if (enabled && !this.slots.has(s.bundle)) {
      const slot = this.openSlot(s.bundle);
      try {
        await slot.load();
      } catch (err) {
        await this.closeSlot(slot);
        throw new StationError(
          `camera "${cameraId}" cannot start: its model does not load (${errorMessage(err)})`,
        );
      }
      slot.loop.start();
    }
    s.enabled = enabled;
    if (enabled) this.startCamera(s);
    else this.stopCamera(s);
    await this.unloadUnusedModels();
    return true;
  }

  /** Tags the camera's next frame with `partId` (see LineControl.trigger). */
  trigger(cameraId: string, partId: string, expiresInMs: number): void {
    const s = this.require(cameraId);
    if (!s.camera) throw new StationError(`camera "${cameraId}" is not running`);
    if (s.pendingParts.length >= MAX_PENDING_TRIGGERS) {
      throw new StationError(
        `camera "${cameraId}" already holds ${MAX_PENDING_TRIGGERS} triggers waiting for a frame; refusing part "${partId}"`,
      );
    }
    s.pendingParts.push({ partId, expiresAt: Date.now() + expiresInMs });
  }

  /**
   * Applies a re-read config as each key's reload rule in the schema says: `live` keys (thresholds, ignore masks)
   * at once; `camera` keys by restarting only the cameras they concern (a camera whose capture settings or model
   * changed restarts alone, added and removed cameras start and stop, enables start and stop); `restart` keys keep
   * their running values and are named in one warning. Models no station uses any more are unloaded. A camera
   * whose mask or model does not load keeps its previous settings (named in the returned problems).
   */
  applyConfig(next: StpmdConfig): Promise<StationChanges> {
    return this.exclusive(() => this.applyConfigNow(next));
  }

  private async applyConfigNow(next: StpmdConfig): Promise<StationChanges> {
    const changes: StationChanges = { problems: [], failed: [] };
    const old = this.config;
    // a recipe selected at run time holds until the file's own active_recipe changes (or the recipe is gone)
    if (
      old.active_recipe !== next.active_recipe ||
      (this.active !== undefined && !(this.active in next.recipes))
    ) {
      if (this.active !== next.active_recipe) {
        this.logger.info(
          { from: this.active ?? null, to: next.active_recipe ?? null },
          `recipe ${next.active_recipe ?? "(none)"} in force from the configuration file`,
        );
      }
      this.active = next.active_recipe;
    }
    const atNextStart = changedKeys(old, next)
      .filter((change) => change.rule === "restart")
      .map((change) => change.key);
    if (atNextStart.length > 0) {
      this.logger.warn(
        { keys: atNextStart },
        `changed keys take effect at the next start: ${atNextStart.join(", ")}`,
      );
    }
    this.config = keepRestartKeys(old, next);
    const nextIds = new Set(next.cameras.map((c) => c.id));
    for (const s of this.stations()) {
      if (nextIds.has(s.id)) continue;
      this.stopCamera(s);
      this.byId.delete(s.id);
      this.logger.info({ camera: s.id }, "camera removed from the configuration; stopped");
    }
    for (const own of next.cameras) await this.applyCamera(this.underRecipe(own), changes);
    await this.unloadUnusedModels();
    return changes;
  }

  /** Runs run-time changes of the stations one after the other (a recipe switch never meets a reload halfway). */
  private exclusive<T>(change: () => Promise<T>): Promise<T> {
    const run = this.changing.then(change, change);
    this.changing = run.catch(() => undefined);
    return run;
  }

  /**
   * Switches the line to `recipe` (undefined: every camera's own settings). Every bundle the recipe needs is
   * loaded, and every ignore mask read, first: one that does not load refuses the switch with the reason, and
   * nothing changes (bundles loaded for it are unloaded again). Then each camera switches between two frames: the
   * frames captured from then on carry the new recipe and go to its bundle's queue, and those already queued are
   * judged under the recipe they were captured in. A camera restarts only where the recipe changes what only a new
   * capture pipeline can apply (its ROI, a model of another input size, its enable).
   */
  selectRecipe(recipe: string | undefined): Promise<RecipeSwitch> {
    return this.exclusive(() => this.selectRecipeNow(recipe));
  }

  private async selectRecipeNow(recipe: string | undefined): Promise<RecipeSwitch> {
    if (this.stopping) throw new StationError("the daemon is stopping");
    if (recipe !== undefined && !(recipe in this.config.recipes)) {
      throw new StationError(`unknown recipe "${recipe}" (known: ${recipeNames(this.config)})`);
    }
    const old = this.active;
    const plans = this.config.cameras.flatMap((own) => {
      const station = this.byId.get(own.id);
      if (!station) return [];
      const next = cameraUnderRecipe(own, this.config, recipe);
      return [{ station, next, bundle: this.bundleOf(next) }];
    });
    const loaded: ModelSlot[] = [];
    const masks = new Map<string, MaskImage | undefined>();
    try {
      for (const { station, next, bundle } of plans) {
        const name = recipe === undefined ? "(none)" : `"${recipe}"`;
        const why = (what: string) => `recipe ${name} refused: camera "${station.id}": ${what}`;
        try {
          masks.set(station.id, await maskImageOf(next));
        } catch (err) {
          throw new StationError(why(`its ignore mask does not load (${errorMessage(err)})`));
        }
        if (!station.enabledUnder(next) || this.slots.get(bundle)?.inspector.manifest) continue;
        const slot = this.openSlot(bundle);
        loaded.push(slot);
        try {
          const manifest = await slot.load();
          this.logger.info({ model_version: manifest.model_version, bundle, recipe }, "model loaded");
        } catch (err) {
          throw new StationError(why(`its bundle ${bundle} does not load (${errorMessage(err)})`));
        }
        slot.loop.start();
      }
    } catch (err) {
      for (const slot of loaded) await this.closeSlot(slot);
      throw err;
    }
    this.active = recipe;
    for (const { station, next, bundle } of plans) {
      const before = station.config;
      const wasEnabled = station.enabled;
      const oldSize = this.slots.get(station.bundle)?.inspector.inputSize;
      station.switchRecipe(recipe, next, masks.get(station.id), this.manifestOf(station));
      station.bundle = bundle;
      const size = this.slots.get(bundle)?.inspector.inputSize;
      const sizeChanged = size !== undefined && (oldSize?.[0] !== size[0] || oldSize?.[1] !== size[1]);
      if (!station.enabled) this.stopCamera(station);
      else if (!wasEnabled || !station.camera || sizeChanged || needsPipelineChange(before, next)) {
        this.restartCamera(station);
      }
    }
    await this.unloadUnusedModels();
    this.warnAboutRois();
    return { old, new: recipe, loaded: loaded.map((slot) => slot.dir) };
  }

  private async applyCamera(camera: CameraConfig, changes: StationChanges): Promise<void> {
    const bundle = this.bundleOf(camera);
    let maskImage: MaskImage | undefined;
    try {
      maskImage = await maskImageOf(camera);
    } catch (err) {
      changes.problems.push(`cameras (id "${camera.id}").ignore.mask: ${errorMessage(err)}`);
      this.logger.error(
        { camera: camera.id, err },
        "ignore mask unreadable; keeping this camera's previous settings",
      );
      return;
    }
    const existing = this.byId.get(camera.id);
    if (!existing) {
      const s = new Station(camera, bundle, this.cameraLogger(camera.id), this.active);
      s.maskImage = maskImage;
      this.byId.set(camera.id, s);
      if (s.enabled && (await this.ensureModel(bundle, camera.id, changes))) this.startCamera(s);
      this.logger.info({ camera: camera.id, enabled: s.enabled }, "camera added by the configuration");
      return;
    }
    const restart = needsCameraRestart(existing.config, camera) || existing.bundle !== bundle;
    const wasEnabled = existing.enabled;
    existing.applyConfig(camera, maskImage);
    existing.recipe = this.active;
    if (existing.bundle !== bundle) {
      if (!(await this.ensureModel(bundle, camera.id, changes))) {
        this.stopCamera(existing);
        return;
      }
      existing.bundle = bundle;
    }
    if (existing.enabled && !(await this.ensureModel(bundle, camera.id, changes))) return;
    if (!existing.enabled) this.stopCamera(existing);
    else if (restart || !wasEnabled || !existing.camera) {
      this.restartCamera(existing);
      if (restart) this.logger.info({ camera: camera.id }, "camera restarted with its new settings");
    }
  }

  /**
   * Reloads every loaded bundle that changed on disk (a broken one keeps its old model), then warns about ROIs
   * that no longer match their bundle.
   */
  async reloadModels(reason: string): Promise<ModelReloads> {
    const reloads: ModelReloads = { swapped: [], failed: [] };
    for (const slot of this.models()) {
      const result = await this.reloadSlot(slot, reason);
      if (result === "failed") reloads.failed.push(slot.dir);
      if (result === "swapped") reloads.swapped.push(slot.dir);
    }
    this.warnAboutRois();
    return reloads;
  }

  /** Logs each station whose ROI does not match what its bundle was trained on. */
  warnAboutRois(): void {
    for (const s of this.byId.values()) {
      const manifest = this.manifestOf(s);
      if (!manifest) continue;
      for (const warning of roiWarnings(s.config, bundleGeometry(manifest))) {
        this.logger.warn({ camera: s.id, bundle: s.bundle }, warning);
      }
    }
  }

  // --- model slots ------------------------------------------------------------------------------------------

  private bundleOf(camera: CameraConfig): string {
    return path.resolve(stationBundle(camera, this.config));
  }

  private cameraLogger(id: string): Logger {
    return this.logger.child({ camera: id });
  }

  /** Bundles of the enabled stations (a disabled camera's bundle is loaded when it is enabled). */
  private bundlesInUse(): Set<string> {
    const dirs = new Set<string>();
    for (const s of this.byId.values()) if (s.enabled) dirs.add(s.bundle);
    return dirs;
  }

  private openSlot(dir: string): ModelSlot {
    const existing = this.slots.get(dir);
    if (existing) return existing;
    const slot = new ModelSlot(
      dir,
      this.config.inference,
      this.logger,
      (results, ms) => this.recordAndConsume(results, ms),
      (cameraId, manifest, recipe) => this.view(cameraId, manifest, recipe),
    );
    this.slots.set(dir, slot);
    if (this.config.model.watch) {
      slot.watch(this.config.model.watch_debounce_ms, () => {
        if (this.stopping || this.slots.get(dir) !== slot) return;
        this.reloadSlot(slot, "bundle changed on disk")
          .then((result) => {
            if (result === "swapped") this.modelSwapped();
          })
          .catch(() => undefined);
      });
    }
    return slot;
  }

  private async closeSlot(slot: ModelSlot): Promise<void> {
    this.slots.delete(slot.dir);
    await slot.close();
    this.logger.info({ bundle: slot.dir }, "model unloaded (no camera uses it)");
  }

  /** Loads `bundle` if no station had it loaded yet; false (logged, in `changes`) when it does not load. */
  private async ensureModel(bundle: string, camera: string, changes: StationChanges): Promise<boolean> {
    if (this.slots.get(bundle)?.inspector.manifest) return true;
    const slot = this.openSlot(bundle);
    try {
      const manifest = await slot.load();
      this.logger.info({ model_version: manifest.model_version, bundle }, "model loaded");
      slot.loop.start();
      return true;
    } catch (err) {
      await this.closeSlot(slot);
      changes.failed.push(bundle);
      changes.problems.push(`cameras (id "${camera}").model: ${errorMessage(err)}`);
      this.logger.error({ camera, bundle, err }, "camera's model does not load; the camera is not started");
      return false;
    }
  }

  private async unloadUnusedModels(): Promise<void> {
    const inUse = this.bundlesInUse();
    for (const slot of this.models()) if (!inUse.has(slot.dir)) await this.closeSlot(slot);
  }

  /**
   * Reloads a bundle if it changed on disk; after a swap, the cameras of that bundle whose capture size no longer
   * matches restart, because the capture caps carry the model's size. One path for SIGHUP and the file watch.
   */
  private async reloadSlot(slot: ModelSlot, reason: string): Promise<"swapped" | "unchanged" | "failed"> {
    const result = await slot.reloadIfChanged(reason);
    if (result !== "swapped") return result;
    const size = slot.inspector.inputSize;
    for (const s of this.byId.values()) {
      const cam = s.camera;
      if (s.bundle === slot.dir && cam && size && (cam.width !== size[0] || cam.height !== size[1])) {
        this.restartCamera(s);
      }
    }
    return result;
  }

  // --- the frame's way through ------------------------------------------------------------------------------

  /** How a camera's frames are judged under `manifest` (the slot's loop asks for every batch). */
  private view(cameraId: string, manifest: Manifest, recipe: string | undefined): StationView {
    const station = this.byId.get(cameraId);
    // a frame of a camera removed while its batch ran: judge it by the bundle's own threshold
    if (!station) return { threshold: manifest.threshold };
    return station.view(manifest, recipe);
  }

  private recordAndConsume(results: InspectionResult[], inferenceMs: number): void {
    const now = Date.now();
    for (const r of results) this.byId.get(r.frame.cameraId)?.record(r, now);
    try {
      this.consume(results, inferenceMs);
    } finally {
      // after the live verdicts are out: the shadow never delays them
      this.shadows.offer(results);
    }
  }

  /** Whether the live model judging `camera`'s frames has frames queued (its shadow batches then wait). */
  private liveBusy(camera: string): boolean {
    const station = this.byId.get(camera);
    return station !== undefined && this.slots.get(station.bundle)?.loop.oldestCaptureTs() !== undefined;
  }

  /** The live model of `camera`: the loaded one, or its bundle read from disk while the camera is not running. */
  private async liveManifest(camera: string): Promise<Manifest> {
    const station = this.require(camera);
    return this.manifestOf(station) ?? (await loadBundle(station.bundle)).manifest;
  }

  // --- cameras: the one place a capture is built, started and stopped ---------------------------------------

  private startCamera(station: Station): void {
    const slot = this.slots.get(station.bundle);
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
      ...(keepsNativeFrames(this.config)
        ? {
            native: {
              maxBytes: this.config.records.images.native_mb * 2 ** 20,
              maxFrames: framesAwaitingVerdict(this.config.inference),
              maxLongSide: this.config.collection.max_long_side,
            },
          }
        : {}),
    });
    cam.on("frame", (f: Frame) => {
      station.nextSeq = f.seq + 1;
      // the slot and recipe in force now: a recipe switch takes effect between two frames, without a restart
      const target = this.slots.get(station.bundle) ?? slot;
      const partId = station.takePartId(Date.now());
      const recipe = station.recipe;
      // `partId` and `recipe` travel with the frame into its result and event (a PLC trigger's answer)
      target.loop.push(
        partId === undefined && recipe === undefined
          ? f
          : {
              ...f,
              ...(partId !== undefined ? { partId } : {}),
              ...(recipe !== undefined ? { recipe } : {}),
            },
      );
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
}

/**
 * Whether a recipe switch must restart a camera: a capture key changed (its ROI). A new bundle of the same input
 * size needs no new pipeline (frames go to its queue from the next one on), nor does the enable (started or
 * stopped on its own): restarting for them cost 0.5–1 s of the switch with two replay cameras (issue 23).
 */
function needsPipelineChange(before: CameraConfig, after: CameraConfig): boolean {
  return cameraChanges(before, after).some(
    (change) =>
      change.rule === "camera" && change.key !== "cameras[].model" && change.key !== "cameras[].enabled",
  );
}

/** A camera's ignore-mask image, if it names one. */
function maskImageOf(camera: CameraConfig): Promise<MaskImage | undefined> {
  const file = camera.ignore?.mask;
  return file ? loadBinaryImage(file) : Promise.resolve(undefined);
}
