import { randomBytes } from "node:crypto";
import { mkdir, readdir, readFile, rename, rm, stat } from "node:fs/promises";
import path from "node:path";
import { fsyncDirectory, writeFileSynced } from "../core/durable-fs.js";
import { errorMessage, StpmdError } from "../core/errors.js";
import type { Logger } from "../core/log.js";
import { ownProcessTag, parseProcessTag, processRunning } from "../core/process-identity.js";
import { decodeModel, type Graph } from "../onnx/onnx-graph.js";
import { type Geometry, marginOf, marginProblem, resizeGeometry, tileProblem } from "../stpm/geometry.js";
import {
  MAX_SCORE,
  PART_SCORE_AGGREGATIONS,
  type PartScore,
  type PartScoreAggregation,
  partScoreOf,
  partScoreProblem,
} from "../stpm/part-score.js";
import { quantile, type ScoreStats, scoreStats } from "../stpm/statistics.js";
import { sha256 } from "./teacher.js";

export { quantile, type ScoreStats, scoreStats };

export const BUNDLE_FORMAT = "stpmd-bundle";
export const BUNDLE_FORMAT_VERSION = 1;
export const MANIFEST_FILE = "manifest.json";

export interface Manifest {
  format: typeof BUNDLE_FORMAT;
  format_version: number;
  /** Unique per retrain: creation time plus the student's hash prefix. */
  model_version: string;
  created_at: string;
  input: {
    name: string;
    height: number;
    width: number;
    mean: number[];
    std: number[];
    normalisation_source: string;
  };
  /**
   * How frames become model input (resize or tiles, ROI, scale) and the grid of the maps. Absent in bundles
   * written before it existed, which resize to `input` (see {@link bundleGeometry}).
   */
  geometry?: Geometry;
  outputs: string[];
  teacher: { file: string; sha256: string; source_path: string };
  student: { file: string; sha256: string };
  /** Image-score threshold: a frame is defective when its score is above it; regions are map > threshold. */
  threshold: number;
  threshold_rule: string;
  /**
   * How an image's map becomes its score (src/stpm/part-score.ts); `threshold`, `validation_scores` and
   * `score_stats` are in this score. Absent in bundles written before it existed, which score by `max` (see
   * {@link bundlePartScore}).
   */
  score?: PartScore;
  /** Validation image scores of the kept epoch, sorted, for quantile-based policies (collection margin). */
  validation_scores: number[];
  /**
   * The same validation images' scores under every aggregation with stpmd's parameters (partScoreOf), sorted, so
   * that a camera may score by another aggregation than the bundle's and still get a threshold made from its own
   * scores. Absent in bundles written before it existed.
   */
  validation_scores_by_aggregation?: Partial<Record<PartScoreAggregation, number[]>>;
  score_stats: ScoreStats;
  training: Record<string, unknown>;
}

export interface Bundle {
  dir: string;
  manifest: Manifest;
  teacher: Graph;
  student: Graph;
}

/**
 * Writes a bundle so that `dir` holds the old complete bundle or the new complete one, or, for the moment between
 * two renames, neither: files go to a sibling temp directory `<dir>.tmp-<writer>-*` (fsynced), the old bundle is
 * renamed to `<dir>.old-<writer>-*`, and the temp directory to `dir`. Node has no atomic exchange of two
 * directories (renameat2 RENAME_EXCHANGE), so a writer killed between the two renames leaves no bundle at `dir`;
 * {@link recoverBundle} puts the old one back; every write, every daemon start and a load that finds no bundle call
 * it first. `<writer>` is the writing process's tag (pid and start time), so that only what dead writers left is
 * ever touched.
 */
export async function writeBundle(
  dir: string,
  teacherBytes: Uint8Array,
  studentBytes: Uint8Array,
  manifest: Omit<Manifest, "teacher" | "student" | "format" | "format_version"> & {
    teacher_source_path: string;
  },
  logger?: Logger,
): Promise<Manifest> {
  const target = path.resolve(dir);
  await mkdir(path.dirname(target), { recursive: true });
  await recoverBundle(target, logger);
  const writer = await ownProcessTag();
  const tmp = `${target}${TEMP_MARK}${writer}-${randomBytes(4).toString("hex")}`;
  await mkdir(tmp);
  const { teacher_source_path, ...rest } = manifest;
  const full: Manifest = {
    format: BUNDLE_FORMAT,
    format_version: BUNDLE_FORMAT_VERSION,
    ...rest,
    teacher: { file: "teacher.onnx", sha256: sha256(teacherBytes), source_path: teacher_source_path },
    student: { file: "student.onnx", sha256: sha256(studentBytes) },
  };
  try {
    await writeFileSynced(path.join(tmp, "teacher.onnx"), teacherBytes);
    await writeFileSynced(path.join(tmp, "student.onnx"), studentBytes);
    await writeFileSynced(path.join(tmp, MANIFEST_FILE), `${JSON.stringify(full, null, 2)}\n`);
    const old = `${target}${OLD_MARK}${writer}-${randomBytes(4).toString("hex")}`;
    const exists = await pathExists(target);
    if (exists) await rename(target, old);
    await rename(tmp, target);
    await fsyncDirectory(path.dirname(target));
    if (exists) await rm(old, { recursive: true, force: true });
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    throw err;
  }
  return full;
}

/** Suffixes of a bundle's siblings while it is written: the new files, and the bundle it replaces. */
const TEMP_MARK = ".tmp-";
const OLD_MARK = ".old-";

/** A sibling `<dir>.tmp-*` or `<dir>.old-*` that a bundle write left, with the writer that left it. */
interface WriteLeftover {
  path: string;
  kind: "tmp" | "old";
  pid: number;
  startTicks?: string;
}

/** The write leftovers beside `target` (`.tmp-<writer>-<hex>`, `.old-<writer>-<hex>`; `<writer>` a process tag). */
async function writeLeftovers(target: string): Promise<WriteLeftover[]> {
  const parent = path.dirname(target);
  const base = path.basename(target);
  let names: string[];
  try {
    names = await readdir(parent);
  } catch {
    return [];
  }
  const found: WriteLeftover[] = [];
  for (const name of names) {
    const mark = name.startsWith(base + TEMP_MARK)
      ? TEMP_MARK
      : name.startsWith(base + OLD_MARK)
        ? OLD_MARK
        : null;
    if (mark === null) continue;
    // exactly as writeBundle names them (8 hex digits), so that a user's `model.old-2024-01` is never taken for one
    const match = /^(.+)-[0-9a-f]{8}$/.exec(name.slice(base.length + mark.length));
    const writer = match === null ? undefined : parseProcessTag(match[1]!);
    if (writer === undefined) continue;
    found.push({ path: path.join(parent, name), kind: mark === TEMP_MARK ? "tmp" : "old", ...writer });
  }
  return found;
}

/**
 * Repairs what bundle writes killed midway left beside `dir` (a retrain or quantization SIGKILLed, a power cut):
 * when `dir` is missing, the bundle a dead writer moved aside (`<dir>.old-*`, the newest when several) is renamed
 * back, and a warning names it; then every `<dir>.tmp-*` and `<dir>.old-*` of a writer no longer running is removed
 * (a temp directory holds a whole bundle, 4.3 MB for the 256² model). What a running writer (this process or
 * another) left is never touched: it may be between its two renames right now.
 */
export async function recoverBundle(dir: string, logger?: Logger): Promise<void> {
  const target = path.resolve(dir);
  const stale: WriteLeftover[] = [];
  for (const leftover of await writeLeftovers(target)) {
    // this process's own writes included: its pid and start time match, so they count as running
    if (!(await processRunning(leftover.pid, leftover.startTicks))) stale.push(leftover);
  }
  if (stale.length === 0) return;
  if (!(await pathExists(target))) {
    const restored = await restoreNewestOld(target, stale, logger);
    if (restored !== undefined) stale.splice(stale.indexOf(restored), 1);
  }
  for (const leftover of stale) {
    try {
      await rm(leftover.path, { recursive: true, force: true });
    } catch (err) {
      logger?.warn({ err, bundle: target }, `cannot remove ${leftover.path}, left by a killed bundle write`);
      continue;
    }
    logger?.info(
      { bundle: target, removed: leftover.path, writer_pid: leftover.pid },
      `removed ${leftover.path}, left by a bundle write of process ${leftover.pid}, which is no longer running`,
    );
  }
}

async function pathExists(file: string): Promise<boolean> {
  return stat(file).then(
    () => true,
    () => false,
  );
}

/**
 * Renames the newest `<target>.old-*` among `stale` back to `target`; returns it, or undefined when there was none
 * or another process restored the bundle first (the rename then fails: `target` exists).
 */
async function restoreNewestOld(
  target: string,
  stale: readonly WriteLeftover[],
  logger: Logger | undefined,
): Promise<WriteLeftover | undefined> {
  const moved = stale.filter((l) => l.kind === "old");
  const times = await Promise.all(
    moved.map((l) =>
      stat(l.path).then(
        (s) => s.mtimeMs,
        () => Number.NEGATIVE_INFINITY,
      ),
    ),
  );
  const newest = moved[times.indexOf(Math.max(...times))];
  if (newest === undefined) return undefined;
  try {
    await rename(newest.path, target);
    await fsyncDirectory(path.dirname(target));
  } catch (err) {
    logger?.warn(
      { err, bundle: target },
      `bundle ${target} is missing and ${newest.path} cannot be put back`,
    );
    return undefined;
  }
  logger?.warn(
    { bundle: target, restored_from: newest.path, writer_pid: newest.pid },
    `bundle ${target} was missing: a write by process ${newest.pid} was killed between its two renames; restored the previous bundle from ${newest.path}`,
  );
  return newest;
}

/**
 * How a bundle's scoring graph is built: its input (the inspected area's model size), normalisation and context
 * margin (0 for bundles that predate it, whose graph is then exactly as before).
 */
export function scoringOptions(m: Pick<Manifest, "geometry" | "input">): {
  height: number;
  width: number;
  mean: number[];
  std: number[];
  margin: number;
} {
  const { height, width, mean, std } = m.input;
  return { height, width, mean, std, margin: marginOf(bundleGeometry(m)) };
}

/** A bundle's geometry: the recorded one, or a plain resize to its input for bundles that predate geometry. */
export function bundleGeometry(m: Pick<Manifest, "geometry" | "input">): Geometry {
  const input = { width: m.input.width, height: m.input.height };
  return m.geometry ?? resizeGeometry(input);
}

/** How a bundle's maps become image scores: its manifest's `score`, or `max` for a bundle written before it. */
export function bundlePartScore(m: Pick<Manifest, "score">): PartScore {
  return m.score ?? MAX_SCORE;
}

/** What a camera that scores by `aggregation` is judged with under a bundle: the score and its threshold basis. */
export interface ScoringBasis {
  score: PartScore;
  /** The bundle's own threshold carried over to this score: mean + the bundle's σ multiple · std of its scores. */
  threshold: number;
  /** Sorted ascending. */
  validation_scores: number[];
  score_stats: ScoreStats;
}

/**
 * The scoring basis of a camera that asks for `aggregation` (undefined: the bundle's own). The bundle's own
 * aggregation uses its threshold and scores as they are; another one uses the bundle's stored validation scores
 * under that aggregation, with the bundle's threshold rule carried over as its σ multiple ((threshold − mean)/std
 * of the bundle's own scores: retrain's rule is mean + k·std). Undefined when the bundle stores no such scores
 * (written before issue 19): a threshold made in one score does not fit another, so the caller must refuse.
 */
export function scoringBasis(m: Manifest, aggregation?: PartScoreAggregation): ScoringBasis | undefined {
  const own = bundlePartScore(m);
  const asked = aggregation === undefined ? own : partScoreOf(aggregation);
  if (aggregation === undefined || own.aggregation === aggregation) {
    return {
      score: own,
      threshold: m.threshold,
      validation_scores: m.validation_scores,
      score_stats: m.score_stats,
    };
  }
  const scores = m.validation_scores_by_aggregation?.[aggregation];
  if (scores === undefined || scores.length === 0) return undefined;
  const sorted = [...scores].sort((a, b) => a - b);
  const stats = scoreStats(sorted);
  const { mean, std } = m.score_stats;
  const k = std > 0 ? (m.threshold - mean) / std : 0;
  return {
    score: asked,
    threshold: stats.mean + k * stats.std,
    validation_scores: sorted,
    score_stats: stats,
  };
}

/** Every aggregation's validation scores (sorted), for {@link Manifest.validation_scores_by_aggregation}. */
export function scoresByAggregation(
  score: (spec: PartScore) => number[],
): Record<PartScoreAggregation, number[]> {
  const out = {} as Record<PartScoreAggregation, number[]>;
  for (const a of PART_SCORE_AGGREGATIONS) out[a] = score(partScoreOf(a)).sort((x, y) => x - y);
  return out;
}

function scoreProblem(m: Manifest): string | undefined {
  if (m.score === undefined) return undefined;
  const problem = partScoreProblem(m.score);
  return problem === undefined ? undefined : `score: ${problem}`;
}

function geometryProblem(m: Manifest): string | undefined {
  const g = m.geometry;
  if (g === undefined) return undefined;
  if (typeof g !== "object" || g === null || (g.mode !== "resize" && g.mode !== "tile")) {
    return 'geometry.mode must be "resize" or "tile"';
  }
  if (g.input?.width !== m.input.width || g.input?.height !== m.input.height) {
    return "geometry.input differs from input";
  }
  if (g.margin !== undefined) {
    const problem = marginProblem(g.margin, g.mode === "resize" ? g.input : g.capture);
    if (problem) return `geometry.margin ${g.margin} ${problem}`;
  }
  if (g.mode === "resize") {
    return g.capture?.width === g.input.width && g.capture?.height === g.input.height
      ? undefined
      : "geometry.capture must equal the input in resize mode";
  }
  if (g.tile === null || typeof g.tile?.size !== "number" || g.tile.size !== g.input.width) {
    return "geometry.tile.size must equal the input size";
  }
  return tileProblem(g.capture, g.tile.size, g.tile.overlap);
}

function bundleError(dir: string, problem: string): StpmdError {
  return new StpmdError("ERR_BUNDLE_INVALID", `${dir}: ${problem}`);
}

function checkManifest(dir: string, m: unknown): Manifest {
  if (typeof m !== "object" || m === null) throw bundleError(dir, `${MANIFEST_FILE} is not a JSON object`);
  const obj = m as Record<string, unknown>;
  if (obj.format !== BUNDLE_FORMAT)
    throw bundleError(dir, `${MANIFEST_FILE}: format is not "${BUNDLE_FORMAT}"`);
  if (obj.format_version !== BUNDLE_FORMAT_VERSION) {
    throw bundleError(
      dir,
      `${MANIFEST_FILE}: format_version ${String(obj.format_version)} is not supported (expected ${BUNDLE_FORMAT_VERSION})`,
    );
  }
  const need = (key: string, type: string): void => {
    if (typeof obj[key] !== type)
      throw bundleError(dir, `${MANIFEST_FILE}: "${key}" is missing or not a ${type}`);
  };
  need("model_version", "string");
  need("threshold", "number");
  need("input", "object");
  need("teacher", "object");
  need("student", "object");
  need("score_stats", "object");
  if (!Number.isFinite(obj.threshold)) throw bundleError(dir, `${MANIFEST_FILE}: threshold is not finite`);
  if (!Array.isArray(obj.validation_scores))
    throw bundleError(dir, `${MANIFEST_FILE}: "validation_scores" is missing`);
  const input = obj.input as Record<string, unknown>;
  for (const k of ["height", "width"]) {
    if (typeof input[k] !== "number" || (input[k] as number) % 16 !== 0) {
      throw bundleError(dir, `${MANIFEST_FILE}: input.${k} must be a multiple of 16`);
    }
  }
  const problem = geometryProblem(m as Manifest) ?? scoreProblem(m as Manifest);
  if (problem) throw bundleError(dir, `${MANIFEST_FILE}: ${problem}`);
  return m as Manifest;
}

async function readVerified(
  dir: string,
  entry: { file: string; sha256: string },
  role: string,
): Promise<Graph> {
  const file = path.join(dir, entry.file);
  let bytes: Uint8Array;
  try {
    bytes = new Uint8Array(await readFile(file));
  } catch (err) {
    throw bundleError(dir, `${role} ONNX ${entry.file} cannot be read (${errorMessage(err)})`);
  }
  const digest = sha256(bytes);
  if (digest !== entry.sha256) {
    throw bundleError(
      dir,
      `${role} ONNX ${entry.file} is corrupt: sha256 ${digest.slice(0, 12)}… does not match the manifest's ${entry.sha256.slice(0, 12)}…`,
    );
  }
  try {
    return decodeModel(bytes);
  } catch (err) {
    throw bundleError(dir, `${role} ONNX ${entry.file} does not parse (${errorMessage(err)})`);
  }
}

/**
 * Reads and verifies a bundle: manifest fields, file hashes, and that the student mirrors the teacher. A bundle
 * missing because its writer was killed between two renames is restored first ({@link recoverBundle}).
 */
export async function loadBundle(dir: string, logger?: Logger): Promise<Bundle> {
  if (!(await pathExists(dir))) await recoverBundle(dir, logger);
  let raw: string;
  try {
    raw = await readFile(path.join(dir, MANIFEST_FILE), "utf8");
  } catch (err) {
    throw bundleError(dir, `not a model bundle: ${MANIFEST_FILE} cannot be read (${errorMessage(err)})`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch (err) {
    throw bundleError(dir, `${MANIFEST_FILE} is not valid JSON (${errorMessage(err)})`);
  }
  const manifest = checkManifest(dir, parsed);
  const teacher = await readVerified(dir, manifest.teacher, "teacher");
  const student = await readVerified(dir, manifest.student, "student");
  const ops = (g: Graph): string => g.nodes.map((n) => n.op).join(",");
  const outs = (g: Graph): string => g.outputs.map((o) => o.name).join(",");
  if (ops(teacher) !== ops(student) || outs(teacher) !== outs(student)) {
    throw new StpmdError(
      "ERR_BUNDLE_MISMATCH",
      `${dir}: student.onnx does not have the teacher's architecture`,
    );
  }
  if (outs(teacher) !== manifest.outputs.join(",")) {
    throw new StpmdError(
      "ERR_BUNDLE_MISMATCH",
      `${dir}: manifest outputs [${manifest.outputs}] differ from the teacher's [${outs(teacher)}]`,
    );
  }
  return { dir, manifest, teacher, student };
}
