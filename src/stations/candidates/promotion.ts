/**
 * Promote, roll back and discard (issue 22): the candidate replaces the camera's live bundle by renames, the
 * replaced bundle kept in `previous/`, and the station's model swaps at a batch boundary through the registry's
 * reload path (the same one SIGHUP and the file watch use), without restarting the camera. Nothing moves before
 * the candidate has loaded the way the slots load a bundle; a swap the slot does not take is undone.
 */
import { cp, rename, rm, stat } from "node:fs/promises";
import path from "node:path";
import { loadBundle, type Manifest } from "../../bundle/bundle.js";
import type { InferenceConfig } from "../../config/index.js";
import { fsyncDirectory } from "../../core/durable-fs.js";
import { errorMessage } from "../../core/errors.js";
import type { Logger } from "../../core/log.js";
import { ortProviders } from "../../onnx/ort.js";
import { Inspector } from "../../pipeline/inspector.js";
import type { BundleSummary } from "../../publish/candidates.js";
import type { StationRegistry } from "../registry.js";
import { bundleSummary, CandidateError, type CandidateStore, tempName } from "./store.js";

/** What a promotion, rollback or discard did: the bundle in service before and after (for the audit entry). */
export interface ModelChange {
  camera: string;
  before: BundleSummary | null;
  after: BundleSummary | null;
}

/** A camera and the bundle folder it inspects with. */
export interface CameraBundle {
  id: string;
  bundle: string;
}

/**
 * The bundle folder of `camera` (which `cameras` must hold), resolved; refused when another camera inspects with
 * the same folder: a candidate is trained for, shadowed on and promoted into one camera's bundle only. The one
 * check behind the daemon's commands (cameras from the registry) and `stpmd retrain --candidate` (from the config).
 */
export function ownBundle(camera: string, cameras: readonly CameraBundle[]): string {
  const live = path.resolve(cameras.find((c) => c.id === camera)!.bundle);
  const sharing = cameras.filter((c) => c.id !== camera && path.resolve(c.bundle) === live).map((c) => c.id);
  if (sharing.length > 0) {
    throw new CandidateError(
      `camera ${camera}'s bundle ${live} is shared with camera(s) ${sharing.join(", ")}; a candidate replaces one camera's bundle only (give ${camera} its own model folder first)`,
    );
  }
  return live;
}

export class Promotion {
  constructor(
    private readonly store: CandidateStore,
    private readonly registry: StationRegistry,
    private readonly inference: InferenceConfig,
    private readonly logger: Logger,
  ) {}

  /** The live bundle directory of `camera`, refused when another camera shares it (see {@link ownBundle}). */
  liveDir(camera: string): string {
    if (!this.registry.station(camera)) throw new CandidateError(`there is no camera ${camera}`);
    return ownBundle(
      camera,
      this.registry.stations().map((s) => ({ id: s.id, bundle: s.bundle })),
    );
  }

  /**
   * Loads `dir` the way a slot does (bundle verified, scoring graph built in an inference thread) and releases
   * it; refused with the bundle's problem when it does not load.
   */
  async verify(dir: string, what: string): Promise<Manifest> {
    const inspector = new Inspector(
      dir,
      { providers: ortProviders(this.inference.providers), intraOpThreads: 1 },
      this.logger,
      this.inference.max_batch,
    );
    try {
      return await inspector.load();
    } catch (err) {
      throw new CandidateError(
        `${what} does not load, nothing was changed: ${errorMessage(err).split("\n")[0]}`,
      );
    } finally {
      await inspector.close();
    }
  }

  /**
   * Candidate → live, live → previous/, then the hot swap; the old bundle is put back if the slot refuses it.
   * `beforeMove` runs once the candidate has loaded, before anything moves (the shadow stops there).
   */
  async promote(camera: string, by: string, beforeMove?: () => Promise<void>): Promise<ModelChange> {
    const p = this.store.paths(camera);
    const live = this.liveDir(camera);
    if (!(await exists(p.candidate)))
      throw new CandidateError(`camera ${camera} has no candidate to promote`);
    const candidate = await this.verify(p.candidate, `camera ${camera}'s candidate ${p.candidate}`);
    const before = await summaryOf(live);
    await beforeMove?.();
    await rm(p.previous, { recursive: true, force: true });
    await moveDir(live, p.previous);
    try {
      await moveDir(p.candidate, live);
    } catch (err) {
      await moveDir(p.previous, live);
      throw new CandidateError(
        `cannot put the candidate in place of ${live}, nothing was changed: ${errorMessage(err)}`,
      );
    }
    const failure = await this.swap(camera, candidate.model_version);
    if (failure !== undefined) {
      await moveDir(live, p.candidate);
      await moveDir(p.previous, live);
      await this.registry.reloadModels(`promotion of camera ${camera} undone`);
      throw new CandidateError(`camera ${camera}: ${failure}; the live model is kept`);
    }
    if (before) await this.store.writePrevious(camera, { ...previousOf(before), by });
    return { camera, before, after: bundleSummary(candidate) };
  }

  /** previous/ ↔ live, so a rollback can itself be undone by another. */
  async rollback(camera: string, by: string): Promise<ModelChange> {
    const p = this.store.paths(camera);
    const live = this.liveDir(camera);
    if (!(await exists(p.previous)))
      throw new CandidateError(`camera ${camera} has no previous model to roll back to`);
    const previous = await this.verify(p.previous, `camera ${camera}'s previous model ${p.previous}`);
    const before = await summaryOf(live);
    const aside = rollbackAside(p.root);
    await rm(aside, { recursive: true, force: true });
    await moveDir(live, aside);
    await moveDir(p.previous, live);
    await moveDir(aside, p.previous);
    const failure = await this.swap(camera, previous.model_version);
    if (failure !== undefined) {
      await moveDir(live, aside);
      await moveDir(p.previous, live);
      await moveDir(aside, p.previous);
      await this.registry.reloadModels(`rollback of camera ${camera} undone`);
      throw new CandidateError(`camera ${camera}: ${failure}; the live model is kept`);
    }
    if (before) await this.store.writePrevious(camera, { ...previousOf(before), by });
    return { camera, before, after: bundleSummary(previous) };
  }

  /** Deletes the candidate, its shadow records and its offline evaluation. */
  async discard(camera: string): Promise<ModelChange> {
    const p = this.store.paths(camera);
    if (!(await exists(p.candidate)))
      throw new CandidateError(`camera ${camera} has no candidate to discard`);
    // from its manifest alone: a broken candidate (its files do not check) is the one most worth discarding
    const before = this.store.summary(p.candidate);
    for (const dir of [p.candidate, p.shadow, p.offlineEval]) await rm(dir, { recursive: true, force: true });
    return { camera, before, after: null };
  }

  /**
   * Reloads the changed bundle through the registry; undefined when the station now judges with `version` (or
   * has no model loaded, being disabled: it loads the new bundle when enabled), else why not.
   */
  private async swap(camera: string, version: string): Promise<string | undefined> {
    const station = this.registry.station(camera);
    if (!station || !this.registry.manifestOf(station)) return undefined;
    const reloads = await this.registry.reloadModels(`model change of camera ${camera}`);
    const now = this.registry.manifestOf(station)?.model_version;
    if (now === version) return undefined;
    const failed = reloads.failed.includes(station.bundle) ? " (its load failed)" : "";
    return `the model did not swap to ${version}${failed}, it is ${now ?? "not loaded"}`;
  }
}

/**
 * Where a rollback parks the live bundle between its renames: a fixed name, so that a crash there is repaired at
 * the next start ({@link repairInterruptedSwap}) and never taken for a temp folder and deleted.
 */
function rollbackAside(root: string): string {
  return path.join(root, "rollback-aside");
}

/**
 * At start, before any bundle loads: a promotion or rollback killed between its renames left the camera's live
 * bundle path empty (its bundle in `previous/`, or in `rollback-aside/`), or a rollback's parked bundle not yet in
 * `previous/`. The bundle that was live before the interrupted step is put back (a promotion is then undone; a
 * rollback finished or undone, whichever is whole). Returns what it did, one line, or undefined.
 */
export async function repairInterruptedSwap(
  store: CandidateStore,
  camera: string,
  liveDir: string,
): Promise<string | undefined> {
  const p = store.paths(camera);
  const aside = rollbackAside(p.root);
  if (!(await exists(liveDir))) {
    const from = (await exists(aside)) ? aside : (await exists(p.previous)) ? p.previous : undefined;
    if (from === undefined) return undefined;
    await moveDir(from, liveDir);
    return `camera ${camera}'s bundle ${liveDir} was missing (a promotion or rollback was interrupted): put back from ${from}`;
  }
  if ((await exists(aside)) && !(await exists(p.previous))) {
    await moveDir(aside, p.previous);
    return `camera ${camera}: an interrupted rollback's previous bundle moved from ${aside} to ${p.previous}`;
  }
  return undefined;
}

function previousOf(s: BundleSummary) {
  return {
    model_version: s.model_version,
    student_sha256: s.student_sha256,
    replaced_at: new Date().toISOString(),
  };
}

async function summaryOf(dir: string): Promise<BundleSummary | null> {
  try {
    return bundleSummary((await loadBundle(dir)).manifest);
  } catch {
    return null;
  }
}

async function exists(file: string): Promise<boolean> {
  return stat(file).then(
    () => true,
    () => false,
  );
}

/**
 * Moves a directory by a rename; across file systems (EXDEV) it is copied to a temp sibling of `to` first and
 * that renamed, so `to` never holds a partial copy.
 */
async function moveDir(from: string, to: string): Promise<void> {
  try {
    await rename(from, to);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EXDEV") throw err;
    const temp = tempName(to);
    try {
      await cp(from, temp, { recursive: true });
      await rename(temp, to);
    } catch (copyErr) {
      await rm(temp, { recursive: true, force: true });
      throw copyErr;
    }
    await rm(from, { recursive: true, force: true });
  }
  await fsyncDirectory(path.dirname(to));
}
