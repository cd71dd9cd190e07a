import { loadConfig, type ThresholdRule, thresholdRuleProblem } from "../config/index.js";
import { errorMessage } from "../core/errors.js";
import type { Logger } from "../core/log.js";
import type { AuditEntry, AuditStore } from "../publish/audit.js";
import type {
  BundleSummary,
  CandidateView,
  EvidenceReport,
  JobView,
  ShadowView,
} from "../publish/candidates.js";
import {
  type CameraSnapshot,
  CHANGE_SOURCES,
  ControlError,
  type LineControl,
  lastResultSnapshot,
  type ModelChangeOutcome,
  type NodeSnapshot,
  type ReloadOutcome,
  type Requester,
} from "../publish/control.js";
import { reviewOf } from "../publish/review/counts.js";
import { CandidateError, type CandidateManager } from "../stations/candidates/manager.js";
import { StationError, type StationRegistry } from "../stations/registry.js";
import type { Station } from "../stations/station.js";

/** What the control needs of the daemon that owns it. */
export interface ControlHost {
  /** The node-wide part of a snapshot (everything but the cameras and models, which the registry knows). */
  nodeSnapshot(): Omit<NodeSnapshot, "cameras" | "models" | "recipe" | "recipes">;
  /** Turns saving frames on or off (refused when the config file has collection off). */
  setCollection(enabled: boolean): { old: boolean };
  /** The status changed: publish it now rather than at the next interval. */
  statusChanged(): void;
  /** True once the daemon is shutting down: a reload then does nothing. */
  isStopping(): boolean;
  /** While the daemon starts: resolves once start-up has ended, with whether the daemon then runs; else undefined. */
  startup(): Promise<boolean> | undefined;
}

/**
 * The line's {@link LineControl}, implemented over the station registry: thresholds, enables, collection,
 * triggers and reloads from any interface come through here, are validated, applied, logged with who asked and
 * appended to the audit log (docs/audit.md). A person's change is acknowledged only once its entry is on disk: one
 * whose entry cannot be written is undone and refused, naming the audit file. A reload of the config file, a SIGHUP
 * or a bundle's file watch goes ahead without its entry (counted as an audit failure, and logged): the machine
 * must not refuse its own configuration. A request refused for its own reasons (an unknown camera, a bad rule) is
 * appended as `refused`, when it can be.
 */
export class StationControl implements LineControl {
  /** The reload running now, and the one queued behind it (see {@link reload}). */
  private reloading: Promise<ReloadOutcome> | undefined;
  private queuedReload: Promise<ReloadOutcome> | undefined;
  /** The reload asked for during start-up, run once the daemon has started (see {@link reload}). */
  private startupReload: Promise<ReloadOutcome> | undefined;

  /**
   * @param configPath the config file, re-read by {@link reload}; without it a reload reloads only the models.
   */
  constructor(
    private readonly registry: StationRegistry,
    private readonly host: ControlHost,
    private readonly logger: Logger,
    private readonly configPath: string | undefined,
    private readonly audit: AuditStore,
    private readonly candidateManager?: CandidateManager,
  ) {}

  /** Who started each camera's running job: its end is audited in their name. */
  private readonly jobStarters = new Map<string, Requester>();
  /** Cameras whose job a person cancelled: that cancel has its own entry. */
  private readonly cancelsAsked = new Set<string>();

  snapshot(): NodeSnapshot {
    const node = this.host.nodeSnapshot();
    const cameras = this.registry.stations().map((s) => {
      const review = reviewOf(node.sinks, s.id);
      return { ...this.cameraSnapshot(s), ...(review ? { review } : {}) };
    });
    const models = this.registry.models().flatMap((slot) => {
      const m = slot.inspector.manifest;
      return m
        ? [{ bundle: slot.dir, model_version: m.model_version, student_sha256: m.student.sha256 }]
        : [];
    });
    return {
      ...node,
      models,
      recipe: this.registry.activeRecipe ?? null,
      recipes: this.registry.recipeNames(),
      cameras,
    };
  }

  private cameraSnapshot(s: Station): CameraSnapshot {
    const manifest = this.registry.manifestOf(s);
    const camStats = s.camera?.stats();
    return {
      id: s.id,
      enabled: s.enabled,
      state: camStats?.state ?? "disabled",
      fps: Number(s.rate.rate().toFixed(2)),
      inspected: s.inspected,
      defects: s.defects,
      errors: s.errors,
      restarts: camStats?.restarts ?? 0,
      bad_frames: camStats?.badFrames ?? 0,
      dropped_frames: this.registry.droppedFramesOf(s),
      bundle: s.bundle,
      recipe: s.recipe ?? null,
      model_version: manifest?.model_version ?? null,
      threshold: this.registry.thresholdOf(s),
      threshold_rule: s.thresholdRule ?? "bundle",
      part_score: this.registry.partScoreOf(s),
      predicted_false_alarms: this.registry.falseAlarmsOf(s),
      ...(s.last ? { last: lastResultSnapshot(s.last) } : {}),
      ...(this.candidateManager ? { candidate: withoutCamera(this.candidateManager.view(s.id)) } : {}),
    };
  }

  setThreshold(
    camera: string,
    rule: ThresholdRule,
    by: Requester,
  ): { old: number | null; new: number | null } {
    cameraId(camera);
    const entry = { action: "set_threshold", camera, after: { rule } };
    const station = this.refusing(by, entry, () => this.registry.require(camera));
    const problem = thresholdRuleProblem(rule);
    if (problem) this.refuse(by, entry, `threshold for camera "${camera}": ${problem}`);
    const oldRule = station.thresholdRule;
    const change = this.refusing(by, entry, () => this.registry.setThresholdRule(camera, rule));
    try {
      this.record(by, {
        action: "set_threshold",
        camera,
        before: { rule: oldRule ?? "bundle", threshold: change.old },
        after: { rule, threshold: change.new },
      });
    } catch (err) {
      station.setThresholdRule(oldRule);
      throw err;
    }
    this.logger.info(
      { camera, by: requesterLabel(by), old: change.old, new: change.new, rule },
      `threshold of camera ${camera} set by ${requesterLabel(by)}: ${change.old} → ${change.new}`,
    );
    this.host.statusChanged();
    return change;
  }

  async enableCamera(camera: string, enabled: boolean, by: Requester): Promise<void> {
    cameraId(camera);
    const entry = { action: enabled ? "enable_camera" : "disable_camera", camera, after: enabled };
    const station = this.refusing(by, entry, () => this.registry.require(camera));
    if (typeof enabled !== "boolean")
      this.refuse(by, entry, `enabled must be true or false (got ${typeof enabled})`);
    // a camera started during shutdown would outlive the outputs that hear its frames
    if (station.enabled !== enabled && this.host.isStopping())
      this.refuse(by, entry, "the daemon is stopping");
    let changed: boolean;
    try {
      changed = await this.registry.setEnabled(camera, enabled);
    } catch (err) {
      if (!(err instanceof StationError)) throw err;
      this.refuse(by, entry, err.message);
    }
    if (!changed) return;
    try {
      this.record(by, { ...entry, before: !enabled });
    } catch (err) {
      // a camera's start or stop cannot be made atomic with its entry: when the entry fails, it is turned back
      await this.registry
        .setEnabled(camera, !enabled)
        .catch((undoErr: unknown) => this.logger.error({ camera, err: undoErr }, "turning the camera back"));
      throw err;
    }
    this.logger.info(
      { camera, by: requesterLabel(by), old: !enabled, new: enabled },
      `camera ${camera} ${enabled ? "enabled" : "disabled"} by ${requesterLabel(by)}`,
    );
    this.host.statusChanged();
  }

  setCollection(enabled: boolean, by: Requester): void {
    const entry = { action: "collection", after: enabled };
    if (typeof enabled !== "boolean")
      this.refuse(by, entry, `enabled must be true or false (got ${typeof enabled})`);
    const { old } = this.refusing(by, entry, () => this.host.setCollection(enabled));
    try {
      this.record(by, { ...entry, before: old });
    } catch (err) {
      this.host.setCollection(old);
      throw err;
    }
    this.logger.info(
      { by: requesterLabel(by), old, new: enabled },
      `collection ${enabled ? "started" : "stopped"} by ${requesterLabel(by)}`,
    );
  }

  async selectRecipe(
    name: string | null,
    by: Requester,
  ): Promise<{ old: string | null; new: string | null }> {
    const before = this.registry.activeRecipe ?? null;
    const entry = { action: "select_recipe", before: { recipe: before }, after: { recipe: name } };
    if (name !== null && typeof name !== "string")
      this.refuse(by, entry, `recipe must be a recipe's name or null (got ${typeof name})`);
    if (this.host.isStopping()) this.refuse(by, entry, "the daemon is stopping");
    let change: Awaited<ReturnType<StationRegistry["selectRecipe"]>>;
    try {
      change = await this.registry.selectRecipe(name ?? undefined);
    } catch (err) {
      if (!(err instanceof StationError)) throw err;
      this.refuse(by, entry, err.message);
    }
    const old = change.old ?? null;
    try {
      this.record(by, {
        action: "select_recipe",
        before: { recipe: old },
        after: { recipe: name, ...(change.loaded.length > 0 ? { loaded: change.loaded } : {}) },
      });
    } catch (err) {
      // the switch cannot be atomic with its entry: when the entry fails, the line is switched back
      await this.registry
        .selectRecipe(change.old)
        .catch((undoErr: unknown) => this.logger.error({ err: undoErr }, "switching the recipe back"));
      throw err;
    }
    this.logger.info(
      { by: requesterLabel(by), old, new: name },
      `recipe ${name ?? "(none)"} selected by ${requesterLabel(by)} (was ${old ?? "(none)"})`,
    );
    this.host.statusChanged();
    return { old, new: name };
  }

  trigger(camera: string, partId: string, by: Requester, expiresInMs = Number.POSITIVE_INFINITY): void {
    cameraId(camera);
    refused(() => this.registry.require(camera));
    if (typeof partId !== "string") throw new ControlError(`part id must be a string (got ${typeof partId})`);
    refused(() => this.registry.trigger(camera, partId, expiresInMs));
    this.logger.debug({ camera, part_id: partId, by: requesterLabel(by) }, "trigger");
  }

  /**
   * SIGHUP (and every interface's "reload"): re-reads the config file, if there is one, and applies what changed
   * as each key's reload rule says (see the registry's applyConfig); an invalid file is rejected with its problems
   * logged and the running config kept. Then every bundle is reloaded if it changed on disk (a broken one keeps
   * its old model).
   */
  reload(by: Requester): Promise<ReloadOutcome> {
    const startup = this.host.startup();
    if (startup !== undefined) return this.reloadAfterStartup(startup, by);
    if (this.reloading === undefined) {
      this.reloading = this.doReload(by).finally(() => {
        this.reloading = undefined;
      });
      return this.reloading;
    }
    // The running reload may have read the file before this request's edit, so joining it could lose the edit.
    // Requests made while it runs queue one more reload behind it, which all of them share: it reads the file
    // when it starts, so the newest file wins, and a storm of signals costs two reloads, not one per signal.
    this.queuedReload ??= this.reloading
      .catch(() => undefined)
      .then(() => {
        this.queuedReload = undefined;
        return this.reload(by);
      });
    return this.queuedReload;
  }

  /**
   * A reload asked for during start-up (a SIGHUP as soon as systemd started the process, a command to an output
   * already started) would apply a file to stations, models and outputs still being built: it runs once start-up
   * has ended instead, one for every request made meanwhile, reading the file then, so the newest file wins. A
   * start-up that failed or was stopped runs none.
   */
  private reloadAfterStartup(startup: Promise<boolean>, by: Requester): Promise<ReloadOutcome> {
    if (this.startupReload === undefined) {
      const reason = requesterLabel(by);
      this.logger.info({ by: reason }, `${reason} asked for a reload during start-up; it runs once started`);
      this.startupReload = startup.then((started) => {
        this.startupReload = undefined;
        return started ? this.reload(by) : noReload();
      });
    }
    return this.startupReload;
  }

  private async doReload(by: Requester): Promise<ReloadOutcome> {
    const outcome = noReload();
    if (this.host.isStopping()) return outcome;
    const reason = requesterLabel(by);
    this.logger.info({ by: reason }, `reload requested by ${reason}`);
    // the request is on record before anything is re-read; its outcome follows in `reload_result`
    const models = (): string[] => this.snapshot().models.map((m) => `${m.bundle}@${m.model_version}`);
    const before = models();
    this.record(by, { action: "reload", before: { models: before } });
    if (this.configPath !== undefined) {
      try {
        const next = loadConfig(this.configPath);
        const changes = await this.registry.applyConfig(next);
        outcome.problems.push(...changes.problems);
        outcome.failed.push(...changes.failed);
        outcome.configApplied = outcome.problems.length === 0;
      } catch (err) {
        outcome.problems = errorMessage(err)
          .split("\n")
          .filter((l) => l.trim() !== "");
        this.logger.error(
          { file: this.configPath, problems: outcome.problems },
          `new configuration rejected; keeping the running one: ${outcome.problems.join("; ")}`,
        );
      }
    }
    const reloads = await this.registry.reloadModels(reason);
    outcome.swapped.push(...reloads.swapped);
    outcome.failed.push(...reloads.failed);
    this.host.statusChanged();
    // after the fact nothing is left to refuse: a failure is only counted and logged (by the log)
    this.append(by, "ok", {
      action: "reload_result",
      before: { models: before },
      after: { models: models(), config_applied: outcome.configApplied, swapped: outcome.swapped },
      ...(outcome.problems.length + outcome.failed.length > 0
        ? {
            detail: [...outcome.problems, ...outcome.failed.map((b) => `bundle ${b} failed to load`)].join(
              "; ",
            ),
          }
        : {}),
    });
    return outcome;
  }

  // --- candidate models (issue 22) -------------------------------------------------------------------------

  async startRetrain(camera: string, by: Requester): Promise<JobView> {
    cameraId(camera);
    const entry = { action: "retrain.start", camera };
    const manager = this.candidatesOrRefuse(by, entry);
    const job = await this.candidateRequest(by, entry, () =>
      manager.startRetrain(camera, requesterLabel(by)),
    );
    this.jobStarters.set(camera, by);
    try {
      this.record(by, { ...entry, after: { frames: job.frames, epochs: job.epochs } });
    } catch (err) {
      await manager.cancelRetrain(camera, "its audit entry could not be written").catch(() => undefined);
      throw err;
    }
    this.logger.info(
      { camera, by: requesterLabel(by) },
      `retrain of camera ${camera} started by ${requesterLabel(by)}`,
    );
    this.host.statusChanged();
    return job;
  }

  async cancelRetrain(camera: string, by: Requester): Promise<JobView> {
    cameraId(camera);
    const entry = { action: "retrain.cancel", camera };
    const manager = this.candidatesOrRefuse(by, entry);
    this.cancelsAsked.add(camera);
    let job: JobView;
    try {
      job = await this.candidateRequest(by, entry, () => manager.cancelRetrain(camera, requesterLabel(by)));
    } finally {
      this.cancelsAsked.delete(camera);
    }
    // a cancel cannot be undone: its entry is written when it can be
    this.append(by, "ok", { ...entry, after: { state: job.state, epoch: job.epoch } });
    this.host.statusChanged();
    return job;
  }

  /**
   * A job's end (from the manager's events): `retrain.done`, or `retrain.failed` naming why, in the name of who
   * started it; a cancel nobody asked for (the daemon stopping) as the machine's `retrain.cancel`.
   */
  jobEnded(job: JobView): void {
    // a job found ended at start (interrupted) was started by another process: job.json names who
    const by = this.jobStarters.get(job.camera) ?? requesterOfLabel(job.by) ?? { via: "config" as const };
    this.jobStarters.delete(job.camera);
    if (job.state === "cancelled") {
      if (this.cancelsAsked.has(job.camera)) return; // the person's cancel has its own entry
      this.append({ via: "config" }, "ok", {
        action: "retrain.cancel",
        camera: job.camera,
        after: { state: job.state, epoch: job.epoch },
        ...(job.message ? { detail: job.message } : {}),
      });
      return;
    }
    this.append(by, "ok", {
      action: job.state === "done" ? "retrain.done" : "retrain.failed",
      camera: job.camera,
      after: {
        state: job.state,
        epoch: job.epoch,
        ...(job.candidate_model_version ? { model_version: job.candidate_model_version } : {}),
      },
      ...(job.message ? { detail: job.message } : {}),
    });
    this.host.statusChanged();
  }

  async setShadow(camera: string, enabled: boolean, by: Requester): Promise<ShadowView | null> {
    cameraId(camera);
    const entry = { action: enabled ? "shadow.start" : "shadow.stop", camera };
    const manager = this.candidatesOrRefuse(by, entry);
    if (typeof enabled !== "boolean")
      this.refuse(by, entry, `enabled must be true or false (got ${typeof enabled})`);
    const view = await this.candidateRequest(by, entry, () =>
      manager.setShadow(camera, enabled, requesterLabel(by)),
    );
    this.append(by, "ok", {
      ...entry,
      ...(view ? { after: { share: view.share, frames: view.frames } } : {}),
    });
    this.host.statusChanged();
    return view;
  }

  async promote(camera: string, by: Requester, force = false): Promise<ModelChangeOutcome> {
    const entry = { action: "model.promote", camera, ...(force ? { target: "force" } : {}) };
    return this.swapModels(camera, by, entry, "promoted", (m) =>
      m.promote(camera, requesterLabel(by), force),
    );
  }

  async rollback(camera: string, by: Requester): Promise<ModelChangeOutcome> {
    const entry = { action: "model.rollback", camera };
    return this.swapModels(camera, by, entry, "rolled back", (m) => m.rollback(camera, requesterLabel(by)));
  }

  /**
   * A promotion or a rollback: the swap, then its audit entry with both bundles; a swap whose entry cannot be
   * written is undone (rolled back) and refused, as every person's change is.
   */
  private async swapModels(
    camera: string,
    by: Requester,
    entry: { action: string; camera: string; target?: string },
    done: "promoted" | "rolled back",
    swap: (manager: CandidateManager) => Promise<ModelChangeOutcome>,
  ): Promise<ModelChangeOutcome> {
    cameraId(camera);
    const manager = this.candidatesOrRefuse(by, entry);
    const change = await this.candidateRequest(by, entry, () => swap(manager));
    try {
      this.record(by, { ...entry, before: bundleEntry(change.before), after: bundleEntry(change.after) });
    } catch (err) {
      await manager
        .rollback(camera, "its audit entry could not be written")
        .catch((undoErr: unknown) =>
          this.logger.error({ camera, err: undoErr }, `undoing the model ${done} by ${requesterLabel(by)}`),
        );
      throw err;
    }
    this.modelChanged(done, change, by);
    return change;
  }

  async discardCandidate(camera: string, by: Requester): Promise<ModelChangeOutcome> {
    cameraId(camera);
    const entry = { action: "model.discard", camera };
    const manager = this.candidatesOrRefuse(by, entry);
    // a deletion cannot be undone: its entry goes first, and a discard that then fails is appended as refused
    const { candidate, live } = manager.view(camera);
    if (candidate) {
      this.record(by, {
        ...entry,
        before: bundleEntry(candidate),
        after: null,
        detail: `live ${live?.model_version ?? "none"}`,
      });
    }
    const change = await this.candidateRequest(by, entry, () => manager.discard(camera, requesterLabel(by)));
    this.logger.info(
      { camera, by: requesterLabel(by) },
      `candidate of camera ${camera} discarded by ${requesterLabel(by)}`,
    );
    this.host.statusChanged();
    return change;
  }

  candidates(): CandidateView[] {
    return this.candidateManager?.views() ?? [];
  }

  async evidence(camera: string): Promise<EvidenceReport> {
    cameraId(camera);
    if (!this.candidateManager) throw new ControlError("this node runs no candidate models");
    try {
      return await this.candidateManager.evidence(camera);
    } catch (err) {
      throw err instanceof CandidateError ? new ControlError(err.message) : err;
    }
  }

  shadowImage(camera: string, name: string): string | null {
    cameraId(camera);
    if (!this.candidateManager) throw new ControlError("this node runs no candidate models");
    try {
      return this.candidateManager.shadowImage(camera, name);
    } catch (err) {
      throw err instanceof CandidateError ? new ControlError(err.message) : err;
    }
  }

  private candidatesOrRefuse(by: Requester, entry: ChangeEntry): CandidateManager {
    if (!this.candidateManager) this.refuse(by, entry, "this node runs no candidate models");
    if (entry.camera !== undefined && !this.registry.station(entry.camera)) {
      this.refuse(by, entry, `there is no camera ${entry.camera}`);
    }
    return this.candidateManager;
  }

  /** Runs a manager request, turning its refusal into {@link refuse}. */
  private async candidateRequest<T>(
    by: Requester,
    entry: ChangeEntry,
    request: () => Promise<T>,
  ): Promise<T> {
    try {
      return await request();
    } catch (err) {
      if (err instanceof CandidateError || err instanceof ControlError) this.refuse(by, entry, err.message);
      throw err;
    }
  }

  private modelChanged(what: string, change: ModelChangeOutcome, by: Requester): void {
    this.logger.info(
      {
        camera: change.camera,
        by: requesterLabel(by),
        from: change.before?.model_version,
        to: change.after?.model_version,
      },
      `model of camera ${change.camera} ${what} by ${requesterLabel(by)}: ${change.before?.model_version ?? "none"} → ${change.after?.model_version ?? "none"}`,
    );
    this.host.statusChanged();
  }

  /**
   * Appends an entry; the error when it could not be written (which the log has counted and logged itself), so
   * each caller decides what an unwritten entry means.
   */
  private append(by: Requester, outcome: AuditEntry["outcome"], entry: ChangeEntry): Error | undefined {
    try {
      this.audit.appendSync({ user: by.user ?? null, via: by.via, ...entry, outcome });
      return undefined;
    } catch (err) {
      return err instanceof Error ? err : new Error(String(err));
    }
  }

  /**
   * Appends the entry of a change just made. A person's change whose entry cannot be written is refused with the
   * audit file's problem (the caller undoes it); the machine's own change stands.
   */
  private record(by: Requester, entry: ChangeEntry): void {
    const failed = this.append(by, "ok", entry);
    if (failed !== undefined && byPerson(by)) {
      throw new ControlError(`${failed.message}; the change was not made (no unaudited operator change)`);
    }
  }

  /** Refuses a request: appended as `refused` with the reason (when it can be), then thrown to the client. */
  private refuse(by: Requester, entry: ChangeEntry, reason: string): never {
    this.append(by, "refused", { ...entry, detail: reason });
    throw new ControlError(reason);
  }

  /** Runs a registry or host request, turning its refusal into {@link refuse}. */
  private refusing<T>(by: Requester, entry: ChangeEntry, request: () => T): T {
    try {
      return request();
    } catch (err) {
      if (err instanceof StationError || err instanceof ControlError) this.refuse(by, entry, err.message);
      throw err;
    }
  }
}

/** What a change's entry says beyond who asked and its outcome. */
type ChangeEntry = Omit<AuditEntry, "ts" | "user" | "via" | "outcome">;

/** Whether a person asked (through an interface), rather than the machine (its config, a signal, a file watch). */
function byPerson(by: Requester): boolean {
  return by.via !== "config" && by.via !== "sighup" && by.via !== "file-watch";
}

/** The outcome of a reload that changed nothing (yet). */
function noReload(): ReloadOutcome {
  return { configApplied: false, problems: [], swapped: [], failed: [] };
}

/** The requester a job's `by` names ({@link requesterLabel}'s inverse); undefined for a label it cannot have written. */
function requesterOfLabel(label: string): Requester | undefined {
  const colon = label.indexOf(":");
  const via = colon < 0 ? label : label.slice(0, colon);
  const source = CHANGE_SOURCES.find((s) => s === via);
  if (source === undefined) return undefined;
  return colon < 0 ? { via: source } : { via: source, user: label.slice(colon + 1) };
}

/** A bundle as the audit log names it: both identities a promotion's entry must carry. */
function bundleEntry(b: BundleSummary | null): { model_version: string; student_sha256: string } | null {
  return b ? { model_version: b.model_version, student_sha256: b.student_sha256 } : null;
}

function withoutCamera(view: CandidateView): Omit<CandidateView, "camera"> {
  const { camera: _camera, ...rest } = view;
  return rest;
}

/**
 * Who asked, the one way logs, the audit log and a job's `by` name them: `<interface>:<user>` ("http:alice"), or
 * the interface alone ("sighup").
 */
export function requesterLabel(by: Requester): string {
  return by.user ? `${by.via}:${by.user}` : by.via;
}

/** A camera id from a client must be a string (the interfaces pass what they were sent). */
function cameraId(camera: unknown): void {
  if (typeof camera !== "string") throw new ControlError(`camera must be a string (got ${typeof camera})`);
}

/** Runs a registry request, turning its refusal into the line's ControlError (sent back to the client). */
function refused<T>(request: () => T): T {
  try {
    return request();
  } catch (err) {
    throw err instanceof StationError ? new ControlError(err.message) : err;
  }
}
