/**
 * Retrain jobs (issue 22): one at a time on the node, each in a child process at low priority (niced, few ORT
 * threads) so that inspection keeps the cores, writing only the camera's `candidate/` in the store; progress goes
 * to `job.json` at every epoch, and the job can be cancelled. The daemon and `stpmd retrain --candidate` run jobs
 * through this one class, so the store's lock keeps them to one job between them.
 */
import { type ChildProcess, fork, type StdioOptions, spawn } from "node:child_process";
import { accessSync, constants } from "node:fs";
import { setPriority } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { bundleGeometry, loadBundle, type Manifest, recoverBundle } from "../../bundle/bundle.js";
import type { CandidatesConfig, StpmdConfig } from "../../config/index.js";
import { errorMessage } from "../../core/errors.js";
import type { Logger } from "../../core/log.js";
import { ownProcessTag, parseProcessTag, processRunning } from "../../core/process-identity.js";
import { listImages, readImageSize } from "../../data/images.js";
import type { JobView } from "../../publish/candidates.js";
import { RETRAIN_DEFAULTS } from "../../train/retrain.js";
import { CHILD_FAILED_EXIT, type ChildJob, type ChildMessage } from "./retrain-protocol.js";
import { CandidateError, type CandidateStore, type JobRecord } from "./store.js";

/** How long a cancelled child gets to exit on SIGTERM before SIGKILL. */
export const CANCEL_GRACE_MS = 3000;

const CHILD_ENTRY = new URL("./retrain-child.js", import.meta.url);

/**
 * util-linux's setpriv, when installed (Debian and Ubuntu, JetPack included, ship it): the retrain child is started
 * through it with `--pdeathsig KILL`, so the kernel kills the child the moment its daemon dies, however busy or
 * niced the child is. The child's own watch (its IPC channel's disconnect) runs on its event loop, which training
 * holds: a SIGKILLed `stpmd run` left its child running 3.9 s on an idle 2-core box, 32 s with both cores busy
 * (timed around test/faults/candidates.test.ts's wait by a temporary line, before this; 113 ms after). Without setpriv, that watch is all there is.
 */
const SETPRIV = executableOnPath("setpriv");

function executableOnPath(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? "").split(path.delimiter)) {
    if (dir === "") continue;
    const file = path.join(dir, name);
    try {
      accessSync(file, constants.X_OK);
      return file;
    } catch {
      // not in this folder
    }
  }
  return undefined;
}

/** The retrain child, with its IPC channel: through setpriv when there is one (see {@link SETPRIV}), else forked. */
function startChild(): ChildProcess {
  const stdio: StdioOptions = ["ignore", "ignore", "pipe", "ipc"];
  if (SETPRIV === undefined) return fork(CHILD_ENTRY, [], { stdio });
  const node = [process.execPath, ...process.execArgv, fileURLToPath(CHILD_ENTRY)];
  return spawn(SETPRIV, ["--pdeathsig", "KILL", "--", ...node], { stdio });
}

export interface JobSettings {
  retrain: CandidatesConfig["retrain"];
  /** `collection.dir`: the camera's training frames are `<dir>/<camera>/`. */
  collectionDir: string;
  /** `records.labelled_dir`: the camera's held-out labelled set is `<dir>/<camera>/`. */
  labelledDir: string;
}

/** A node's job settings from its config. */
export function jobSettings(config: StpmdConfig): JobSettings {
  return {
    retrain: config.candidates.retrain,
    collectionDir: config.collection.dir,
    labelledDir: config.records.labelled_dir,
  };
}

export interface JobEvents {
  /** After every change of a job (started, an epoch, ended). */
  changed?: (job: JobView) => void;
  /** Once, when a job ends (done, failed, cancelled). */
  ended?: (job: JobView) => void;
}

interface Running {
  camera: string;
  child: ChildProcess;
  record: JobRecord;
  cancelledBy?: string;
  finished: Promise<JobView>;
  /** Writes of job.json in order: an epoch's never lands after the end's. */
  writes: Promise<void>;
}

export class RetrainJobs {
  private current: Running | undefined;

  constructor(
    private readonly store: CandidateStore,
    private readonly settings: JobSettings,
    private readonly logger: Logger,
    private readonly events: JobEvents = {},
  ) {}

  /** The camera whose job runs in this process, if any. */
  running(): string | undefined {
    return this.current?.camera;
  }

  /**
   * Starts a job for `camera` whose live bundle is `liveDir`; resolves once the child runs, with the job's first
   * view. Refused (CandidateError, one line) when a job runs (here or in another process), the frames folder has
   * fewer than `min_frames` images, or the live bundle does not load.
   */
  async start(camera: string, liveDir: string, by: string): Promise<JobView> {
    if (this.current) {
      throw new CandidateError(
        `a retrain job is already running for camera ${this.current.camera}; one job at a time`,
      );
    }
    const unlock = await this.store.lock(camera);
    try {
      const { job, frames } = await this.prepare(camera, liveDir);
      return await this.launch(camera, job, frames, by, unlock);
    } catch (err) {
      await unlock();
      throw err;
    }
  }

  /** Cancels the running job of `camera`: SIGTERM, SIGKILL after {@link CANCEL_GRACE_MS}; resolves when it ended. */
  async cancel(camera: string, by: string): Promise<JobView> {
    const run = this.current;
    if (run?.camera !== camera) {
      const other = run ? ` (the running job is camera ${run.camera}'s)` : "";
      throw new CandidateError(`no retrain job is running for camera ${camera}${other}`);
    }
    run.cancelledBy ??= by;
    run.child.kill("SIGTERM");
    const kill = setTimeout(() => run.child.kill("SIGKILL"), CANCEL_GRACE_MS);
    try {
      return await run.finished;
    } finally {
      clearTimeout(kill);
    }
  }

  /** Resolves with the running job's end (immediately with undefined when none runs). */
  async finished(): Promise<JobView | undefined> {
    return this.current?.finished;
  }

  /**
   * At start: each camera's job.json that says `running` while the process that ran it is gone becomes
   * `interrupted`. Returns the jobs so marked.
   */
  async recover(cameras: readonly string[]): Promise<JobView[]> {
    const marked: JobView[] = [];
    for (const camera of cameras) {
      const job = this.store.readJob(camera);
      if (job?.state !== "running") continue;
      const owner = job.owner === undefined ? undefined : parseProcessTag(job.owner);
      if (owner && (await processRunning(owner.pid, owner.startTicks))) continue;
      const ended: JobRecord = {
        ...withoutProcess(job),
        state: "interrupted",
        ended_at: new Date().toISOString(),
        message: `the process that ran it (${owner?.pid ?? "unknown"}) stopped before it ended`,
      };
      await this.store.writeJob(ended);
      await recoverBundle(this.store.paths(camera).candidate, this.logger);
      marked.push(viewOf(ended));
    }
    return marked;
  }

  /** Stops the running job (the daemon is stopping): recorded as cancelled. */
  async close(): Promise<void> {
    if (this.current) await this.cancel(this.current.camera, "shutdown").catch(() => undefined);
  }

  // --- internals ------------------------------------------------------------------------------------------------

  /** The child's job, and the number of frames it trains and validates on (listed once, here). */
  private async prepare(camera: string, liveDir: string): Promise<{ job: ChildJob; frames: number }> {
    const framesDir = path.join(this.settings.collectionDir, camera);
    const frames = await listImages(framesDir, "frames folder").catch(() => [] as string[]);
    const min = this.settings.retrain.min_frames;
    if (frames.length < min) {
      throw new CandidateError(
        `camera ${camera}: ${framesDir} has ${frames.length} frame(s), fewer than candidates.retrain.min_frames (${min})`,
      );
    }
    let manifest: Manifest;
    try {
      manifest = (await loadBundle(liveDir)).manifest;
    } catch (err) {
      throw new CandidateError(`camera ${camera}: its live bundle does not load (${errorMessage(err)})`);
    }
    const p = this.store.paths(camera);
    const job: ChildJob = {
      retrain: retrainOptions(
        manifest,
        liveDir,
        framesDir,
        p.candidate,
        this.settings.retrain,
        await firstWidth(frames),
      ),
      labelledDir: path.join(this.settings.labelledDir, camera),
      liveDir,
      offlineEvalFile: p.offlineEval,
    };
    return { job, frames: frames.length };
  }

  private async launch(
    camera: string,
    job: ChildJob,
    frames: number,
    by: string,
    unlock: () => Promise<void>,
  ): Promise<JobView> {
    const child = startChild();
    const stderr: string[] = [];
    child.stderr?.setEncoding("utf8").on("data", (text: string) => {
      stderr.push(...text.split("\n").filter((l) => l.trim() !== ""));
      stderr.splice(0, Math.max(0, stderr.length - 20));
    });
    const nice = this.settings.retrain.nice;
    try {
      if (child.pid !== undefined) setPriority(child.pid, nice);
    } catch (err) {
      this.logger.warn(
        { camera, err },
        `cannot nice the retrain child to ${nice}; it runs at normal priority`,
      );
    }
    const record: JobRecord = {
      camera,
      state: "running",
      started_at: new Date().toISOString(),
      by,
      epoch: 0,
      epochs: job.retrain.epochs,
      loss: null,
      val_score: null,
      eta_s: null,
      frames,
      owner: await ownProcessTag(),
      ...(child.pid !== undefined ? { pid: child.pid } : {}),
    };
    let last: ChildMessage | undefined;
    let trained: Extract<ChildMessage, { type: "trained" }> | undefined;
    const run: Running = {
      camera,
      child,
      record,
      finished: undefined as unknown as Promise<JobView>,
      writes: Promise.resolve(),
    };
    const save = (next: JobRecord): Promise<void> => {
      run.record = next;
      run.writes = run.writes
        .then(() => this.store.writeJob(next))
        .catch((err) => this.logger.error({ camera, err }, "cannot write the job's job.json"));
      this.events.changed?.(viewOf(next));
      return run.writes;
    };
    child.on("message", (m: ChildMessage) => {
      last = m;
      if (m.type === "progress") {
        void save({
          ...run.record,
          epoch: m.epoch,
          epochs: m.epochs,
          loss: m.loss,
          val_score: m.val_score,
          eta_s: m.eta_s,
        });
      } else if (m.type === "trained") {
        trained = m;
      }
    });
    run.finished = new Promise<JobView>((resolve) => {
      let over = false;
      const finish = (code: number | null, signal: NodeJS.Signals | null): void => {
        if (over) return;
        over = true;
        void (async () => {
          const end = await this.ended(run, code, signal, last, trained, stderr);
          await save(end);
          this.current = undefined;
          await unlock();
          const view = viewOf(end);
          this.logger[end.state === "done" ? "info" : "warn"](
            { camera, state: end.state, message: end.message, model_version: end.candidate_model_version },
            `retrain job of camera ${camera} ${end.state}${end.message ? `: ${end.message}` : ""}`,
          );
          this.events.ended?.(view);
          resolve(view);
        })();
      };
      child.once("exit", finish);
      // a child that could not be spawned (or whose IPC failed) says so here; without a handler the daemon would
      // fall over on it. A spawn failure gets no 'exit', so it ends the job here.
      child.on("error", (err) => {
        stderr.push(`${err.message}`);
        if (child.pid === undefined) finish(null, null);
        else this.logger.warn({ camera, err }, "retrain child: IPC error");
      });
    });
    this.current = run;
    await save(record);
    child.send(job, (err) => {
      // the child died before it read its job: its exit (or error) ends the job
      if (err) this.logger.warn({ camera, err }, "cannot send the retrain child its job");
    });
    this.logger.info(
      { camera, by, frames, pid: child.pid },
      `retrain job of camera ${camera} started by ${by}`,
    );
    return viewOf(record);
  }

  /** The job's end from how the child exited and what it said last. */
  private async ended(
    run: Running,
    code: number | null,
    signal: NodeJS.Signals | null,
    last: ChildMessage | undefined,
    trained: Extract<ChildMessage, { type: "trained" }> | undefined,
    stderr: string[],
  ): Promise<JobRecord> {
    const base: JobRecord = {
      ...withoutProcess(run.record),
      ended_at: new Date().toISOString(),
      eta_s: null,
    };
    const candidate = this.store.paths(run.camera).candidate;
    // a killed child may have left its bundle write half-done beside candidate/: its pid is gone, so it goes now
    await recoverBundle(candidate, this.logger);
    if (last?.type === "done" && code === 0) {
      return {
        ...base,
        state: "done",
        frames: last.frames,
        candidate_model_version: last.model_version,
        ...(last.offline_eval ? {} : { message: "no labelled images: no offline evaluation" }),
      };
    }
    if (trained) {
      // the candidate is whole; only its offline comparison failed
      const why = last?.type === "failed" ? last.message : describeExit(code, signal);
      return {
        ...base,
        state: "done",
        frames: trained.frames,
        candidate_model_version: trained.model_version,
        message: `offline evaluation failed: ${why}`,
      };
    }
    if (run.cancelledBy !== undefined) {
      return { ...base, state: "cancelled", message: `cancelled by ${run.cancelledBy}` };
    }
    if (last?.type === "failed" && code === CHILD_FAILED_EXIT)
      return { ...base, state: "failed", message: last.message };
    const tail = stderr.at(-1);
    return {
      ...base,
      state: "failed",
      message: `the retrain process ${describeExit(code, signal)}${tail ? ` (last output: ${tail.slice(0, 200)})` : ""}`,
    };
  }
}

/** The width of the first readable frame (0 when none is): the collected frames' resolution. */
async function firstWidth(frames: readonly string[]): Promise<number> {
  for (const file of frames) {
    const size = await readImageSize(file).catch(() => undefined);
    if (size) return size.width;
  }
  return 0;
}

function describeExit(code: number | null, signal: NodeJS.Signals | null): string {
  return signal ? `was killed by ${signal}` : `exited with code ${code}`;
}

function withoutProcess(job: JobRecord): JobRecord {
  const { owner: _owner, pid: _pid, ...rest } = job;
  return rest;
}

/** The view of a stored job (without the process fields). */
export function viewOf(job: JobRecord): JobView {
  return withoutProcess(job);
}

/**
 * The retrain's options for a candidate of the live bundle: its geometry (resize or tiles, margin; not its ROI), part
 * score and teacher (the teacher file inside the live bundle), with the job's epochs, time budget and threads from
 * the config; the rest at retrain's defaults.
 */
export function retrainOptions(
  manifest: Manifest,
  liveDir: string,
  framesDir: string,
  outDir: string,
  cfg: CandidatesConfig["retrain"],
  frameWidth: number,
): ChildJob["retrain"] {
  const g = bundleGeometry(manifest);
  const d = RETRAIN_DEFAULTS;
  return {
    framesDir,
    teacherFile: path.join(liveDir, manifest.teacher.file),
    outDir,
    epochs: cfg.epochs,
    timeBudgetMin: cfg.time_budget_min,
    threads: cfg.threads,
    batchSize: d.batchSize,
    lr: d.lr,
    momentum: d.momentum,
    weightDecay: d.weightDecay,
    imageSize: g.input,
    // no ROI: collected frames are already cropped to it (docs/stations-and-geometry.md, Collection per station);
    // in tile mode the scale is the one that brings them to the bundle's capture size, as they may have been
    // stored smaller than the ROI (collection.max_long_side)
    ...(g.mode === "tile" && g.tile
      ? {
          tile: {
            size: g.tile.size,
            overlap: g.tile.overlap,
            scale: frameWidth > 0 ? g.capture.width / frameWidth : (g.scale ?? 1),
          },
        }
      : {}),
    margin: g.margin ?? 0,
    seed: d.seed,
    valFraction: d.valFraction,
    thresholdSigma: d.thresholdSigma,
    ...(manifest.score ? { partScore: manifest.score.aggregation } : {}),
    patience: d.patience,
    minDelta: d.minDelta,
    minEpochs: Math.min(d.minEpochs, cfg.epochs),
  };
}
