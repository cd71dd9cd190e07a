/**
 * A node's candidate models (issue 22), composed: the retrain jobs, promotion / rollback / discard, and the
 * registry's shadow runs (which also build the evidence and its gates). The line's control calls it; every refusal is a {@link CandidateError} with one line for the client.
 */
import { rm } from "node:fs/promises";
import path from "node:path";
import type { StpmdConfig } from "../../config/index.js";
import { errorMessage } from "../../core/errors.js";
import type { Logger } from "../../core/log.js";
import type { CandidateView, EvidenceReport, JobView, ShadowView } from "../../publish/candidates.js";
import type { StationRegistry } from "../registry.js";
import { stationBundle } from "../station.js";
import { type JobEvents, jobSettings, RetrainJobs, viewOf } from "./jobs.js";
import { type ModelChange, Promotion, repairInterruptedSwap } from "./promotion.js";
import type { ShadowRuns } from "./shadow-runs.js";
import { bundleSummary, CandidateError, CandidateStore } from "./store.js";

export type { ModelChange } from "./promotion.js";
export { CandidateError } from "./store.js";

export interface CandidateManagerOptions {
  config: StpmdConfig;
  registry: StationRegistry;
  logger: Logger;
  shadows: ShadowRuns;
  /** Told of every job change (progress for status) and of each job's end (for the audit log). */
  events?: JobEvents;
}

export class CandidateManager {
  readonly store: CandidateStore;
  readonly jobs: RetrainJobs;
  private readonly promotion: Promotion;
  private readonly config: StpmdConfig;
  private readonly registry: StationRegistry;
  private readonly logger: Logger;
  private readonly shadows: ShadowRuns;

  constructor(opts: CandidateManagerOptions) {
    this.config = opts.config;
    this.registry = opts.registry;
    this.logger = opts.logger.child({ component: "candidates" });
    this.shadows = opts.shadows;
    this.store = new CandidateStore(opts.config.candidates.dir);
    this.jobs = new RetrainJobs(this.store, jobSettings(opts.config), this.logger, opts.events ?? {});
    this.promotion = new Promotion(this.store, this.registry, opts.config.inference, this.logger);
  }

  /**
   * At start: repairs what a crash left half-written and marks jobs whose process is gone `interrupted` (returned,
   * for the audit log). The shadow runs the last daemon left running are resumed by the registry's start.
   */
  async start(): Promise<JobView[]> {
    const stored = this.store.cameras();
    for (const camera of stored) {
      await this.store
        .recover(camera, this.logger)
        .catch((err) => this.logger.warn({ camera, err }, "cannot repair the camera's candidate folder"));
    }
    return this.jobs.recover([...new Set([...stored, ...this.cameraIds()])]);
  }

  /**
   * Before any bundle loads: puts back a camera's live bundle that a promotion or rollback killed between its
   * renames left in the store (see {@link repairInterruptedSwap}).
   */
  async repairLiveBundles(): Promise<void> {
    for (const camera of this.config.cameras) {
      const live = path.resolve(stationBundle(camera, this.config));
      try {
        const done = await repairInterruptedSwap(this.store, camera.id, live);
        if (done) this.logger.warn({ camera: camera.id, bundle: live }, done);
      } catch (err) {
        this.logger.error(
          { camera: camera.id, err },
          `cannot repair camera ${camera.id}'s interrupted model swap`,
        );
      }
    }
  }

  /** Stops the running job (the daemon is stopping). */
  async close(): Promise<void> {
    await this.jobs.close();
  }

  // --- jobs ------------------------------------------------------------------------------------------------------

  async startRetrain(camera: string, by: string): Promise<JobView> {
    const live = this.promotion.liveDir(camera);
    // the candidate it replaces may be in shadow: that run judged the old candidate, and ends here
    if (this.shadows.view(camera)?.state === "running") {
      await this.shadows.stop(camera, `a new retrain job was started by ${by}`);
    }
    return this.jobs.start(camera, live, by);
  }

  async cancelRetrain(camera: string, by: string): Promise<JobView> {
    this.requireCamera(camera);
    return this.jobs.cancel(camera, by);
  }

  // --- shadow ----------------------------------------------------------------------------------------------------

  async setShadow(camera: string, enabled: boolean, by: string): Promise<ShadowView | null> {
    this.requireCamera(camera);
    if (!enabled) {
      await this.shadows.stop(camera, `requested by ${by}`);
      return this.shadows.view(camera);
    }
    this.refuseWhileTraining(camera, "shadow");
    const p = this.store.paths(camera);
    if (!this.store.summary(p.candidate))
      throw new CandidateError(`camera ${camera} has no candidate to shadow`);
    try {
      return await this.shadows.start(camera, p.candidate, p.shadow, this.config.candidates.shadow);
    } catch (err) {
      throw new CandidateError(`camera ${camera}: shadow not started: ${errorMessage(err)}`);
    }
  }

  // --- promote / rollback / discard ----------------------------------------------------------------------------

  /** Refused while a job runs for the camera, and when an enforced gate fails and not `force`. */
  async promote(camera: string, by: string, force = false): Promise<ModelChange> {
    this.requireCamera(camera);
    this.refuseWhileTraining(camera, "promote");
    if (!this.store.summary(this.store.paths(camera).candidate)) {
      throw new CandidateError(`camera ${camera} has no candidate to promote`);
    }
    if (!force) {
      const report = await this.report(camera);
      if (report && !report.promotable) {
        const failing = report.gates.filter((g) => g.pass !== true).map((g) => `${g.name}: ${g.detail}`);
        throw new CandidateError(
          `camera ${camera}: the candidate does not pass the promotion gates (${failing.join("; ")}); promote with force to override`,
        );
      }
    }
    // the shadow stops only once the candidate has loaded: a broken one's refusal leaves everything as it was
    const change = await this.promotion.promote(camera, by, async () => {
      await this.shadows.stop(camera, "promoted");
    });
    await rm(this.store.paths(camera).offlineEval, { force: true });
    return change;
  }

  async rollback(camera: string, by: string): Promise<ModelChange> {
    this.requireCamera(camera);
    return this.promotion.rollback(camera, by);
  }

  async discard(camera: string, by: string): Promise<ModelChange> {
    this.requireCamera(camera);
    this.refuseWhileTraining(camera, "discard");
    await this.shadows.stop(camera, `discarded by ${by}`);
    return this.promotion.discard(camera);
  }

  // --- views ------------------------------------------------------------------------------------------------------

  /** Every configured camera's view, in config order. */
  views(): CandidateView[] {
    return this.cameraIds().map((camera) => this.view(camera));
  }

  view(camera: string): CandidateView {
    const p = this.store.paths(camera);
    const station = this.registry.station(camera);
    const manifest = station ? this.registry.manifestOf(station) : undefined;
    const job = this.store.readJob(camera);
    return {
      camera,
      live: manifest ? bundleSummary(manifest) : null,
      candidate: this.store.summary(p.candidate),
      job: job ? viewOf(job) : null,
      shadow: this.shadows.view(camera),
      previous: this.store.summary(p.previous),
    };
  }

  /** The evidence report; refused naming the camera without a candidate. */
  async evidence(camera: string): Promise<EvidenceReport> {
    this.requireCamera(camera);
    const report = await this.report(camera);
    if (!report) throw new CandidateError(`camera ${camera} has no candidate`);
    return report;
  }

  /** A kept shadow image's file (see {@link ShadowRuns.imageFile}); refused for an unknown camera. */
  shadowImage(camera: string, name: string): string | null {
    this.requireCamera(camera);
    return this.shadows.imageFile(camera, name) ?? null;
  }

  /** The shadow's evidence, a candidate that cannot be read (a broken manifest) refused in one line naming it. */
  private async report(camera: string): Promise<EvidenceReport | undefined> {
    try {
      return await this.shadows.evidence(camera);
    } catch (err) {
      throw new CandidateError(
        `camera ${camera}: no evidence for its candidate: ${errorMessage(err).split("\n")[0]}`,
      );
    }
  }

  // --- internals ----------------------------------------------------------------------------------------------

  private cameraIds(): string[] {
    return this.registry.stations().map((s) => s.id);
  }

  private requireCamera(camera: string): void {
    if (!this.registry.station(camera)) throw new CandidateError(`there is no camera ${camera}`);
  }

  /** A job writing the camera's candidate right now (in this process or the CLI's): nothing may use it yet. */
  private refuseWhileTraining(camera: string, what: string): void {
    const running = this.jobs.running() === camera || this.store.readJob(camera)?.state === "running";
    if (running)
      throw new CandidateError(`camera ${camera}: a retrain job is running for it; ${what} refused`);
  }
}
