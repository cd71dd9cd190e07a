import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import sharp from "sharp";
import { loadBundle, writeBundle } from "../../src/bundle/bundle.js";
import { randomTeacher } from "../../src/bundle/random-teacher.js";
import { createLogger } from "../../src/core/log.js";
import { encodeModel, type Graph } from "../../src/onnx/onnx-graph.js";
import { Random } from "../../src/stpm/random.js";
import { RETRAIN_DEFAULTS, retrain } from "../../src/train/retrain.js";
import { normalFrames, tempDir } from "./tiny-data.js";
import { waitFor as waitForEvery } from "./wait.js";

/** The stpmd binary as users run it. */
export const STPMD_BIN = "dist/src/main.cjs";

/** {@link waitForEvery} at 50 ms: conditions on a daemon's output re-read its whole log. */
export function waitFor<T>(what: string, fn: () => T | undefined | false, timeoutMs = 20_000): Promise<T> {
  return waitForEvery(what, fn, timeoutMs, 50);
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * PNG frames of uniform noise, `width`×`height` (square unless a height is given), from `seed`. A student trained on
 * smooth normal frames scores every one of them as defective, so a camera replaying them produces one defect event
 * per frame: event seqs are then the count of what was produced.
 */
export async function noiseFrames(
  dir: string,
  count: number,
  width: number,
  height = width,
  seed = 77,
): Promise<void> {
  await mkdir(dir, { recursive: true });
  const rng = new Random(seed);
  for (let i = 0; i < count; i++) {
    const rgb = new Uint8Array(width * height * 3).map(() => Math.floor(rng.next() * 256));
    await sharp(rgb, { raw: { width, height, channels: 3 } })
      .png()
      .toFile(path.join(dir, `${String(i).padStart(3, "0")}.png`));
  }
}

/** A small bundle (random teacher, 10 normal frames, 2 epochs) at `out`; returns its model version. */
export async function trainTinyBundle(
  work: string,
  out: string,
  seed: number,
  size = 64,
  valFraction: number = RETRAIN_DEFAULTS.valFraction,
): Promise<string> {
  const teacherFile = path.join(work, "teacher.onnx");
  if (!existsSync(teacherFile)) await writeFile(teacherFile, encodeModel(randomTeacher(1, 8)));
  const frames = path.join(work, `train-${size}`);
  if (!existsSync(frames)) await normalFrames(10, size, frames);
  const s = await retrain({
    ...RETRAIN_DEFAULTS,
    framesDir: frames,
    teacherFile,
    outDir: out,
    epochs: 2,
    batchSize: 4,
    lr: 0.1,
    imageSize: size,
    seed,
    valFraction,
    logger: createLogger("silent"),
    progress: false,
  });
  return s.manifest.model_version;
}

/**
 * The bundle at `from` with its student changed by `damage`, written to `to` by the bundle module's own writer:
 * hashes, manifest and architecture all check, and its model version is `version`.
 */
export async function rewriteStudent(
  from: string,
  to: string,
  version: string,
  damage: (student: Graph) => void,
): Promise<void> {
  const { manifest, student } = await loadBundle(from);
  damage(student);
  const { teacher, student: _student, format: _format, format_version: _version, ...rest } = manifest;
  await writeBundle(to, await readFile(path.join(from, teacher.file)), encodeModel(student), {
    ...rest,
    model_version: version,
    teacher_source_path: teacher.source_path,
  });
}

/** Every weight of the student NaN: every frame's map and score are NaN. */
export function nanWeights(student: Graph): void {
  for (const t of student.initializers.values()) if (t.data instanceof Float32Array) t.data.fill(Number.NaN);
}

/**
 * A student that yields NaN for dark frames only, so it passes the mid-grey probe (128) and fails at run time: its
 * first convolution passes +∞ × the red channel through (the input is normalised to (v/255 − 0.5)/0.5, negative for
 * v ≤ 127) and its first clip loses its floor, so a dark pixel's −∞ reaches the next layers (∞ − ∞ = NaN) while
 * a bright pixel's +∞ is clipped to 6.
 */
export function nanWhenDark(student: Graph): void {
  const conv = student.nodes.find((n) => n.op === "Conv")!;
  const clip = student.nodes.find((n) => n.op === "Clip")!;
  const weight = student.initializers.get(conv.inputs[1]!)!;
  const bias = student.initializers.get(conv.inputs[2]!)!;
  const [, , kh, kw] = weight.dims as [number, number, number, number];
  (weight.data as Float32Array).fill(0);
  // output channel 0 ← input channel 0 (red), centre tap, which never reads the convolution's padding
  (weight.data as Float32Array)[Math.floor(kh / 2) * kw + Math.floor(kw / 2)] = Number.POSITIVE_INFINITY;
  (bias.data as Float32Array).fill(0);
  (student.initializers.get(clip.inputs[1]!)!.data as Float32Array).fill(Number.NEGATIVE_INFINITY);
}

/**
 * What an in-process daemon test starts from: a scratch folder holding a tiny bundle (`model`, trained with `seed`)
 * and `frames` noise frames (`noise`) of `size`², for {@link replaySource}.
 */
export async function tinyStation(
  prefix: string,
  { seed = 1, size = 64, frames = 4 }: { seed?: number; size?: number; frames?: number } = {},
): Promise<{ work: string; bundle: string; noise: string }> {
  const work = await tempDir(prefix);
  const bundle = path.join(work, "model");
  const noise = path.join(work, "noise");
  await trainTinyBundle(work, bundle, seed, size);
  await noiseFrames(noise, frames, size);
  return { work, bundle, noise };
}

/** A replay camera source at `fps`, paced like a live camera. */
export function replaySource(dir: string, fps: number, loop = true): string {
  return (
    `multifilesrc location=${dir}/%03d.png index=0 loop=${loop} caps=image/png,framerate=${fps}/1 ` +
    "! pngdec ! identity sync=true"
  );
}

/** `stpmd run` in its own process, with its output collected. */
export class DaemonProcess {
  readonly child: ChildProcess;
  output = "";
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  constructor(configFile: string, env: NodeJS.ProcessEnv = {}) {
    this.child = spawn(process.execPath, [STPMD_BIN, "run", "--config", configFile], {
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const collect = (d: Buffer): void => {
      this.output += d.toString();
    };
    this.child.stdout!.on("data", collect);
    this.child.stderr!.on("data", collect);
    this.exited = new Promise((resolve) =>
      this.child.once("exit", (code, signal) => resolve({ code, signal })),
    );
  }

  get pid(): number {
    return this.child.pid!;
  }

  /** The JSON log lines so far (non-JSON lines are skipped). */
  logs(): Record<string, unknown>[] {
    const out: Record<string, unknown>[] = [];
    for (const line of this.output.split("\n")) {
      if (!line.startsWith("{")) continue;
      try {
        out.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        // a line cut in the middle by the pipe; the rest follows in the next chunk
      }
    }
    return out;
  }

  hasLog(msg: RegExp): boolean {
    return this.logs().some((l) => msg.test(String(l.msg)));
  }

  /** SIGKILL unless it already exited; resolves once it is gone. */
  async kill(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill("SIGKILL");
    await this.exited;
  }
}

/**
 * The fault suites' fixture: a scratch folder with a tiny bundle (`model`) and `frames` noise frames (`noise`) that
 * the bundle finds defective, so each replayed frame is one defect event.
 */
export async function defectiveReplay(
  prefix: string,
  frames: number,
  size = 64,
): Promise<{ work: string; bundle: string; noise: string }> {
  const work = await tempDir(prefix);
  const bundle = path.join(work, "model");
  await trainTinyBundle(work, bundle, 1, size);
  const noise = path.join(work, "noise");
  await noiseFrames(noise, frames, size);
  return { work, bundle, noise };
}
