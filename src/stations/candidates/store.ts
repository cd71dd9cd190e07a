/**
 * The candidate store on disk: one folder per camera under `candidates.dir` (docs/candidates.md, Layout), its
 * paths, the job's `job.json` (rewritten atomically at every change), the summaries of the bundles it holds, the
 * node-wide retrain lock, and the repair at start of what a crash left half-written.
 */
import { randomBytes } from "node:crypto";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { mkdir, open, readdir, readFile, rm, unlink } from "node:fs/promises";
import path from "node:path";
import { MANIFEST_FILE, type Manifest, recoverBundle } from "../../bundle/bundle.js";
import { writeFileAtomic } from "../../core/durable-fs.js";
import { errorMessage } from "../../core/errors.js";
import type { Logger } from "../../core/log.js";
import { ownProcessTag, parseProcessTag, processRunning } from "../../core/process-identity.js";
import type { StationView } from "../../pipeline/inspector.js";
import type { BundleSummary, JobView, OfflineEval } from "../../publish/candidates.js";
import { predictedFalseAlarmRate } from "../../stpm/threshold.js";

/** A camera's paths in the store. */
export interface CameraPaths {
  root: string;
  candidate: string;
  job: string;
  offlineEval: string;
  shadow: string;
  previous: string;
  previousJson: string;
}

/** A camera's paths in the store under `candidatesDir` (the one definition of the layout; the shadow runs use it too). */
export function candidatePaths(candidatesDir: string, camera: string): CameraPaths {
  const root = path.join(candidatesDir, camera);
  return {
    root,
    candidate: path.join(root, "candidate"),
    job: path.join(root, "job.json"),
    offlineEval: path.join(root, "offline-eval.json"),
    shadow: path.join(root, "shadow"),
    previous: path.join(root, "previous"),
    previousJson: path.join(root, "previous.json"),
  };
}

/** job.json as stored: the view plus who runs it, so that a restart can tell a job whose process is gone. */
export interface JobRecord extends JobView {
  /** The process tag (pid.start-ticks) of the daemon or CLI that runs the job. */
  owner?: string;
  /** The child's pid while it runs. */
  pid?: number;
}

/** previous.json: what the bundle in previous/ is and when and by whom it was replaced. */
export interface PreviousRecord {
  model_version: string;
  student_sha256: string;
  replaced_at: string;
  by: string;
}

/** The node-wide retrain lock's file, in `candidates.dir`: held by the process (daemon or CLI) that runs a job. */
export const LOCK_FILE = "retrain.lock";

/** A refusal of the store (another job runs, too few frames, no candidate): one line for the client. */
export class CandidateError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CandidateError";
  }
}

export class CandidateStore {
  /** Bundle summaries by directory, kept while the directory's manifest is unchanged (status asks every second). */
  private readonly summaries = new Map<string, { key: string; summary: BundleSummary }>();

  constructor(readonly dir: string) {}

  paths(camera: string): CameraPaths {
    return candidatePaths(this.dir, camera);
  }

  // --- job.json -----------------------------------------------------------------------------------------------

  /** The camera's last job as stored, or null (none, or unreadable: logged by the caller's view as no job). */
  readJob(camera: string): JobRecord | null {
    return readJsonSync<JobRecord>(this.paths(camera).job);
  }

  async writeJob(job: JobRecord): Promise<void> {
    const p = this.paths(job.camera);
    await mkdir(p.root, { recursive: true });
    await writeFileAtomic(p.job, tempName(p.job), `${JSON.stringify(job, null, 2)}\n`, { durable: true });
  }

  readOfflineEval(camera: string): OfflineEval | null {
    return readJsonSync<OfflineEval>(this.paths(camera).offlineEval);
  }

  readPrevious(camera: string): PreviousRecord | null {
    return readJsonSync<PreviousRecord>(this.paths(camera).previousJson);
  }

  async writePrevious(camera: string, record: PreviousRecord): Promise<void> {
    const file = this.paths(camera).previousJson;
    await writeFileAtomic(file, tempName(file), `${JSON.stringify(record, null, 2)}\n`, { durable: true });
  }

  // --- bundles --------------------------------------------------------------------------------------------------

  /** A bundle's summary from its manifest (not its files' hashes: loading verifies those); null without one. */
  summary(dir: string): BundleSummary | null {
    const file = path.join(dir, MANIFEST_FILE);
    let key: string;
    try {
      const s = statSync(file);
      key = `${s.ino} ${s.mtimeMs} ${s.size}`;
    } catch {
      this.summaries.delete(dir);
      return null;
    }
    const cached = this.summaries.get(dir);
    if (cached?.key === key) return cached.summary;
    const manifest = readJsonSync<Manifest>(file);
    if (manifest === null) return null;
    const summary = bundleSummary(manifest);
    this.summaries.set(dir, { key, summary });
    return summary;
  }

  /** The cameras with a folder in the store. */
  cameras(): string[] {
    try {
      return readdirSync(this.dir, { withFileTypes: true })
        .filter((d) => d.isDirectory())
        .map((d) => d.name);
    } catch {
      return [];
    }
  }

  // --- start-up repair --------------------------------------------------------------------------------------------

  /**
   * What a crash left half-written in a camera's folder: bundle writes of a dead writer beside `candidate/` and
   * `previous/` (recoverBundle), temp files of job.json, previous.json and offline-eval.json, and a candidate
   * folder without a manifest.
   */
  async recover(camera: string, logger: Logger): Promise<void> {
    const p = this.paths(camera);
    await recoverBundle(p.candidate, logger);
    await recoverBundle(p.previous, logger);
    let names: string[];
    try {
      names = await readdir(p.root);
    } catch {
      return;
    }
    for (const name of names) {
      const match = /\.tmp-(\d+)-[0-9a-f]{8}$/.exec(name);
      if (match === null || (await processRunning(Number(match[1])))) continue;
      await rm(path.join(p.root, name), { recursive: true, force: true });
      logger.info({ camera, removed: name }, `removed ${name}, left half-written by a stopped process`);
    }
    const candidateManifest = await readFile(path.join(p.candidate, MANIFEST_FILE)).catch(() => undefined);
    if (
      candidateManifest === undefined &&
      (await readdir(p.candidate).catch(() => undefined)) !== undefined
    ) {
      await rm(p.candidate, { recursive: true, force: true });
      logger.warn(
        { camera },
        `removed ${p.candidate}: it held no ${MANIFEST_FILE} (a half-written candidate)`,
      );
    }
  }

  // --- the node-wide lock ---------------------------------------------------------------------------------------

  /**
   * Takes the retrain lock for `camera` (one job at a time on the node, across the daemon and the CLI); refused
   * naming the camera and process of the job that holds it. A lock whose process is gone is taken over.
   */
  async lock(camera: string): Promise<() => Promise<void>> {
    await mkdir(this.dir, { recursive: true });
    const file = path.join(this.dir, LOCK_FILE);
    const owner = await ownProcessTag();
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        const handle = await open(file, "wx", 0o640);
        try {
          await handle.writeFile(`${JSON.stringify({ owner, camera })}\n`);
          await handle.sync();
        } finally {
          await handle.close();
        }
        return async () => {
          const held = readJsonSync<{ owner: string }>(file);
          if (held?.owner === owner) await unlink(file).catch(() => undefined);
        };
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EEXIST") {
          throw new CandidateError(`cannot take the retrain lock ${file}: ${errorMessage(err)}`);
        }
      }
      const held = readJsonSync<{ owner: string; camera: string }>(file);
      const tag = held ? parseProcessTag(held.owner) : undefined;
      if (held && tag && (await processRunning(tag.pid, tag.startTicks))) {
        throw new CandidateError(
          `a retrain job is already running for camera ${held.camera} (process ${tag.pid}); one job at a time`,
        );
      }
      await unlink(file).catch(() => undefined);
    }
    throw new CandidateError(`cannot take the retrain lock ${file}: another process keeps taking it`);
  }
}

/**
 * What identifies a bundle and how it judges a camera's frames: its threshold is the one in force for the camera
 * (`view`, the camera's threshold rule applied to this bundle, as the live path judges) or the bundle's own, and
 * the predicted false-alarm rate is the 95 % upper bound its validation normals give that threshold (null without
 * them: {@link CandidateStore.summary} reads a manifest unvalidated).
 */
export function bundleSummary(
  manifest: Manifest,
  view?: Pick<StationView, "threshold" | "falseAlarms">,
): BundleSummary {
  const threshold = view?.threshold ?? manifest.threshold;
  const predicted = view?.falseAlarms ?? predictedFalseAlarmRate(threshold, manifest.validation_scores ?? []);
  return {
    model_version: manifest.model_version,
    student_sha256: manifest.student.sha256,
    created_at: manifest.created_at,
    threshold,
    predicted_false_alarm_rate: predicted.upper95,
  };
}

/** A sibling temp name for an atomic write: `<file>.tmp-<pid>-<8 hex>`, which {@link CandidateStore.recover} knows. */
export function tempName(file: string): string {
  return `${file}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
}

function readJsonSync<T>(file: string): T | null {
  try {
    return JSON.parse(readFileSync(file, "utf8")) as T;
  } catch {
    return null;
  }
}
