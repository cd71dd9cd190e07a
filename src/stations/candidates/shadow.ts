import { existsSync } from "node:fs";
import { mkdir, readFile, rm } from "node:fs/promises";
import path from "node:path";
import { loadBundle, type Manifest } from "../../bundle/bundle.js";
import type { CandidatesConfig, InferenceConfig } from "../../config/index.js";
import { DEFAULT_FILE_MODE } from "../../core/durable-fs.js";
import { errorMessage } from "../../core/errors.js";
import type { Logger } from "../../core/log.js";
import { RepeatLimiter } from "../../core/repeat-limiter.js";
import type { InspectionResult } from "../../core/result.js";
import { jsonTime } from "../../core/time.js";
import { ortProviders } from "../../onnx/ort.js";
import { Inspector, type StationLookup } from "../../pipeline/inspector.js";
import type { EvidenceReport, OfflineEval, ShadowView } from "../../publish/candidates.js";
import { framePng, mapPng, writePng } from "../../publish/frame-png.js";
import { buildEvidence } from "./evidence.js";
import {
  isAlarm,
  SHADOW_DB_FILE,
  type ShadowCounts,
  ShadowDb,
  type ShadowMeta,
  type ShadowPair,
} from "./shadow-db.js";
import { ShadowDbThread } from "./shadow-db-thread.js";
import type { ShadowRuns } from "./shadow-runs.js";
import { bundleSummary, candidatePaths } from "./store.js";

/** The folder of kept disagreement images inside a shadow folder. */
export const SHADOW_IMAGES = "images";

/** A kept image's name: `<capture ms>-<seq>-frame.png`, `-live.png` or `-candidate.png` (see keepImages). */
const IMAGE_NAME = /^[0-9]+-[0-9]+-(frame|live|candidate)\.png$/;

/**
 * Whether the frame numbered `seq` is shadowed at `share`: the frames where ⌊(seq+1)·share⌋ steps up, so a share of
 * 0.1 takes every 10th frame, 0.5 every other one and 1 all of them, the same frames on every run.
 */
export function shadowed(seq: number, share: number): boolean {
  // the epsilon keeps 10 × 0.1 from flooring to 0.999…
  return Math.floor((seq + 1) * share + 1e-9) > Math.floor(seq * share + 1e-9);
}

/**
 * How long a shadow batch waits for the live model's queue to empty before it looks again. Polling is cheap (a
 * length check) and the live path's delivery also looks, so the wait is at most this after the live queue empties.
 */
const LIVE_BUSY_RETRY_MS = 5;

/**
 * ORT threads of a candidate's inference thread: one, as for a retrain job, so that on a 2-core box the live model
 * keeps a core of its own while the candidate judges; and that thread runs at the lowest priority, so that when
 * capture, the live model and the candidate all want the CPU, the candidate waits.
 */
const CANDIDATE_THREADS = 1;
const CANDIDATE_NICE = 19;

/** What the scheduler needs from the registry: the live side of each camera. */
export interface ShadowHost {
  /** Whether the live model of `camera` has frames queued (a shadow batch then waits). */
  liveBusy(camera: string): boolean;
  /** How a camera's frames are judged under a model: the same lookup the live loop uses (ROI, mask, part score). */
  lookup: StationLookup;
  /** The live model `camera`'s frames are judged by (loaded from its bundle if the camera is not running). */
  liveManifest(camera: string): Promise<Manifest>;
}

export interface ShadowSchedulerOptions {
  candidates: CandidatesConfig & { dir: string };
  inference: InferenceConfig;
  logger: Logger;
  host: ShadowHost;
}

/**
 * The shadow runs of the line's cameras: each candidate in its own model (own inference thread), judging a share of
 * its camera's live frames after the live model judged them, never delivered to any sink. Live first: a camera's
 * shadow frames wait in a bounded queue (full: the oldest is dropped and counted) and a shadow batch starts only
 * while the live model of that camera has nothing queued, one batch at a time.
 */
export class ShadowScheduler implements ShadowRuns {
  private readonly runs = new Map<string, ShadowRun>();
  private readonly starting = new Map<string, Promise<ShadowView>>();
  /** Where each camera's run records, as the last `start` named it (default: under `candidates.dir`). */
  private readonly dirs = new Map<string, { candidate: string; shadow: string }>();
  private closed = false;
  /**
   * Views of runs not running in this process, as last read or left: status asks for them every snapshot, and the
   * record of a stopped run does not change until the next start.
   */
  private readonly stoppedViews = new Map<string, ShadowView>();

  constructor(private readonly options: ShadowSchedulerOptions) {}

  // --- ShadowRuns -------------------------------------------------------------------------------------------

  start(
    camera: string,
    candidateDir: string,
    shadowDir: string,
    settings: CandidatesConfig["shadow"],
  ): Promise<ShadowView> {
    const running = this.runs.get(camera);
    if (running) return Promise.resolve(running.view());
    const pending = this.starting.get(camera);
    if (pending) return pending;
    const started = this.startNow(camera, candidateDir, shadowDir, settings).finally(() =>
      this.starting.delete(camera),
    );
    this.starting.set(camera, started);
    return started;
  }

  async stop(camera: string, reason: string): Promise<void> {
    await this.starting.get(camera)?.catch(() => undefined);
    const run = this.runs.get(camera);
    if (!run) return;
    await run.stop(reason);
  }

  view(camera: string): ShadowView | null {
    const run = this.runs.get(camera);
    if (run) return run.view();
    const file = path.join(this.dirsOf(camera).shadow, SHADOW_DB_FILE);
    if (!existsSync(file)) {
      // discarded with its candidate
      this.stoppedViews.delete(camera);
      return null;
    }
    const known = this.stoppedViews.get(camera);
    if (known) return known;
    try {
      const db = new ShadowDb(file, { readonly: true });
      try {
        const meta = db.meta();
        const view = meta ? viewOf(meta, db.counts()) : null;
        if (view) this.stoppedViews.set(camera, view);
        return view;
      } finally {
        db.close();
      }
    } catch (err) {
      this.options.logger.warn({ camera, file, err }, `shadow record of camera ${camera} unreadable`);
      return null;
    }
  }

  async evidence(camera: string): Promise<EvidenceReport | undefined> {
    const dirs = this.dirsOf(camera);
    if (!existsSync(dirs.candidate)) return undefined;
    const run = this.runs.get(camera);
    const candidate = run?.candidateManifest ?? (await loadBundle(dirs.candidate)).manifest;
    const live = await this.options.host.liveManifest(camera);
    const file = path.join(dirs.shadow, SHADOW_DB_FILE);
    let pairs: ShadowPair[] | null = null;
    if (existsSync(file)) {
      const db = new ShadowDb(file, { readonly: true });
      try {
        // a record of another candidate (not started since) is no evidence about this one
        pairs = db.meta()?.candidate_model_version === candidate.model_version ? db.pairs() : null;
      } finally {
        db.close();
      }
    }
    const lookup = this.options.host.lookup;
    return buildEvidence({
      camera,
      now: Date.now(),
      live: bundleSummary(live, lookup(camera, live, undefined)),
      candidate: bundleSummary(candidate, lookup(camera, candidate, undefined)),
      pairs,
      labelled: await this.offlineEval(camera, path.join(path.dirname(dirs.candidate), "offline-eval.json")),
      gates: this.options.candidates.gates,
      imageUrl: (f) => `/api/candidates/${encodeURIComponent(camera)}/images/${encodeURIComponent(f)}`,
    });
  }

  imageFile(camera: string, name: string): string | undefined {
    if (!IMAGE_NAME.test(name)) return undefined;
    const file = path.join(this.dirsOf(camera).shadow, SHADOW_IMAGES, name);
    return existsSync(file) ? file : undefined;
  }

  // --- the registry's side ----------------------------------------------------------------------------------

  /** Live results of one batch, after the live consumer had them: the shadowed ones go to their camera's run. */
  offer(results: readonly InspectionResult[]): void {
    if (this.runs.size === 0) return;
    for (const r of results) this.runs.get(r.frame.cameraId)?.offer(r);
  }

  /** Cameras whose shadow record says it was running when the daemon stopped. */
  interrupted(cameras: readonly string[]): string[] {
    return cameras.filter((c) => this.view(c)?.state === "running");
  }

  /**
   * Resumes, after a restart, the runs of `cameras` whose record says running, each with its candidate and its
   * start time (a candidate that no longer loads stops the run, saying why). Never rejects.
   */
  async resume(cameras: readonly string[]): Promise<void> {
    for (const camera of this.interrupted(cameras)) {
      const dirs = this.dirsOf(camera);
      try {
        const view = await this.start(camera, dirs.candidate, dirs.shadow, this.options.candidates.shadow);
        this.options.logger.info({ camera, frames: view.frames }, `shadow of camera ${camera} resumed`);
      } catch (err) {
        // a shutdown during the resume leaves the record running, for the next start
        if (!this.closed) this.markStopped(camera, `not resumed after a restart: ${errorMessage(err)}`);
      }
    }
  }

  /** Waits until no shadow frame is queued or being judged (drain, tests). */
  async idle(): Promise<void> {
    await Promise.all([...this.runs.values()].map((r) => r.idle()));
  }

  /**
   * At shutdown: releases every candidate model without stopping its run (the record still says running, so the
   * next start resumes it). Frames still queued are counted as dropped.
   */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.all([...this.starting.values()].map((p) => p.catch(() => undefined)));
    for (const run of this.runs.values()) await run.close();
    this.runs.clear();
  }

  // --- internals --------------------------------------------------------------------------------------------

  private dirsOf(camera: string): { candidate: string; shadow: string } {
    const known = this.dirs.get(camera);
    if (known) return known;
    const paths = candidatePaths(this.options.candidates.dir, camera);
    return { candidate: paths.candidate, shadow: paths.shadow };
  }

  private async startNow(
    camera: string,
    candidateDir: string,
    shadowDir: string,
    settings: CandidatesConfig["shadow"],
  ): Promise<ShadowView> {
    if (this.closed) throw new Error("the daemon is stopping");
    this.stoppedViews.delete(camera);
    this.dirs.set(camera, { candidate: path.resolve(candidateDir), shadow: path.resolve(shadowDir) });
    const { inference, logger } = this.options;
    const log = logger.child({ component: "shadow", camera, bundle: candidateDir });
    const inspector = new Inspector(
      candidateDir,
      {
        providers: ortProviders(inference.providers),
        intraOpThreads: CANDIDATE_THREADS,
        nice: CANDIDATE_NICE,
      },
      log,
      inference.max_batch,
    );
    let manifest: Manifest;
    try {
      manifest = await inspector.load();
    } catch (err) {
      await inspector.close();
      throw new Error(`camera ${camera}: the candidate ${candidateDir} does not load (${errorMessage(err)})`);
    }
    try {
      // the camera's views (threshold, mask on the grid) are cached per model_version: two models of one version
      // would share them, and the record could not tell their verdicts apart
      const live = await this.options.host.liveManifest(camera);
      if (live.model_version === manifest.model_version) {
        throw new Error(`the candidate has the live model's model_version ${live.model_version}`);
      }
    } catch (err) {
      await inspector.close();
      throw new Error(`camera ${camera}: shadow refused: ${errorMessage(err)}`);
    }
    const file = path.join(shadowDir, SHADOW_DB_FILE);
    let next: ShadowMeta;
    let counts: ShadowCounts;
    try {
      await mkdir(path.join(shadowDir, SHADOW_IMAGES), { recursive: true });
      // read and set up on this thread: once per start; the run's writes go to its database thread
      const db = new ShadowDb(file);
      try {
        let meta = db.meta();
        if (meta && meta.candidate_model_version !== manifest.model_version) {
          // the record is another candidate's: its pairs are no evidence about this one
          db.reset();
          await rm(path.join(shadowDir, SHADOW_IMAGES), { recursive: true, force: true });
          await mkdir(path.join(shadowDir, SHADOW_IMAGES), { recursive: true });
          meta = undefined;
        }
        next = nextMeta(meta, manifest.model_version, settings, Date.now());
        db.writeMeta(next);
        counts = db.counts();
      } finally {
        db.close();
      }
    } catch (err) {
      await inspector.close();
      throw new Error(`camera ${camera}: shadow record ${file} cannot be opened (${errorMessage(err)})`);
    }
    const run = new ShadowRun(
      camera,
      inspector,
      new ShadowDbThread(file),
      next,
      counts,
      settings,
      this.options,
      log,
      shadowDir,
      (last) => {
        this.runs.delete(camera);
        this.stoppedViews.set(camera, last);
      },
    );
    if (this.closed) {
      await run.close();
      throw new Error("the daemon is stopping");
    }
    this.runs.set(camera, run);
    run.begin();
    log.info(
      {
        share: next.share,
        started_at: next.started_at,
        ends_at: next.ends_at,
        model_version: manifest.model_version,
      },
      `shadow of camera ${camera} running`,
    );
    return run.view();
  }

  /** Marks a run that is not running in this process as stopped in its record. */
  private markStopped(camera: string, reason: string): void {
    this.stoppedViews.delete(camera);
    const file = path.join(this.dirsOf(camera).shadow, SHADOW_DB_FILE);
    try {
      const db = new ShadowDb(file);
      try {
        const meta = db.meta();
        if (meta)
          db.writeMeta({ ...meta, state: "stopped", ended_at: jsonTime(Date.now()), stopped_reason: reason });
      } finally {
        db.close();
      }
      this.options.logger.error({ camera }, `shadow of camera ${camera} stopped: ${reason}`);
    } catch (err) {
      this.options.logger.error({ camera, file, err }, `shadow record of camera ${camera} unwritable`);
    }
  }

  private async offlineEval(camera: string, file: string): Promise<OfflineEval | null> {
    let text: string;
    try {
      text = await readFile(file, "utf8");
    } catch {
      return null;
    }
    try {
      const parsed = JSON.parse(text) as OfflineEval;
      if (typeof parsed.defects !== "number" || typeof parsed.live?.caught !== "number") {
        throw new Error("not an offline evaluation (no defects or live.caught)");
      }
      return parsed;
    } catch (err) {
      this.options.logger.warn(
        { camera, file },
        `${file}: ${errorMessage(err)}; the report shows no labelled numbers`,
      );
      return null;
    }
  }
}

/**
 * The meta a start writes: a run the record says is running (the daemon restarted) goes on with its start time and
 * ends_at, so restarts count towards max_hours; otherwise a new run starts now, keeping the dropped count of the
 * same candidate's earlier runs (their pairs stay: they are evidence about the same two models).
 */
function nextMeta(
  meta: ShadowMeta | undefined,
  candidateVersion: string,
  settings: CandidatesConfig["shadow"],
  now: number,
): ShadowMeta {
  if (meta?.state === "running") return { ...meta, share: settings.share, max_frames: settings.max_frames };
  return {
    state: "running",
    candidate_model_version: candidateVersion,
    started_at: jsonTime(now),
    ends_at: jsonTime(now + settings.max_hours * 3_600_000),
    share: settings.share,
    max_frames: settings.max_frames,
    dropped: meta?.dropped ?? 0,
  };
}

/** A run's view from its meta and its record's counts. */
function viewOf(
  meta: ShadowMeta,
  counts: { frames: number; live_alarms: number; candidate_alarms: number; disagreements: number },
): ShadowView {
  return {
    state: meta.state,
    started_at: meta.started_at,
    ...(meta.ended_at !== undefined ? { ended_at: meta.ended_at } : {}),
    share: meta.share,
    frames: counts.frames,
    max_frames: meta.max_frames,
    ends_at: meta.ends_at,
    dropped: meta.dropped,
    ...(meta.stopped_reason !== undefined ? { stopped_reason: meta.stopped_reason } : {}),
    live_alarms: counts.live_alarms,
    candidate_alarms: counts.candidate_alarms,
    disagreements: counts.disagreements,
  };
}

/** One camera's running shadow: its candidate model, queue, record and limits. */
class ShadowRun {
  /** Live results waiting for the candidate, oldest first. */
  private readonly queue: InspectionResult[] = [];
  private batch: Promise<void> | undefined;
  private retry: NodeJS.Timeout | undefined;
  private deadline: NodeJS.Timeout | undefined;
  private finished = false;
  private readonly failures = new RepeatLimiter();

  constructor(
    private readonly camera: string,
    private readonly inspector: Inspector,
    private readonly db: ShadowDbThread,
    private meta: ShadowMeta,
    private readonly counts: ShadowCounts,
    private readonly settings: CandidatesConfig["shadow"],
    private readonly options: ShadowSchedulerOptions,
    private readonly logger: Logger,
    private readonly shadowDir: string,
    /** Called with the run's last view once it no longer runs. */
    private readonly forget: (last: ShadowView) => void,
  ) {}

  get candidateManifest(): Manifest | undefined {
    return this.inspector.manifest;
  }

  /** Checks the limits (a resumed run may be past them) and arms the max_hours timer. */
  begin(): void {
    if (this.limitReached()) return;
    // setTimeout holds at most 2^31 − 1 ms (24.8 days); a longer run is re-armed when that fires
    const ms = Math.min(Date.parse(this.meta.ends_at) - Date.now(), 2 ** 31 - 1);
    this.deadline = setTimeout(() => this.begin(), ms);
    this.deadline.unref();
  }

  view(): ShadowView {
    return viewOf(this.meta, this.counts);
  }

  offer(live: InspectionResult): void {
    if (this.finished || !shadowed(live.frame.seq, this.meta.share)) return;
    if (this.queue.length >= this.settings.queue) {
      // the oldest goes: the newest frames are the likelier to be judged before the live model is busy again
      this.queue.shift();
      this.meta.dropped += 1;
    }
    this.queue.push(live);
    this.pump();
  }

  async idle(): Promise<void> {
    while (!this.finished && (this.batch || this.queue.length > 0)) {
      await (this.batch ?? new Promise((r) => setTimeout(r, LIVE_BUSY_RETRY_MS)));
    }
  }

  async stop(reason: string): Promise<void> {
    if (this.finished) return;
    this.finished = true;
    this.clearTimers();
    await this.batch;
    await this.end(reason);
    await this.release();
  }

  /** At shutdown: the run stays `running` in its record; queued frames are counted as dropped. */
  async close(): Promise<void> {
    if (this.finished) return;
    this.finished = true;
    this.clearTimers();
    await this.batch;
    this.meta.dropped += this.queue.length;
    this.queue.length = 0;
    await this.db.writeMeta(this.meta).catch((err) => this.logger.error({ err }, "shadow record unwritable"));
    await this.release();
  }

  private limitReached(): boolean {
    if (this.counts.frames >= this.meta.max_frames) {
      this.finish("max_frames");
      return true;
    }
    if (Date.now() >= Date.parse(this.meta.ends_at)) {
      this.finish("max_hours");
      return true;
    }
    return false;
  }

  /** Stops the run from inside it (a limit reached): no waiting for the batch, which may be the caller. */
  private finish(reason: string): void {
    if (this.finished) return;
    this.finished = true;
    this.clearTimers();
    const batch = this.batch ?? Promise.resolve();
    batch
      .then(() => {
        return this.end(reason);
      })
      .then(() => this.release())
      .catch((err) => this.logger.error({ err }, "stopping the shadow run failed"));
  }

  private async end(reason: string): Promise<void> {
    this.meta = { ...this.meta, state: "stopped", ended_at: jsonTime(Date.now()), stopped_reason: reason };
    this.meta.dropped += this.queue.length;
    this.queue.length = 0;
    await this.db.writeMeta(this.meta).catch((err) => this.logger.error({ err }, "shadow record unwritable"));
    this.logger.info(
      { frames: this.counts.frames, reason },
      `shadow of camera ${this.camera} stopped: ${reason}`,
    );
  }

  private async release(): Promise<void> {
    this.forget(this.view());
    await this.db.close();
    await this.inspector.close();
  }

  private clearTimers(): void {
    if (this.retry) clearTimeout(this.retry);
    if (this.deadline) clearTimeout(this.deadline);
    this.retry = undefined;
    this.deadline = undefined;
  }

  /** Starts the next shadow batch if none runs, frames wait and the live model has nothing queued. */
  private pump(): void {
    if (this.finished || this.batch || this.queue.length === 0) return;
    if (this.options.host.liveBusy(this.camera)) {
      this.retry ??= setTimeout(() => {
        this.retry = undefined;
        this.pump();
      }, LIVE_BUSY_RETRY_MS);
      return;
    }
    // a batch never takes the run past max_frames
    const room = this.meta.max_frames - this.counts.frames;
    const items = this.queue.splice(0, Math.min(this.options.inference.max_batch, room));
    this.batch = this.judge(items).finally(() => {
      this.batch = undefined;
      if (!this.limitReached()) this.pump();
    });
  }

  private async judge(items: InspectionResult[]): Promise<void> {
    let results: InspectionResult[];
    try {
      results = await this.inspector.inspect(
        items.map((live) => live.frame),
        this.options.host.lookup,
      );
    } catch (err) {
      this.meta.dropped += items.length;
      const admitted = this.failures.admit(errorMessage(err).split("\n")[0]!);
      if (admitted)
        this.logger.error({ err }, `camera ${this.camera}: candidate inference failed for a shadow batch`);
      return;
    }
    const pairs: ShadowPair[] = [];
    for (let i = 0; i < items.length; i++) {
      const live = items[i]!;
      const cand = results[i]!;
      const disagree = isAlarm(live.verdict) !== isAlarm(cand.verdict);
      let image: string | null = null;
      if (disagree && this.counts.kept < this.settings.disagreement_images) {
        image = await this.keepImages(live, cand);
        if (image !== null) this.counts.kept += 1;
      }
      pairs.push({
        seq: live.frame.seq,
        capture_ts: live.frame.captureTs,
        live_score: live.score,
        live_verdict: live.verdict,
        live_threshold: live.threshold,
        live_model: live.modelVersion,
        candidate_score: cand.score,
        candidate_verdict: cand.verdict,
        candidate_threshold: cand.threshold,
        candidate_model: cand.modelVersion,
        image,
      });
    }
    if (this.finished && this.meta.state === "stopped") return;
    try {
      await this.db.addBatch(pairs, this.meta);
    } catch (err) {
      this.meta.dropped += pairs.length;
      this.logger.error({ err }, `camera ${this.camera}: shadow record unwritable; batch dropped`);
      return;
    }
    for (const p of pairs) {
      this.counts.frames += 1;
      const l = isAlarm(p.live_verdict);
      const c = isAlarm(p.candidate_verdict);
      if (l) this.counts.live_alarms += 1;
      if (c) this.counts.candidate_alarms += 1;
      if (l !== c) this.counts.disagreements += 1;
    }
  }

  /** Writes a disagreement's frame and both maps; the file prefix, or null when they could not be written. */
  private async keepImages(live: InspectionResult, cand: InspectionResult): Promise<string | null> {
    // capture time + seq: seqs start again at 0 after a restart, capture times do not repeat within a camera
    const prefix = `${live.frame.captureTs}-${live.frame.seq}`;
    const dir = path.join(this.shadowDir, SHADOW_IMAGES);
    try {
      const f = live.frame;
      const c = cand.frame;
      await writePng(path.join(dir, `${prefix}-frame.png`), await framePng(f), DEFAULT_FILE_MODE);
      await writePng(
        path.join(dir, `${prefix}-live.png`),
        await mapPng(live.map, f.width, f.height, live.threshold),
        DEFAULT_FILE_MODE,
      );
      await writePng(
        path.join(dir, `${prefix}-candidate.png`),
        await mapPng(cand.map, c.width, c.height, cand.threshold),
        DEFAULT_FILE_MODE,
      );
      return prefix;
    } catch (err) {
      this.logger.warn({ err }, `camera ${this.camera}: disagreement images not kept`);
      return null;
    }
  }
}
