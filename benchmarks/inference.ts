/**
 * End-to-end inference speed: decoded 900×900 uint8 RGB camera frames → 256×256 → anomaly maps, image scores and
 * regions, at batch 1, 8 and 32, for stpmd (fp32 and int8), a bare ONNX Runtime floor (teacher + student feature
 * passes only, on pre-normalised float input) and PyTorch eager (NCHW and channels_last), on two backbones.
 *
 *   node dist/benchmarks/inference.js [--quick] [--backbones mobilenet_v2,resnet18]
 *
 * Every contender runs in its own child process (for its peak RSS) on the same frames: the first bottle test
 * PNGs, decoded once up front. Writes benchmarks/results/inference.json and .md (inference-quick.* with --quick).
 */
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import sharp from "sharp";
import { loadBundle } from "../src/bundle/bundle.js";
import { normalisationOf } from "../src/bundle/teacher.js";
import { listImages, resizeRgb, rgbToChw } from "../src/data/images.js";
import {
  decodeModel,
  encodeModel,
  type Graph,
  type GraphNode,
  type Tensor,
  tensorSize,
} from "../src/onnx/onnx-graph.js";
import { createSession, ort } from "../src/onnx/ort.js";
import { inferShapes } from "../src/onnx/shapes.js";
import { Random } from "../src/stpm/random.js";
import { findRegions } from "../src/stpm/regions.js";
import { buildScoringGraph, Scorer } from "../src/stpm/scorer.js";
import { calibrate, calibrationInputs, executedOpCounts, quantizeGraph } from "../src/train/quantize.js";
import {
  benchFrames,
  convFlops,
  convTensors,
  fmt,
  machineInfo,
  machineState,
  measurePeak,
  median,
  peakRssMib,
  runJsonChild,
  writeResults,
  writeSafetensors,
} from "./common.js";
import { buildDotProductScoringGraph } from "./scoring-variants.js";

const HERE = path.dirname(fileURLToPath(import.meta.url)); // dist/benchmarks
const REPO = path.resolve(HERE, "../..");
const SHARED = process.env.STPMD_SHARED ?? path.resolve(REPO, "../shared");
const BOTTLE = path.join(SHARED, "data/mvtec_ad/bottle");
const MNV2_ONNX = path.join(SHARED, "weights/mobilenet_v2_coral_pyramid.onnx");
const BOTTLE_BUNDLE = process.env.STPMD_BENCH_BUNDLE ?? path.join(REPO, "out/models/bottle");
const VENV_PYTHON = path.join(REPO, "benchmarks/.venv/bin/python");
const SIZE = 256;
const CAMERA = 900;

type Backbone = "mobilenet_v2" | "resnet18";

/** What a child process measures; passed as JSON on its command line. */
interface ChildSpec {
  kind: "stpmd" | "floor" | "matmul" | "variant" | "preprocess";
  label: string;
  teacher?: string;
  student?: string;
  teacherInt8?: string;
  studentInt8?: string;
  /** Float teacher with the same output sizes as `teacher`, for shape inference. */
  shapesFrom?: string;
  mean?: number[];
  std?: number[];
  threshold?: number;
  frames: string[];
  batches: number[];
  runs: number;
  warmup: number;
  resize?: "sequential" | "parallel";
}

interface BatchResult {
  batch: number;
  /** The warm-up runs, not counted: as many as it took to settle (see {@link WARM_TOLERANCE}). */
  warmup_ms?: number[];
  runs_ms: number[];
  median_ms: number;
  ms_per_frame: number;
  frames_per_s: number;
  stages_ms?: Record<string, number>;
  /** stpmd: median of one batch at a time, resize → score → regions (the latency of a batch). */
  one_at_a_time_ms?: number;
}

interface ChildResult {
  label: string;
  engine?: string;
  results: BatchResult[];
  peak_rss_mib: number;
  rss_after_frames_mib?: number;
  check_score0?: number;
  [key: string]: unknown;
}

// ---------------------------------------------------------------------------------------------------------------
// Child side
// ---------------------------------------------------------------------------------------------------------------

async function decodeFrames(files: string[]): Promise<Uint8Array[]> {
  return Promise.all(
    files.map(async (f) => {
      const { data, info } = await sharp(f).removeAlpha().raw().toBuffer({ resolveWithObject: true });
      if (info.width !== CAMERA || info.height !== CAMERA || info.channels !== 3) {
        throw new Error(
          `${f}: expected ${CAMERA}×${CAMERA} RGB, got ${info.width}×${info.height}×${info.channels}`,
        );
      }
      return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    }),
  );
}

function resizeOne(frame: Uint8Array): Promise<Uint8Array> {
  return resizeRgb(frame, CAMERA, CAMERA, SIZE, SIZE);
}

/** Resizes `count` frames into `out` (reused between runs), one sharp call per frame. */
async function resizeInto(
  frames: Uint8Array[],
  count: number,
  out: Uint8Array,
  mode: "sequential" | "parallel",
): Promise<void> {
  const per = SIZE * SIZE * 3;
  if (mode === "parallel") {
    const bufs = await Promise.all(frames.slice(0, count).map(resizeOne));
    bufs.forEach((b, i) => {
      out.set(b, i * per);
    });
    return;
  }
  for (let i = 0; i < count; i++) out.set(await resizeOne(frames[i]!), i * per);
}

/** Times `fn` (which returns named stage times) warmup + runs times per batch size. */
/**
 * Warm-up runs continue past `spec.warmup` until two in a row agree within this fraction, for at most
 * {@link MAX_WARMUP} runs. ORT's first runs at a new batch size are several times slower than the rest, and with
 * `--quick`'s single warm-up run one of its two timed runs was still cold: the one-at-a-time stpmd batch of 8 read
 * 300 ms against 103 streaming, and the ORT floor (timed only one way) 77.9 frames/s at batch 1 against stpmd's
 * 82.9 — a floor below the Scorer it bounds (`inference.js --quick --skip-torch --backbones mobilenet_v2`, before).
 */
const WARM_TOLERANCE = 0.2;
const MAX_WARMUP = 12;

async function timeBatches(
  spec: ChildSpec,
  fn: (batch: number) => Promise<Record<string, number>>,
): Promise<BatchResult[]> {
  const results: BatchResult[] = [];
  for (const batch of spec.batches) {
    const warm: number[] = [];
    while (warm.length < MAX_WARMUP && (warm.length < spec.warmup || !settled(warm))) {
      const t0 = performance.now();
      await fn(batch);
      warm.push(performance.now() - t0);
    }
    const times: number[] = [];
    const stages: Record<string, number[]> = {};
    for (let i = 0; i < spec.runs; i++) {
      const t0 = performance.now();
      const st = await fn(batch);
      times.push(performance.now() - t0);
      for (const [k, v] of Object.entries(st)) {
        stages[k] = [...(stages[k] ?? []), v];
      }
    }
    const med = median(times);
    results.push({
      batch,
      warmup_ms: warm.map((t) => Number(t.toFixed(3))),
      runs_ms: times.map((t) => Number(t.toFixed(3))),
      median_ms: med,
      ms_per_frame: med / batch,
      frames_per_s: (1000 * batch) / med,
      ...(Object.keys(stages).length
        ? { stages_ms: Object.fromEntries(Object.entries(stages).map(([k, v]) => [k, median(v)])) }
        : {}),
    });
  }
  return results;
}

/** The last two warm-up runs agree within {@link WARM_TOLERANCE}. */
function settled(warm: readonly number[]): boolean {
  if (warm.length < 2) return false;
  const a = warm.at(-1)!;
  const b = warm.at(-2)!;
  return Math.abs(a - b) <= WARM_TOLERANCE * Math.min(a, b);
}

async function readGraph(file: string): Promise<Graph> {
  return decodeModel(new Uint8Array(await readFile(file)));
}

/**
 * stpmd's own path: sharp resize into a reused buffer, the fused Scorer, findRegions per defective frame. Timed two
 * ways: one batch at a time (latency, and the stage split), and streaming as the daemon runs, where the next
 * batch's resize (libuv threads) overlaps this batch's inference (frames/s).
 */
async function childStpmd(spec: ChildSpec, frames: Uint8Array[]): Promise<Partial<ChildResult>> {
  const teacher = await readGraph(spec.teacher!);
  const student = await readGraph(spec.student!);
  const scorer = await Scorer.create(teacher, student, {
    height: SIZE,
    width: SIZE,
    mean: spec.mean!,
    std: spec.std!,
  });
  const maxBatch = Math.max(...spec.batches);
  const hw = SIZE * SIZE;
  const buffers = [new Uint8Array(maxBatch * hw * 3), new Uint8Array(maxBatch * hw * 3)];
  let regionCount = 0;
  let score0 = Number.NaN;
  const resize = (batch: number, into: Uint8Array): Promise<void> =>
    resizeInto(frames, batch, into, spec.resize ?? "sequential");
  const scoreAndFindRegions = async (batch: number, packed: Uint8Array): Promise<number> => {
    const { maps, scores } = await scorer.score(packed.subarray(0, batch * hw * 3), batch);
    const t = performance.now();
    regionCount = 0;
    for (let i = 0; i < batch; i++) {
      // as the daemon's Inspector does: a frame whose score is under the threshold has no pixel above it
      if (scores[i]! <= spec.threshold!) continue;
      regionCount += findRegions(maps.subarray(i * hw, (i + 1) * hw), SIZE, SIZE, spec.threshold!).length;
    }
    score0 = scores[0]!;
    return t;
  };
  const oneAtATime = await timeBatches(spec, async (batch) => {
    const t0 = performance.now();
    await resize(batch, buffers[0]!);
    const t1 = performance.now();
    const t2 = await scoreAndFindRegions(batch, buffers[0]!);
    return { resize: t1 - t0, score: t2 - t1, regions: performance.now() - t2 };
  });
  // streaming: double-buffered, the resize of the next batch is in flight while this one is scored
  let prefetch: { batch: number; slot: number; done: Promise<void> } | undefined;
  const streaming = await timeBatches(spec, async (batch) => {
    if (prefetch?.batch !== batch) {
      await prefetch?.done;
      prefetch = { batch, slot: 0, done: resize(batch, buffers[0]!) };
    }
    await prefetch.done;
    const slot = prefetch.slot;
    prefetch = { batch, slot: 1 - slot, done: resize(batch, buffers[1 - slot]!) };
    await scoreAndFindRegions(batch, buffers[slot]!);
    return {};
  });
  await prefetch?.done;
  await scorer.release();
  return {
    engine: `onnxruntime-node ${ort.env.versions.common} (fused scoring graph)`,
    results: streaming.map((r) => ({
      ...r,
      stages_ms: oneAtATime.find((o) => o.batch === r.batch)!.stages_ms!,
      one_at_a_time_ms: oneAtATime.find((o) => o.batch === r.batch)!.median_ms,
    })),
    regions_last_run: regionCount,
    check_score0: score0,
  };
}

/** Teacher and student prefixed into one graph with only the six feature outputs. */
function featureGraph(teacher: Graph, student: Graph): Graph {
  const nodes: GraphNode[] = [];
  const initializers = new Map<string, Tensor>();
  const outputs: Graph["outputs"] = [];
  for (const [prefix, g] of [
    ["t/", teacher],
    ["s/", student],
  ] as const) {
    const rename = (n: string): string => (n === "" ? "" : n === g.inputs[0]!.name ? "x" : `${prefix}${n}`);
    for (const [k, v] of g.initializers) initializers.set(`${prefix}${k}`, v);
    for (const n of g.nodes)
      nodes.push({ ...n, inputs: n.inputs.map(rename), outputs: n.outputs.map(rename) });
    for (const o of g.outputs) outputs.push({ ...o, name: rename(o.name) });
  }
  return {
    nodes,
    initializers,
    inputs: [{ name: "x", dims: ["N", 3, SIZE, SIZE] }],
    outputs,
    metadata: {},
    opset: Math.max(teacher.opset, student.opset),
  };
}

/** The floor: ONNX Runtime running only the two networks on already normalised float input. */
async function childFloor(spec: ChildSpec, frames: Uint8Array[]): Promise<Partial<ChildResult>> {
  const session = await createSession(
    encodeModel(featureGraph(await readGraph(spec.teacher!), await readGraph(spec.student!))),
  );
  const maxBatch = Math.max(...spec.batches);
  const packed = new Uint8Array(maxBatch * SIZE * SIZE * 3);
  await resizeInto(frames, maxBatch, packed, "sequential");
  const x = new Float32Array(maxBatch * 3 * SIZE * SIZE);
  for (let i = 0; i < maxBatch; i++) {
    rgbToChw(
      packed.subarray(i * SIZE * SIZE * 3, (i + 1) * SIZE * SIZE * 3),
      SIZE,
      SIZE,
      spec.mean!,
      spec.std!,
      x,
      i,
    );
  }
  // the six feature maps go into tensors allocated once per batch size: a floor should not pay for handing
  // megabytes of fresh output buffers to JavaScript on every run
  // output sizes from the float teacher (shape inference knows only the float ops; int8 has the same sizes)
  const teacher = await readGraph(spec.shapesFrom ?? spec.teacher!);
  const outputs = new Map<number, Record<string, ort.Tensor>>();
  const outputsFor = (batch: number): Record<string, ort.Tensor> => {
    let o = outputs.get(batch);
    if (!o) {
      const shapes = inferShapes(teacher, [batch, 3, SIZE, SIZE]);
      o = {};
      for (const prefix of ["t/", "s/"]) {
        for (const out of teacher.outputs) {
          const dims = shapes.get(out.name)!;
          o[`${prefix}${out.name}`] = new ort.Tensor("float32", new Float32Array(tensorSize(dims)), dims);
        }
      }
      outputs.set(batch, o);
    }
    return o;
  };
  const results = await timeBatches(spec, async (batch) => {
    await session.run(
      { x: new ort.Tensor("float32", x.subarray(0, batch * 3 * SIZE * SIZE), [batch, 3, SIZE, SIZE]) },
      outputsFor(batch),
    );
    return {};
  });
  await session.release();
  return {
    engine: `onnxruntime-node ${ort.env.versions.common} (features only, into reused output tensors)`,
    results,
  };
}

/** Peak compute of this machine in ORT (see measurePeak), in a process of its own. */
async function childMatmul(spec: ChildSpec): Promise<Partial<ChildResult>> {
  return {
    engine: `onnxruntime-node ${ort.env.versions.common}`,
    results: [],
    ...(await measurePeak({ warmup: spec.warmup, runs: spec.runs })),
  };
}

/** Sharp resize 900→256: one call per frame awaited in turn, or all frames of a batch at once. */
async function childPreprocess(spec: ChildSpec, frames: Uint8Array[]): Promise<Partial<ChildResult>> {
  const packed = new Uint8Array(Math.max(...spec.batches) * SIZE * SIZE * 3);
  const out: Record<string, BatchResult[]> = {};
  for (const mode of ["sequential", "parallel"] as const) {
    out[mode] = await timeBatches(spec, async (batch) => {
      await resizeInto(frames, batch, packed, mode);
      return {};
    });
  }
  return { results: [], sharp_concurrency: sharp.concurrency(), modes: out };
}

/** How one fast-path experiment differs from stpmd's own Scorer session. */
interface Variant {
  options?: ort.InferenceSession.SessionOptions;
  precision?: "fp32" | "int8";
  /** "dot": buildDotProductScoringGraph instead of buildScoringGraph. */
  graph?: "stpmd" | "dot";
  /** Reuse output tensors between runs (ORT writes into them). */
  preallocate?: boolean;
}

const VARIANTS: Record<string, Variant> = {
  "baseline (Scorer's session: level all, default threads)": {},
  "intraOpNumThreads 1": { options: { intraOpNumThreads: 1 } },
  "intraOpNumThreads 2": { options: { intraOpNumThreads: 2 } },
  "executionMode parallel, interOpNumThreads 2": {
    options: { executionMode: "parallel", interOpNumThreads: 2 },
  },
  "graphOptimizationLevel extended": { options: { graphOptimizationLevel: "extended" } },
  "enableCpuMemArena false": { options: { enableCpuMemArena: false } },
  "enableMemPattern false": { options: { enableMemPattern: false } },
  "no spinning (session.intra_op.allow_spinning 0)": {
    options: { extra: { session: { intra_op: { allow_spinning: "0" } } } },
  },
  "denormals as zero (session.set_denormal_as_zero 1)": {
    options: { extra: { session: { set_denormal_as_zero: "1" } } },
  },
  "pre-allocated, reused output tensors": { preallocate: true },
  "dot-product distance graph": { graph: "dot" },
  "int8 baseline": { precision: "int8" },
  "int8 + dot-product distance graph": { precision: "int8", graph: "dot" },
  "int8 + dot-product + pre-allocated outputs": { precision: "int8", graph: "dot", preallocate: true },
  "baseline again (drift check)": {},
};

/** One fast-path variant of the fused scoring session, `session.run` only, in a fresh process. */
async function childVariant(spec: ChildSpec, frames: Uint8Array[]): Promise<Partial<ChildResult>> {
  const v = VARIANTS[spec.label]!;
  const int8 = v.precision === "int8";
  const teacher = await readGraph(int8 ? spec.teacherInt8! : spec.teacher!);
  const student = await readGraph(int8 ? spec.studentInt8! : spec.student!);
  const opts = { height: SIZE, width: SIZE, mean: spec.mean!, std: spec.std! };
  const graph =
    v.graph === "dot"
      ? buildDotProductScoringGraph(teacher, student, opts)
      : buildScoringGraph(teacher, student, opts);
  const session = await ort.InferenceSession.create(encodeModel(graph), {
    executionProviders: ["cpu"],
    graphOptimizationLevel: "all",
    logSeverityLevel: 3,
    ...v.options,
  });
  const maxBatch = Math.max(...spec.batches);
  const packed = new Uint8Array(maxBatch * SIZE * SIZE * 3);
  await resizeInto(frames, maxBatch, packed, "sequential");
  const outputs = new Map<number, Record<string, ort.Tensor>>();
  const outputsFor = (batch: number): Record<string, ort.Tensor> => {
    let o = outputs.get(batch);
    if (!o) {
      o = {
        anomaly_map: new ort.Tensor("float32", new Float32Array(batch * SIZE * SIZE), [batch, SIZE, SIZE]),
        score: new ort.Tensor("float32", new Float32Array(batch), [batch]),
      };
      outputs.set(batch, o);
    }
    return o;
  };
  let score0 = Number.NaN;
  const results = await timeBatches(spec, async (batch) => {
    const feeds = {
      frames: new ort.Tensor("uint8", packed.subarray(0, batch * SIZE * SIZE * 3), [batch, SIZE, SIZE, 3]),
    };
    const out = v.preallocate ? await session.run(feeds, outputsFor(batch)) : await session.run(feeds);
    score0 = (out.score!.data as Float32Array)[0]!;
    return {};
  });
  await session.release();
  return { results, check_score0: score0 };
}

async function childMain(spec: ChildSpec): Promise<void> {
  const frames = spec.kind === "matmul" ? [] : await decodeFrames(spec.frames);
  const rssFrames = peakRssMib();
  let r: Partial<ChildResult>;
  if (spec.kind === "stpmd") r = await childStpmd(spec, frames);
  else if (spec.kind === "floor") r = await childFloor(spec, frames);
  else if (spec.kind === "matmul") r = await childMatmul(spec);
  else if (spec.kind === "preprocess") r = await childPreprocess(spec, frames);
  else r = await childVariant(spec, frames);
  const result = { label: spec.label, ...r, peak_rss_mib: peakRssMib(), rss_after_frames_mib: rssFrames };
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

// ---------------------------------------------------------------------------------------------------------------
// Parent side: prepare models, run the children, write the tables
// ---------------------------------------------------------------------------------------------------------------

interface PreparedBackbone {
  backbone: Backbone;
  teacherSource: string;
  studentSource: string;
  files: { fp32: [string, string]; int8: [string, string] };
  convWeights: [string, string];
  mean: number[];
  std: number[];
  threshold: number;
  thresholdSource: string;
  convFlopsPerFrame: number;
  int8ExecutedOps: Record<string, number>;
}

async function exists(p: string): Promise<boolean> {
  return stat(p).then(
    () => true,
    () => false,
  );
}

/** A stand-in for a trained student: the teacher's weights with 10 % multiplicative noise (same magnitudes). */
function perturbedStudent(teacher: Graph, seed: number): Graph {
  const rng = new Random(seed);
  const initializers = new Map(teacher.initializers);
  for (const n of teacher.nodes) {
    if (n.op !== "Conv") continue;
    for (const name of n.inputs.slice(1)) {
      const t = teacher.initializers.get(name);
      if (!t || !(t.data instanceof Float32Array)) continue;
      initializers.set(name, { dims: t.dims, data: t.data.map((v) => v * (1 + 0.1 * rng.normal())) });
    }
  }
  return { ...teacher, initializers };
}

async function prepare(
  backbone: Backbone,
  work: string,
  log: (s: string) => void,
): Promise<PreparedBackbone> {
  let teacher: Graph;
  let student: Graph;
  let teacherSource: string;
  let studentSource: string;
  let threshold = Number.NaN;
  let thresholdSource = "";
  if (backbone === "mobilenet_v2") {
    teacherSource = MNV2_ONNX;
    if (await exists(path.join(BOTTLE_BUNDLE, "manifest.json"))) {
      const bundle = await loadBundle(BOTTLE_BUNDLE);
      teacher = bundle.teacher;
      student = bundle.student;
      threshold = bundle.manifest.threshold;
      thresholdSource = `bundle ${BOTTLE_BUNDLE} (${bundle.manifest.model_version})`;
      studentSource = `trained bottle student (${bundle.manifest.model_version})`;
    } else {
      teacher = decodeModel(new Uint8Array(await readFile(MNV2_ONNX)));
      student = perturbedStudent(teacher, 1);
      studentSource = "teacher weights with 10% noise (no trained bundle found)";
    }
  } else {
    const file = path.join(work, "resnet18_random.onnx");
    log("exporting a random ResNet-18 pyramid teacher");
    await runExport(file);
    teacher = decodeModel(new Uint8Array(await readFile(file)));
    student = perturbedStudent(teacher, 2);
    teacherSource = "tools/export_teacher.py --arch resnet18 --random";
    studentSource = "teacher weights with 10% noise";
  }
  const { mean, std } = normalisationOf(teacher);
  const write = async (name: string, g: Graph): Promise<string> => {
    const f = path.join(work, `${backbone}_${name}.onnx`);
    await writeFile(f, encodeModel(g));
    return f;
  };
  log(`${backbone}: calibrating int8 on 16 bottle train/good images`);
  const calib = await calibrationInputs(
    await listImages(path.join(BOTTLE, "train/good")),
    16,
    SIZE,
    mean,
    std,
  );
  const qTeacher = quantizeGraph(teacher, await calibrate(teacher, calib.inputs, 16, SIZE));
  const qStudent = quantizeGraph(student, await calibrate(student, calib.inputs, 16, SIZE));
  const convWeights: [string, string] = [
    path.join(work, `${backbone}_teacher.safetensors`),
    path.join(work, `${backbone}_student.safetensors`),
  ];
  await writeSafetensors(convWeights[0], convTensors(teacher));
  await writeSafetensors(convWeights[1], convTensors(student));
  if (!Number.isFinite(threshold)) {
    // no bundle: the median image score of the benchmark frames, so about half the frames have regions
    const scorer = await Scorer.create(teacher, student, { height: SIZE, width: SIZE, mean, std });
    const frames = await decodeFrames((await benchFrameFiles()).slice(0, 8));
    const packed = new Uint8Array(frames.length * SIZE * SIZE * 3);
    await resizeInto(frames, frames.length, packed, "sequential");
    const { scores } = await scorer.score(packed, frames.length);
    await scorer.release();
    threshold = median([...scores]);
    thresholdSource = "median image score of the first 8 benchmark frames (fp32)";
  }
  return {
    backbone,
    teacherSource,
    studentSource,
    files: {
      fp32: [await write("teacher_fp32", teacher), await write("student_fp32", student)],
      int8: [await write("teacher_int8", qTeacher), await write("student_int8", qStudent)],
    },
    convWeights,
    mean,
    std,
    threshold,
    thresholdSource,
    convFlopsPerFrame: convFlops(teacher, SIZE) + convFlops(student, SIZE),
    int8ExecutedOps: await executedOpCounts(encodeModel(qTeacher)),
  };
}

async function runExport(out: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    execFile(
      "/usr/bin/python3",
      [path.join(REPO, "tools/export_teacher.py"), "--arch", "resnet18", "--random", "--out", out],
      (err) => (err ? reject(err) : resolve()),
    );
  });
}

async function benchFrameFiles(): Promise<string[]> {
  return (await benchFrames(BOTTLE, 32)).map((f) => f.file);
}

function childArgs(spec: ChildSpec): string[] {
  return [fileURLToPath(import.meta.url), "--child", JSON.stringify(spec)];
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      quick: { type: "boolean", default: false },
      child: { type: "string" },
      backbones: { type: "string", default: "mobilenet_v2,resnet18" },
      "skip-torch": { type: "boolean", default: false },
    },
  });
  if (values.child) {
    await childMain(JSON.parse(values.child) as ChildSpec);
    return;
  }
  const quick = values.quick;
  const log = (s: string): void => {
    process.stderr.write(`[bench] ${s}\n`);
  };
  const batches = quick ? [1, 8] : [1, 8, 32];
  const runs = quick ? 2 : 5;
  // ORT's first two runs at a new batch size can agree with each other and still be cold (the floor at batch 8:
  // 124, 124, then 80 ms), so even --quick warms up three times before the settling rule takes over
  const warmup = 3;
  const rounds = quick ? 1 : 2;
  const frames = await benchFrameFiles();
  const work = await mkdtemp(path.join(os.tmpdir(), "stpmd-bench-"));
  const stateBefore = await machineState();
  log(`machine: ${stateBefore.uptime}`);
  const common = { frames, batches, runs, warmup };

  const peakSpec = { kind: "matmul" as const, label: "peak", ...common, runs: 10, warmup: 2 };
  const peakBefore = (await runJsonChild(process.execPath, childArgs(peakSpec))) as ChildResult;
  const matmul = peakBefore;
  log(
    `peak fp32 MatMul ${fmt(matmul.fp32_peak_gflops as number)} GFLOP/s, int8 ${fmt(matmul.int8_peak_gops as number)} GOP/s`,
  );
  const preprocess = (await runJsonChild(
    process.execPath,
    childArgs({ kind: "preprocess", label: "sharp resize 900→256", ...common }),
  )) as ChildResult;
  const resizeMode = fasterResize(preprocess);
  log(`resize: ${resizeMode} is faster`);

  const backbones: Record<string, unknown>[] = [];
  for (const backbone of values.backbones.split(",") as Backbone[]) {
    const p = await prepare(backbone, work, log);
    const base = { mean: p.mean, std: p.std, threshold: p.threshold, resize: resizeMode };
    const torchRun = (layout: string) => (): Promise<unknown> =>
      runJsonChild(VENV_PYTHON, [
        path.join(REPO, "benchmarks/torch_infer.py"),
        "--arch",
        backbone,
        "--teacher-convs",
        p.convWeights[0],
        "--student-convs",
        p.convWeights[1],
        "--layout",
        layout,
        "--batches",
        batches.join(","),
        "--runs",
        String(runs),
        "--warmup",
        String(warmup),
        "--threads",
        "2",
        "--frames",
        ...frames,
      ]);
    const nodeRun = (spec: Omit<ChildSpec, keyof typeof common>) => (): Promise<unknown> =>
      runJsonChild(process.execPath, childArgs({ ...spec, ...common }));
    /** stpmd's path or the bare floor, on the fp32 or int8 graphs; the label names both. */
    const onnxContender = (
      kind: "stpmd" | "floor",
      precision: "fp32" | "int8",
    ): [string, () => Promise<unknown>] => {
      const label = `${kind === "stpmd" ? "stpmd" : "ORT floor"} ${precision}`;
      const [teacher, student] = p.files[precision];
      // the floor sizes its output tensors by shape inference, which knows only the float ops
      const shapes = kind === "floor" && precision === "int8" ? { shapesFrom: p.files.fp32[0] } : {};
      return [label, nodeRun({ kind, label, teacher, student, ...shapes, ...base })];
    };
    const plan: [string, () => Promise<unknown>][] = [
      onnxContender("stpmd", "fp32"),
      onnxContender("stpmd", "int8"),
      onnxContender("floor", "fp32"),
      onnxContender("floor", "int8"),
      ...(values["skip-torch"]
        ? []
        : ([
            ["PyTorch eager nchw", torchRun("nchw")],
            ["PyTorch eager channels_last", torchRun("channels_last")],
          ] as [string, () => Promise<unknown>][])),
    ];
    // the whole line-up `rounds` times in turn, runs pooled: drift of a shared machine hits every contender alike
    const contenderRounds: ChildResult[][] = [];
    for (let round = 0; round < rounds; round++) {
      const results: ChildResult[] = [];
      for (const [label, run] of plan) {
        log(`${backbone}: ${label} (round ${round + 1}/${rounds})`);
        results.push({ ...((await run()) as ChildResult), label });
      }
      contenderRounds.push(results);
    }
    const contenders = pooled(contenderRounds);
    const experiments: ChildResult[] = [];
    if (backbone === "mobilenet_v2") {
      // every variant twice, in two interleaved rounds, so that drift of the machine hits them all alike
      const variantRounds: ChildResult[][] = [];
      for (let round = 0; round < rounds; round++) {
        const results: ChildResult[] = [];
        for (const label of Object.keys(VARIANTS)) {
          log(`${backbone}: variant ${label} (round ${round + 1})`);
          results.push(
            (await runJsonChild(
              process.execPath,
              childArgs({
                kind: "variant",
                label,
                teacher: p.files.fp32[0],
                student: p.files.fp32[1],
                teacherInt8: p.files.int8[0],
                studentInt8: p.files.int8[1],
                ...base,
                ...common,
                batches: [1, 8],
                runs: quick ? 2 : 7,
              }),
            )) as ChildResult,
          );
        }
        variantRounds.push(results);
      }
      experiments.push(...pooled(variantRounds));
    }
    backbones.push({ ...p, contenders, experiments });
  }
  await rm(work, { recursive: true, force: true });
  // the peak once more at the end: the machine's speed drifts, the better measurement of the two counts
  const peakAfter = (await runJsonChild(process.execPath, childArgs(peakSpec))) as ChildResult;
  matmul.fp32_peak_gflops = Math.max(matmul.fp32_peak_gflops as number, peakAfter.fp32_peak_gflops as number);
  matmul.int8_peak_gops = Math.max(matmul.int8_peak_gops as number, peakAfter.int8_peak_gops as number);
  matmul.kernels_after = peakAfter.kernels;
  const stateAfter = await machineState();
  const report = {
    benchmark: "stpmd end-to-end inference",
    quick,
    input: `${frames.length} bottle test PNGs (${CAMERA}×${CAMERA}), decoded once; model input ${SIZE}×${SIZE}`,
    method: `median of ${rounds}×${runs} runs (${rounds} rounds of the whole line-up, each contender in its own process, at least ${warmup} warm-up runs per batch size, more until two agree within ${WARM_TOLERANCE * 100} %)`,
    machine: machineInfo(),
    load_before: stateBefore,
    load_after: stateAfter,
    onnxruntime: ort.env.versions.common,
    peak: matmul,
    preprocess,
    resize_mode: resizeMode,
    backbones,
    invalid: floorViolations(backbones),
  };
  const written = await writeResults(quick ? "inference-quick" : "inference", report, markdown(report));
  log(`wrote ${written} and .md`);
  if (report.invalid.length) {
    for (const why of report.invalid) log(`INVALID: ${why}`);
    process.exitCode = 1;
  }
}

/**
 * Why this run is not a measurement: the ORT floor runs only the two networks on input already resized and
 * normalised, so it can never be slower than stpmd's whole path on the same graphs. Where it is, something other
 * than the code was measured (cold runs, a busy machine), and no ratio against it is printed.
 */
function floorViolations(backbones: readonly Record<string, unknown>[]): string[] {
  const found: string[] = [];
  for (const b of backbones) {
    const contenders = b.contenders as ChildResult[];
    for (const precision of ["fp32", "int8"]) {
      const floor = contenders.find((c) => c.label === `ORT floor ${precision}`);
      const stpmd = contenders.find((c) => c.label === `stpmd ${precision}`);
      for (const r of floor?.results ?? []) {
        const own = stpmd?.results.find((x) => x.batch === r.batch);
        if (own && r.frames_per_s < own.frames_per_s) {
          found.push(
            `${b.backbone} batch ${r.batch}: ORT floor ${precision} ${fmt(r.frames_per_s, 1)} frames/s < stpmd ${precision} ${fmt(own.frames_per_s, 1)}`,
          );
        }
      }
    }
  }
  return found;
}

/** Per variant, the runs of all rounds together, with medians recomputed over them. */
function pooled(rounds: ChildResult[][]): ChildResult[] {
  return rounds[0]!.map((first, i) => ({
    ...first,
    rounds: rounds.length,
    peak_rss_mib: Math.max(...rounds.map((round) => round[i]!.peak_rss_mib)),
    results: first.results.map((r, j) => {
      const runs = rounds.flatMap((round) => round[i]!.results[j]!.runs_ms);
      const med = median(runs);
      return {
        batch: r.batch,
        warmup_ms: rounds.flatMap((round) => round[i]!.results[j]!.warmup_ms ?? []),
        runs_ms: runs,
        round_medians_ms: rounds.map((round) => round[i]!.results[j]!.median_ms),
        ...(r.stages_ms
          ? {
              stages_ms: Object.fromEntries(
                Object.keys(r.stages_ms).map((k) => [
                  k,
                  median(rounds.map((round) => round[i]!.results[j]!.stages_ms![k]!)),
                ]),
              ),
            }
          : {}),
        ...(r.one_at_a_time_ms !== undefined
          ? { one_at_a_time_ms: median(rounds.map((round) => round[i]!.results[j]!.one_at_a_time_ms!)) }
          : {}),
        median_ms: med,
        ms_per_frame: med / r.batch,
        frames_per_s: (1000 * r.batch) / med,
      };
    }),
  }));
}

function fasterResize(pre: ChildResult): "sequential" | "parallel" {
  const modes = pre.modes as Record<string, BatchResult[]>;
  const total = (m: string): number => modes[m]!.reduce((a, r) => a + r.ms_per_frame, 0);
  return total("parallel") < total("sequential") ? "parallel" : "sequential";
}

function markdown(report: Record<string, unknown>): string {
  const peak = report.peak as Record<string, number>;
  const lines: string[] = [
    "# stpmd inference benchmark",
    "",
    `${report.input}. ${report.method}. ONNX Runtime ${report.onnxruntime}.`,
    "",
    `Machine: ${JSON.stringify(report.machine)}`,
    "",
    `Load before: \`${(report.load_before as Record<string, unknown>).uptime}\` (retrain processes running: ${(report.load_before as Record<string, unknown>).retrain_processes_running}); ` +
      `after: \`${(report.load_after as Record<string, unknown>).uptime}\`.`,
    "",
    `Peak (ORT; best of MatMul n = 1024/2048, a large 3×3 Conv, and MatMulInteger n = 1024/2048, at the start and the end): fp32 ${fmt(peak.fp32_peak_gflops)} GFLOP/s, uint8×int8 ${fmt(peak.int8_peak_gops)} GOP/s. The "% of peak" column divides conv FLOPs × frames/s by these.`,
    "",
  ];
  const invalid = report.invalid as string[];
  if (invalid.length) {
    lines.push(
      "**INVALID RUN: the bare ORT floor was slower than the stpmd path it bounds, so no ratio against it is shown** " +
        `(${invalid.join("; ")}). Rerun on an idle machine.`,
      "",
    );
  }
  const pre = report.preprocess as Record<string, unknown>;
  const modes = pre.modes as Record<string, BatchResult[]>;
  lines.push(
    "Resize 900→256 with sharp (ms per frame): " +
      Object.entries(modes)
        .map(([m, rs]) => `${m} ${rs.map((r) => `b${r.batch} ${fmt(r.ms_per_frame, 2)}`).join(", ")}`)
        .join("; ") +
      ` → stpmd contenders use **${report.resize_mode}**.`,
    "",
  );
  for (const b of report.backbones as Record<string, unknown>[]) {
    const contenders = b.contenders as ChildResult[];
    const batches = contenders[0]!.results.map((r) => r.batch);
    const fps = (c: ChildResult, batch: number): number =>
      c.results.find((r) => r.batch === batch)?.frames_per_s ?? Number.NaN;
    const torch = contenders.filter((c) => c.label.startsWith("PyTorch"));
    const floor = contenders.find((c) => c.label === "ORT floor fp32");
    const bestTorch = (batch: number): number => Math.max(...torch.map((c) => fps(c, batch)));
    const flops = b.convFlopsPerFrame as number;
    lines.push(
      `## ${b.backbone}`,
      "",
      `Teacher: ${b.teacherSource}; student: ${b.studentSource}. Conv FLOPs teacher+student: ${fmt(flops / 1e9, 2)} GFLOP/frame. ` +
        `Region threshold: ${(b.threshold as number).toPrecision(4)} (${b.thresholdSource}). int8 teacher as ORT runs it: \`${JSON.stringify(b.int8ExecutedOps)}\`.`,
      "",
      `| contender | b1 latency ms | ${batches.map((n) => `b${n} frames/s`).join(" | ")} | peak RSS MiB | % of peak (best batch) | ${batches
        .map((n) => `b${n} vs PyTorch best`)
        .join(" | ")} | ${batches.map((n) => `b${n} vs ORT floor`).join(" | ")} |`,
      `|---|---:|${batches.map(() => "---:").join("|")}|---:|---:|${batches.map(() => "---:").join("|")}|${batches.map(() => "---:").join("|")}|`,
    );
    for (const c of contenders) {
      const b1 = c.results.find((r) => r.batch === 1);
      const bestFps = Math.max(...batches.map((n) => fps(c, n)));
      const isInt8 = c.label.includes("int8");
      const peakRate = isInt8 ? peak.int8_peak_gops : peak.fp32_peak_gflops;
      const fraction = ((flops * bestFps) / 1e9 / peakRate) * 100;
      lines.push(
        `| ${c.label} | ${fmt(b1?.one_at_a_time_ms ?? b1?.median_ms, 1)} | ${batches.map((n) => fmt(fps(c, n), 1)).join(" | ")} | ${fmt(c.peak_rss_mib, 0)} | ${fmt(fraction, 1)}%${isInt8 ? " (of int8)" : ""} | ${batches
          .map((n) => (torch.length ? `${fmt(fps(c, n) / bestTorch(n), 2)}×` : "–"))
          .join(
            " | ",
          )} | ${batches.map((n) => (floor && !invalid.length ? `${fmt(fps(c, n) / fps(floor, n), 2)}×` : "–")).join(" | ")} |`,
      );
    }
    lines.push(
      "",
      "stpmd frames/s are streaming (the next batch's resize overlaps this batch's inference, as in the daemon); " +
        "b1 latency and the stage medians (ms per batch) are from one batch at a time:",
      "",
    );
    lines.push(
      "| contender | batch | resize | score (ORT) | regions | one at a time | streaming |",
      "|---|---:|---:|---:|---:|---:|---:|",
    );
    for (const c of contenders.filter((x) => x.label.startsWith("stpmd"))) {
      for (const r of c.results) {
        const s = r.stages_ms ?? {};
        lines.push(
          `| ${c.label} | ${r.batch} | ${fmt(s.resize, 1)} | ${fmt(s.score, 1)} | ${fmt(s.regions, 2)} | ${fmt(r.one_at_a_time_ms, 1)} | ${fmt(r.median_ms, 1)} |`,
        );
      }
    }
    const check = contenders
      .filter((c) => c.check_score0 !== undefined)
      .map((c) => `${c.label} ${fmt(c.check_score0, 5)}`)
      .join(", ");
    lines.push(
      "",
      `Score of frame 0 (sanity check that the contenders compute the same thing): ${check}.`,
      "",
    );
    const exp = b.experiments as ChildResult[];
    if (exp.length) {
      const base = exp[0]!.results;
      lines.push(
        "### Fast-path experiments (fused scoring graph, `session.run` only, one process each, median of the runs)",
        "",
        "| variant | b1 ms | b8 ms/frame | b1 vs baseline | b8 vs baseline | score of frame 0 |",
        "|---|---:|---:|---:|---:|---:|",
      );
      for (const e of exp) {
        const r1 = e.results.find((r) => r.batch === 1);
        const r8 = e.results.find((r) => r.batch === 8);
        const speedup = (r: BatchResult | undefined, batch: number): string =>
          r ? `${fmt(base.find((x) => x.batch === batch)!.median_ms / r.median_ms, 2)}×` : "–";
        lines.push(
          `| ${e.label} | ${fmt(r1?.median_ms, 2)} | ${fmt(r8?.ms_per_frame, 2)} | ${speedup(r1, 1)} | ${speedup(r8, 8)} | ${fmt(e.check_score0, 5)} |`,
        );
      }
      lines.push("");
    }
  }
  return `${lines.join("\n")}\n`;
}

await main();
