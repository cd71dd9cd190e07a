import { randomBytes } from "node:crypto";
import { mkdir, readFile, rename, rm, stat } from "node:fs/promises";
import path from "node:path";
import { fsyncDirectory, writeFileSynced } from "../core/durable-fs.js";
import { errorMessage, StpmdError } from "../core/errors.js";
import { decodeModel, type Graph } from "../onnx/onnx-graph.js";
import { type Geometry, resizeGeometry, tileProblem } from "../stpm/geometry.js";
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
  /** Validation image scores of the kept epoch, sorted, for quantile-based policies (collection margin). */
  validation_scores: number[];
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
 * Writes a bundle so that `dir` always holds either the old complete bundle or the new complete one: files go to
 * a sibling temp directory (fsynced), which then replaces `dir` by rename. An interrupted write leaves only a
 * `.tmp-*` sibling behind, never a half-written bundle at `dir`.
 */
export async function writeBundle(
  dir: string,
  teacherBytes: Uint8Array,
  studentBytes: Uint8Array,
  manifest: Omit<Manifest, "teacher" | "student" | "format" | "format_version"> & {
    teacher_source_path: string;
  },
): Promise<Manifest> {
  const target = path.resolve(dir);
  await mkdir(path.dirname(target), { recursive: true });
  const tmp = `${target}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
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
    const old = `${target}.old-${process.pid}-${randomBytes(4).toString("hex")}`;
    const exists = await stat(target).then(
      () => true,
      () => false,
    );
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

/** A bundle's geometry: the recorded one, or a plain resize to its input for bundles that predate geometry. */
export function bundleGeometry(m: Pick<Manifest, "geometry" | "input">): Geometry {
  const input = { width: m.input.width, height: m.input.height };
  return m.geometry ?? resizeGeometry(input);
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
  const problem = geometryProblem(m as Manifest);
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

/** Reads and verifies a bundle: manifest fields, file hashes, and that the student mirrors the teacher. */
export async function loadBundle(dir: string): Promise<Bundle> {
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
