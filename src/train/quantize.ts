import { readFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import onnxProto from "onnx-proto";
import {
  type Bundle,
  bundleGeometry,
  bundlePartScore,
  loadBundle,
  type Manifest,
  recoverBundle,
  scoreStats,
  scoresByAggregation,
  scoringOptions,
  writeBundle,
} from "../bundle/bundle.js";
import { errorMessage, StpmdError } from "../core/errors.js";
import type { Logger } from "../core/log.js";
import { listImages, loadRgb, rgbToChw } from "../data/images.js";
import {
  encodeModel,
  floatTensor,
  type Graph,
  type GraphNode,
  int64Tensor,
  type Tensor,
  type ValueInfo,
} from "../onnx/onnx-graph.js";
import { createSession, floatInput, ort } from "../onnx/ort.js";
import { inferShapes } from "../onnx/shapes.js";
import { fedSize, type Geometry, resizeGeometry, type Size } from "../stpm/geometry.js";
import { modelInputs, scoreImages } from "../stpm/image-scoring.js";
import { type PartScore, partScore } from "../stpm/part-score.js";
import { Scorer } from "../stpm/scorer.js";
import { splitTrainVal } from "../stpm/split.js";

/**
 * Static int8 quantization of a teacher or student graph in the QDQ format ONNX Runtime fuses into integer
 * kernels (QLinearConv, QLinearAdd): every activation tensor gets a QuantizeLinear → DequantizeLinear pair with a
 * range calibrated on normal images (uint8, asymmetric, per tensor), every Conv reads its weights through a
 * DequantizeLinear of int8 values (symmetric, per output channel) and its bias through one of int32 values
 * (scale = input scale · weight scale, as QLinearConv requires).
 *
 * stpmd's graph IR only stores float32 and int64 tensors, so the integer constants are written as float32/int64
 * initializers followed by a Cast. ONNX Runtime's constant folding turns each Cast into a typed initializer before
 * the QDQ fusions run (it deliberately leaves DequantizeLinear alone), so the session sees the standard pattern.
 */

/** ONNX TensorProto data types used by the Casts. */
const ONNX_UINT8 = 2;
const ONNX_INT8 = 3;
const ONNX_INT32 = 6;

export interface TensorRange {
  min: number;
  max: number;
}

export interface QuantParams {
  scale: number;
  zeroPoint: number;
}

export type CalibrationMethod = "minmax" | "percentile";

export interface CalibrationOptions {
  method: CalibrationMethod;
  /** For "percentile": the upper percentile kept (the lower one is 100 − p). */
  percentile: number;
  /** Images per calibration run. */
  batchSize: number;
}

export const CALIBRATION_DEFAULTS: CalibrationOptions = { method: "minmax", percentile: 99.99, batchSize: 4 };

export interface QuantizeGraphOptions {
  /**
   * "quantized": the feature outputs are the dequantized int8 values, so the ops producing them fuse into int8
   * kernels too. "float": they stay the float results of those ops (a little more exact, a little slower).
   */
  outputs: "quantized" | "float";
}

const FLOAT32_EPSILON = 2 ** -23;

/**
 * uint8 asymmetric parameters for a range. The range is widened to include 0 so that zero (ReLU's floor, zero
 * padding) is exact. `clip` is the [min, max] of a Clip/Relu the tensor comes out of: the scale is nudged down
 * so the quantized range stays inside it, which lets ONNX Runtime drop the Clip (ClipQuantFusion).
 */
export function uint8Params(range: TensorRange, clip?: TensorRange): QuantParams {
  const lo = Math.min(0, range.min);
  const hi = Math.max(0, range.max);
  if (!(hi > lo)) return { scale: 1, zeroPoint: 0 };
  let scale = Math.fround((hi - lo) / 255);
  const zeroPoint = Math.min(255, Math.max(0, Math.round(-lo / scale)));
  if (clip) {
    while (Math.fround(scale * (255 - zeroPoint)) - clip.max > FLOAT32_EPSILON) scale = nextDown(scale);
  }
  return { scale, zeroPoint };
}

function nextDown(x: number): number {
  const f = new Float32Array([x]);
  const bits = new Int32Array(f.buffer);
  bits[0]! -= 1;
  return f[0]!;
}

/** Symmetric int8 quantization per output channel (axis 0): values in [−127, 127], scale = max|w| / 127. */
export function quantizeWeightsPerChannel(
  w: Float32Array,
  outChannels: number,
): { values: Float32Array; scales: Float32Array } {
  const per = w.length / outChannels;
  const values = new Float32Array(w.length);
  const scales = new Float32Array(outChannels);
  for (let c = 0; c < outChannels; c++) {
    let maxAbs = 0;
    for (let j = 0; j < per; j++) maxAbs = Math.max(maxAbs, Math.abs(w[c * per + j]!));
    // an all-zero channel still needs a positive scale; any value dequantizes its zeros exactly
    const scale = maxAbs > 0 ? Math.fround(maxAbs / 127) : 1;
    scales[c] = scale;
    for (let j = 0; j < per; j++) {
      values[c * per + j] = Math.min(127, Math.max(-127, Math.round(w[c * per + j]! / scale)));
    }
  }
  return { values, scales };
}

function consumersOf(graph: Graph): Map<string, GraphNode[]> {
  const map = new Map<string, GraphNode[]>();
  for (const n of graph.nodes) {
    for (const i of n.inputs) {
      if (i === "") continue;
      const list = map.get(i) ?? [];
      list.push(n);
      map.set(i, list);
    }
  }
  return map;
}

/**
 * The activation tensors that get a Q→DQ pair: the graph input and every node output that is read by a node or
 * is a graph output — except a Conv output whose only reader is a Clip/Relu, because Conv → Clip → Q fuses into
 * one QLinearConv whereas a Q between them would keep the activation as a separate op.
 */
export function quantizationPoints(graph: Graph): string[] {
  const consumers = consumersOf(graph);
  const graphOutputs = new Set(graph.outputs.map((o) => o.name));
  const points = graph.inputs.map((i) => i.name);
  for (const node of graph.nodes) {
    for (const out of node.outputs) {
      const readers = consumers.get(out) ?? [];
      if (readers.length === 0 && !graphOutputs.has(out)) continue;
      const fusableActivation =
        node.op === "Conv" &&
        readers.length === 1 &&
        !graphOutputs.has(out) &&
        (readers[0]!.op === "Clip" || readers[0]!.op === "Relu");
      if (!fusableActivation) points.push(out);
    }
  }
  return points;
}

/** Bounds of the Clip or Relu producing each tensor, if any, for {@link uint8Params}. */
function activationBounds(graph: Graph): Map<string, TensorRange> {
  const bounds = new Map<string, TensorRange>();
  for (const n of graph.nodes) {
    if (n.op === "Relu") bounds.set(n.outputs[0]!, { min: 0, max: Number.POSITIVE_INFINITY });
    if (n.op === "Clip") {
      const read = (idx: number, fallback: number): number => {
        const t = n.inputs[idx] ? graph.initializers.get(n.inputs[idx]!) : undefined;
        return t ? Number(t.data[0]) : fallback;
      };
      bounds.set(n.outputs[0]!, {
        min: read(1, Number.NEGATIVE_INFINITY),
        max: read(2, Number.POSITIVE_INFINITY),
      });
    }
  }
  return bounds;
}

/** The graph with every quantization point added as an output, for calibration runs. */
export function calibrationGraph(graph: Graph, points: string[], probeSize: number): Graph {
  const shapes = inferShapes(graph, [1, 3, probeSize, probeSize]);
  const existing = new Set(graph.outputs.map((o) => o.name));
  const extra: ValueInfo[] = points
    .filter((p) => !existing.has(p))
    .map((p) => ({ name: p, dims: (shapes.get(p) ?? [0, 0, 0, 0]).map((_, i) => `d${i}`) }));
  return { ...graph, outputs: [...graph.outputs, ...extra] };
}

/** Tracks one tensor's value range over calibration batches; keeps a strided sample for percentiles. */
class RangeObserver {
  min = Number.POSITIVE_INFINITY;
  max = Number.NEGATIVE_INFINITY;
  private readonly samples: Float32Array[] = [];

  constructor(private readonly keepSamples: boolean) {}

  observe(data: Float32Array): void {
    let lo = this.min;
    let hi = this.max;
    for (let i = 0; i < data.length; i++) {
      const v = data[i]!;
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    this.min = lo;
    this.max = hi;
    if (this.keepSamples) {
      // 64 Ki values per batch and tensor keep memory bounded; the extremes are tracked exactly above
      const stride = Math.max(1, Math.floor(data.length / 65536));
      const sample = new Float32Array(Math.ceil(data.length / stride));
      for (let i = 0, j = 0; i < data.length; i += stride, j++) sample[j] = data[i]!;
      this.samples.push(sample);
    }
  }

  range(opts: CalibrationOptions): TensorRange {
    if (opts.method === "minmax" || this.samples.length === 0) return { min: this.min, max: this.max };
    const total = this.samples.reduce((a, s) => a + s.length, 0);
    const all = new Float32Array(total);
    let at = 0;
    for (const s of this.samples) {
      all.set(s, at);
      at += s.length;
    }
    all.sort();
    const pick = (p: number): number =>
      all[Math.min(total - 1, Math.max(0, Math.round((p / 100) * (total - 1))))]!;
    return { min: pick(100 - opts.percentile), max: pick(opts.percentile) };
  }
}

/**
 * Runs the float graph over calibration inputs (normalised NCHW, `count` images of size×size) and returns the
 * range of every quantization point.
 */
export async function calibrate(
  graph: Graph,
  inputs: Float32Array,
  count: number,
  size: number | Size,
  opts: CalibrationOptions = CALIBRATION_DEFAULTS,
): Promise<Map<string, TensorRange>> {
  const { width, height } = typeof size === "number" ? { width: size, height: size } : size;
  const points = quantizationPoints(graph);
  const session = await createSession(encodeModel(calibrationGraph(graph, points, height)));
  const observers = new Map(points.map((p) => [p, new RangeObserver(opts.method === "percentile")]));
  const inputName = graph.inputs[0]!.name;
  const chw = 3 * width * height;
  try {
    for (let start = 0; start < count; start += opts.batchSize) {
      const n = Math.min(opts.batchSize, count - start);
      const x = floatInput(inputs.subarray(start * chw, (start + n) * chw), [n, 3, height, width]);
      observers.get(inputName)!.observe(x.data as Float32Array);
      const out = await session.run({ [inputName]: x });
      for (const p of points) {
        if (p !== inputName) observers.get(p)!.observe(out[p]!.data as Float32Array);
      }
    }
  } finally {
    await session.release();
  }
  return new Map(points.map((p) => [p, observers.get(p)!.range(opts)]));
}

/** Adds nodes and constants under a name prefix without clashing with the graph's own names. */
class QdqWriter {
  readonly nodes: GraphNode[] = [];
  readonly initializers = new Map<string, Tensor>();

  constant(name: string, t: Tensor): string {
    this.initializers.set(name, t);
    return name;
  }

  /** A typed integer constant: stored as float32/int64 and cast (folded away by ONNX Runtime at load). */
  typed(name: string, stored: Tensor, to: number): string {
    const raw = this.constant(`${name}/stored`, stored);
    this.nodes.push({ op: "Cast", inputs: [raw], outputs: [name], attrs: { to } });
    return name;
  }
}

/**
 * Rewrites a float graph into QDQ form with the given activation ranges (from {@link calibrate}). The result
 * has the same inputs and outputs and runs in any ONNX Runtime; its op sequence depends only on the graph's
 * topology, so a teacher and its student quantize to the same architecture.
 */
export function quantizeGraph(
  graph: Graph,
  ranges: Map<string, TensorRange>,
  opts: QuantizeGraphOptions = { outputs: "quantized" },
): Graph {
  const points = quantizationPoints(graph);
  const missing = points.filter((p) => !ranges.has(p));
  if (missing.length > 0) throw new Error(`no calibrated range for tensor(s) ${missing.join(", ")}`);
  const bounds = activationBounds(graph);
  const graphOutputs = new Set(graph.outputs.map((o) => o.name));
  const q = new QdqWriter();
  const params = new Map<string, QuantParams & { scaleName: string; zpName: string }>();
  for (const p of points) {
    const qp = uint8Params(ranges.get(p)!, bounds.get(p));
    params.set(p, {
      ...qp,
      scaleName: q.constant(`${p}/q_scale`, floatTensor([], [qp.scale])),
      // a scalar like the scale: per-tensor quantization
      zpName: q.typed(
        `${p}/q_zero_point`,
        { dims: [], data: BigInt64Array.of(BigInt(qp.zeroPoint)) },
        ONNX_UINT8,
      ),
    });
  }

  const floatName = (p: string): string =>
    opts.outputs === "quantized" && graphOutputs.has(p) ? `${p}/float` : p;
  const quantizedName = (p: string): string => `${p}/uint8`;
  let dqCount = 0;
  const dequantized = (p: string): string => {
    const qp = params.get(p)!;
    const out = `${p}/dq${dqCount++}`;
    // one DequantizeLinear per reader, the layout ONNX Runtime's node-unit fusions expect
    q.nodes.push({
      op: "DequantizeLinear",
      inputs: [quantizedName(p), qp.scaleName, qp.zpName],
      outputs: [out],
      attrs: {},
    });
    return out;
  };
  const quantize = (p: string): void => {
    const qp = params.get(p)!;
    q.nodes.push({
      op: "QuantizeLinear",
      inputs: [floatName(p), qp.scaleName, qp.zpName],
      outputs: [quantizedName(p)],
      attrs: {},
    });
    if (opts.outputs === "quantized" && graphOutputs.has(p)) {
      q.nodes.push({
        op: "DequantizeLinear",
        inputs: [quantizedName(p), qp.scaleName, qp.zpName],
        outputs: [p],
        attrs: {},
      });
    }
  };

  const isPoint = new Set(points);
  for (const input of graph.inputs) quantize(input.name);
  const initializers = new Map(graph.initializers);
  for (const node of graph.nodes) {
    const inputs = node.inputs.map((i) => (isPoint.has(i) ? dequantized(i) : i));
    if (node.op === "Conv") quantizeConvConstants(node, inputs, initializers, params, q);
    q.nodes.push({ ...node, inputs, outputs: node.outputs.map((o) => (isPoint.has(o) ? floatName(o) : o)) });
    for (const o of node.outputs) if (isPoint.has(o)) quantize(o);
  }
  for (const [name, t] of q.initializers) initializers.set(name, t);
  // drop float weights and biases that only the replaced Conv inputs used
  const used = new Set(q.nodes.flatMap((n) => n.inputs));
  for (const name of [...initializers.keys()]) if (!used.has(name)) initializers.delete(name);
  return {
    ...graph,
    nodes: q.nodes,
    initializers,
    opset: Math.max(graph.opset, 13),
    metadata: {
      ...graph.metadata,
      precision: "int8",
      quantization: "qdq u8 activations, s8 per-channel weights",
    },
  };
}

/** Replaces a Conv's float weight and bias inputs (in `inputs`) by dequantized int8 / int32 constants. */
function quantizeConvConstants(
  node: GraphNode,
  inputs: string[],
  initializers: Map<string, Tensor>,
  params: Map<string, QuantParams>,
  q: QdqWriter,
): void {
  const wName = node.inputs[1]!;
  const w = initializers.get(wName);
  if (!w || !(w.data instanceof Float32Array)) {
    throw new Error(
      `Conv ${node.outputs[0]}: weights ${wName} must be a float32 initializer to be quantized`,
    );
  }
  const cout = w.dims[0]!;
  const { values, scales } = quantizeWeightsPerChannel(w.data, cout);
  const wInt8 = q.typed(`${wName}/int8`, { dims: w.dims, data: values }, ONNX_INT8);
  const wScale = q.constant(`${wName}/w_scale`, floatTensor([cout], scales));
  const wDq = `${wName}/dq`;
  q.nodes.push({ op: "DequantizeLinear", inputs: [wInt8, wScale], outputs: [wDq], attrs: { axis: 0 } });
  inputs[1] = wDq;

  const bName = node.inputs[2];
  if (!bName) return;
  const b = initializers.get(bName);
  const xParams = params.get(node.inputs[0]!);
  if (!b || !(b.data instanceof Float32Array) || !xParams) {
    throw new Error(
      `Conv ${node.outputs[0]}: bias ${bName} must be a float32 initializer after a quantized input`,
    );
  }
  const bScales = new Float32Array(cout);
  const bValues: number[] = [];
  for (let c = 0; c < cout; c++) {
    bScales[c] = Math.fround(Math.fround(xParams.scale) * scales[c]!);
    bValues.push(Math.min(2 ** 31 - 1, Math.max(-(2 ** 31), Math.round(b.data[c]! / bScales[c]!))));
  }
  const bInt32 = q.typed(`${bName}/int32`, int64Tensor(bValues), ONNX_INT32);
  const bScale = q.constant(`${bName}/b_scale`, floatTensor([cout], bScales));
  const bDq = `${bName}/dq`;
  q.nodes.push({ op: "DequantizeLinear", inputs: [bInt32, bScale], outputs: [bDq], attrs: { axis: 0 } });
  inputs[2] = bDq;
}

/**
 * Op types (with their domain) of the graph ONNX Runtime actually executes after its optimisations, e.g.
 * `{ "com.microsoft:QLinearConv": 39 }` — the way to check that the QDQ pairs were fused into int8 kernels.
 */
export async function executedOpCounts(model: Uint8Array): Promise<Record<string, number>> {
  const file = path.join(os.tmpdir(), `stpmd-optimized-${process.pid}-${Date.now()}.onnx`);
  try {
    const session = await ort.InferenceSession.create(model, {
      graphOptimizationLevel: "all",
      optimizedModelFilePath: file,
      logSeverityLevel: 3,
    });
    await session.release();
    const optimized = onnxProto.onnx.ModelProto.decode(new Uint8Array(await readFile(file)));
    const counts: Record<string, number> = {};
    for (const n of optimized.graph?.node ?? []) {
      const key = n.domain ? `${n.domain}:${n.opType}` : (n.opType ?? "?");
      counts[key] = (counts[key] ?? 0) + 1;
    }
    return counts;
  } finally {
    await rm(file, { force: true });
  }
}

/**
 * Loads `count` images spread evenly over `files` as the model is fed them — at size×size, or under a bundle's
 * geometry (ROI, resize or tiles) — as normalised NCHW float32. `count` in the result is the number of model
 * inputs (tiles of all images in tile mode).
 */
export async function calibrationInputs(
  files: string[],
  count: number,
  size: number | Geometry,
  mean: readonly number[],
  std: readonly number[],
): Promise<{ inputs: Float32Array; files: string[]; count: number }> {
  const geometry = typeof size === "number" ? resizeGeometry({ width: size, height: size }) : size;
  const n = Math.min(count, files.length);
  const picked = Array.from({ length: n }, (_, i) => files[Math.floor((i * files.length) / n)]!);
  const { capture } = geometry;
  const input = fedSize(geometry);
  const roi = geometry.roi ?? undefined;
  const images = await Promise.all(
    picked.map(async (f) => (await loadRgb(f, capture.width, capture.height, roi)).rgb),
  );
  const fed = modelInputs(images, geometry);
  const inputs = new Float32Array(fed.length * 3 * input.width * input.height);
  fed.forEach((rgb, i) => {
    rgbToChw(rgb, input.width, input.height, mean, std, inputs, i);
  });
  return { inputs, files: picked, count: fed.length };
}

export interface QuantizeBundleOptions {
  modelDir: string;
  framesDir: string;
  outDir: string;
  calibrationImages: number;
  calibration: CalibrationOptions;
  outputs: QuantizeGraphOptions["outputs"];
  logger: Logger;
}

export interface QuantizeBundleSummary {
  manifest: Manifest;
  calibrationImages: number;
  /** Where the threshold came from: re-scored held-out images, or the float bundle's (when they are gone). */
  thresholdSource: "int8-validation" | "fp32";
  /** Op counts ONNX Runtime executes for the int8 teacher (see {@link executedOpCounts}). */
  teacherOps: Record<string, number>;
  seconds: number;
}

/**
 * The float bundle's held-out validation images, if the folder it was trained on is still readable: the split
 * is re-derived from the training record (files, seed, fraction) exactly as retrain made it.
 */
async function validationFiles(manifest: Manifest): Promise<string[] | undefined> {
  const t = manifest.training;
  if (typeof t.frames_dir !== "string" || typeof t.seed !== "number" || typeof t.val_fraction !== "number") {
    return undefined;
  }
  try {
    const skipped = new Set(
      Array.isArray(t.skipped_files) ? t.skipped_files.map((s) => (s as { file?: string }).file) : [],
    );
    const files = (await listImages(t.frames_dir)).filter((f) => !skipped.has(f));
    const { val } = splitTrainVal(files, t.val_fraction, t.seed);
    return val.length === manifest.validation_scores.length ? val : undefined;
  } catch {
    return undefined;
  }
}

/** The held-out images' int8 anomaly maps (capture size). */
async function int8ValidationMaps(
  bundle: Bundle,
  teacher: Graph,
  student: Graph,
  files: string[],
): Promise<Float32Array[]> {
  const geometry = bundleGeometry(bundle.manifest);
  const { capture } = geometry;
  const roi = geometry.roi ?? undefined;
  const scorer = await Scorer.create(teacher, student, scoringOptions(bundle.manifest));
  try {
    const images = await Promise.all(
      files.map(async (f) => (await loadRgb(f, capture.width, capture.height, roi)).rgb),
    );
    return (await scoreImages((packed, n) => scorer.score(packed, n), images, geometry, 8)).maps;
  } finally {
    await scorer.release();
  }
}

/**
 * `stpmd quantize`: calibrates the bundle's teacher and student on normal frames, writes both as int8 QDQ graphs
 * into a new bundle, and re-derives the threshold from int8 scores of the original held-out images (same rule:
 * the float threshold's distance from the validation mean, in standard deviations).
 */
export async function quantizeBundle(opts: QuantizeBundleOptions): Promise<QuantizeBundleSummary> {
  const started = performance.now();
  const { logger } = opts;
  if (path.resolve(opts.outDir) === path.resolve(opts.modelDir)) {
    throw new StpmdError(
      "ERR_OPTION_INVALID",
      `--out ${opts.outDir}: must differ from --model (the float bundle)`,
    );
  }
  if (!Number.isInteger(opts.calibrationImages) || opts.calibrationImages < 1) {
    throw new StpmdError(
      "ERR_OPTION_INVALID",
      `--calibration-images ${opts.calibrationImages}: must be a whole number ≥ 1`,
    );
  }
  const p = opts.calibration.percentile;
  if (opts.calibration.method === "percentile" && !(p > 50 && p <= 100)) {
    throw new StpmdError("ERR_OPTION_INVALID", `--percentile ${p}: must be above 50 and at most 100`);
  }
  // what killed quantizations left at --out (a whole bundle each) goes now, not after the calibration
  await recoverBundle(opts.outDir, logger);
  const bundle = await loadBundle(opts.modelDir, logger);
  const m = bundle.manifest;
  if (m.training.precision === "int8") {
    throw new StpmdError("ERR_OPTION_INVALID", `--model ${opts.modelDir}: bundle is already int8`);
  }
  const geometry = bundleGeometry(m);
  const size = fedSize(geometry);
  const files = await listImages(opts.framesDir, "calibration frames folder");
  const calib = await calibrationInputs(files, opts.calibrationImages, geometry, m.input.mean, m.input.std);
  logger.info({ images: calib.files.length, method: opts.calibration.method }, "calibrating");
  const quantizeOne = async (g: Graph, role: string): Promise<Graph> => {
    try {
      const ranges = await calibrate(g, calib.inputs, calib.count, size, opts.calibration);
      return quantizeGraph(g, ranges, { outputs: opts.outputs });
    } catch (err) {
      throw new StpmdError(
        "ERR_BUNDLE_INVALID",
        `${opts.modelDir}: ${role} cannot be quantized (${errorMessage(err)})`,
      );
    }
  };
  const teacher = await quantizeOne(bundle.teacher, "teacher");
  const student = await quantizeOne(bundle.student, "student");
  const teacherBytes = encodeModel(teacher, "stpm-teacher-int8");
  const studentBytes = encodeModel(student, "stpm-student-int8");
  const teacherOps = await executedOpCounts(teacherBytes);

  let thresholdSource: QuantizeBundleSummary["thresholdSource"] = "fp32";
  let threshold = m.threshold;
  let validation = m.validation_scores;
  let byAggregation = m.validation_scores_by_aggregation;
  const valFiles = await validationFiles(m);
  if (valFiles && m.score_stats.std > 0) {
    const sigmas = (m.threshold - m.score_stats.mean) / m.score_stats.std;
    const maps = await int8ValidationMaps(bundle, teacher, student, valFiles);
    const { width, height } = bundleGeometry(m).capture;
    const scoreBy = (spec: PartScore): number[] => maps.map((map) => partScore(map, width, height, spec));
    validation = scoreBy(bundlePartScore(m)).sort((a, b) => a - b);
    byAggregation = scoresByAggregation(scoreBy);
    const stats = scoreStats(validation);
    threshold = stats.mean + sigmas * stats.std;
    thresholdSource = "int8-validation";
  } else {
    logger.warn(
      { frames_dir: m.training.frames_dir },
      "the float bundle's validation images are not readable; keeping its threshold for the int8 bundle",
    );
  }
  const createdAt = new Date();
  const manifest = await writeBundle(opts.outDir, teacherBytes, studentBytes, {
    model_version: `${m.model_version}-int8`,
    created_at: createdAt.toISOString(),
    input: m.input,
    ...(m.geometry ? { geometry: m.geometry } : {}),
    outputs: m.outputs,
    teacher_source_path: m.teacher.source_path,
    threshold,
    threshold_rule:
      thresholdSource === "int8-validation" ? `${m.threshold_rule} (int8 scores)` : m.threshold_rule,
    ...(m.score ? { score: m.score } : {}),
    validation_scores: validation,
    ...(byAggregation ? { validation_scores_by_aggregation: byAggregation } : {}),
    score_stats: scoreStats(validation),
    training: {
      ...m.training,
      precision: "int8",
      quantization: {
        format: "QDQ (ONNX Runtime QLinearConv/QLinearAdd)",
        activations: "uint8 asymmetric per tensor",
        weights: "int8 symmetric per output channel (axis 0)",
        bias: "int32, scale = input scale · weight scale",
        outputs: opts.outputs,
        calibration: { ...opts.calibration, images: calib.files.length, frames_dir: opts.framesDir },
        source_bundle: path.resolve(opts.modelDir),
        source_model_version: m.model_version,
        source_threshold: m.threshold,
        threshold_source: thresholdSource,
      },
    },
  });
  return {
    manifest,
    calibrationImages: calib.files.length,
    thresholdSource,
    teacherOps,
    seconds: (performance.now() - started) / 1000,
  };
}

/** The one-line result `stpmd quantize` prints. */
export function formatQuantizeSummary(s: QuantizeBundleSummary, outDir: string): string {
  const int8Convs = s.teacherOps["com.microsoft:QLinearConv"] ?? 0;
  const floatConvs = Object.entries(s.teacherOps)
    .filter(([op]) => op === "Conv" || op.endsWith(":Conv"))
    .reduce((a, [, n]) => a + n, 0);
  return (
    `quantize done: int8 bundle ${outDir} (model ${s.manifest.model_version}), ${s.calibrationImages} calibration images, ` +
    `threshold ${s.manifest.threshold.toPrecision(4)} (${s.thresholdSource === "int8-validation" ? "re-derived from int8 validation scores" : "kept from the float bundle"}), ` +
    `ONNX Runtime runs the teacher with ${int8Convs} int8 QLinearConv and ${floatConvs} float Conv, ${s.seconds.toFixed(1)} s`
  );
}
