import { floatTensor, type Graph, GraphBuilder, type GraphNode, type Tensor } from "../onnx/onnx-graph.js";
import type { Random } from "../stpm/random.js";
import { BN_EPS, type StudentLayout } from "./training-graph.js";

/** Everything that defines a student: convolution weights, BatchNorm affine parameters and running statistics. */
export interface StudentState {
  weights: Float32Array[];
  gammas: Float32Array[];
  betas: Float32Array[];
  runningMeans: Float32Array[];
  runningVars: Float32Array[];
  /** Number of training batches that updated the running statistics. */
  batchesSeen: number;
}

/** PyTorch's BatchNorm2d momentum: running = (1 − m)·running + m·batch. */
export const BN_MOMENTUM = 0.1;

/**
 * torchvision's initialisation for ResNet and MobileNetV2: Kaiming-normal with fan-out (std = √(2 / (C_out·k·k))),
 * BatchNorm weight 1 and bias 0, running mean 0 and variance 1.
 */
export function initStudent(layout: StudentLayout, rng: Random): StudentState {
  const state: StudentState = {
    weights: [],
    gammas: [],
    betas: [],
    runningMeans: [],
    runningVars: [],
    batchesSeen: 0,
  };
  for (const conv of layout.convs) {
    const [cout, , kh, kw] = conv.weightDims as [number, number, number, number];
    const std = Math.sqrt(2 / (cout * kh * kw));
    const w = new Float32Array(conv.weightDims.reduce((a, b) => a * b, 1));
    for (let i = 0; i < w.length; i++) w[i] = rng.normal() * std;
    state.weights.push(w);
    state.gammas.push(new Float32Array(cout).fill(1));
    state.betas.push(new Float32Array(cout));
    state.runningMeans.push(new Float32Array(cout));
    state.runningVars.push(new Float32Array(cout).fill(1));
  }
  return state;
}

export function cloneStudent(s: StudentState): StudentState {
  const copy = (arr: Float32Array[]): Float32Array[] => arr.map((a) => a.slice());
  return {
    weights: copy(s.weights),
    gammas: copy(s.gammas),
    betas: copy(s.betas),
    runningMeans: copy(s.runningMeans),
    runningVars: copy(s.runningVars),
    batchesSeen: s.batchesSeen,
  };
}

/** Folds one batch's statistics into the running ones; the variance is made unbiased as PyTorch does. */
export function updateRunningStats(
  state: StudentState,
  batchMeans: Float32Array[],
  batchVars: Float32Array[],
  valuesPerChannel: number[],
): void {
  for (let k = 0; k < state.runningMeans.length; k++) {
    const rm = state.runningMeans[k]!;
    const rv = state.runningVars[k]!;
    const m = batchMeans[k]!;
    const v = batchVars[k]!;
    const n = valuesPerChannel[k]!;
    const unbias = n > 1 ? n / (n - 1) : 1;
    for (let c = 0; c < rm.length; c++) {
      rm[c] = (1 - BN_MOMENTUM) * rm[c]! + BN_MOMENTUM * m[c]!;
      rv[c] = (1 - BN_MOMENTUM) * rv[c]! + BN_MOMENTUM * v[c]! * unbias;
    }
  }
  state.batchesSeen += 1;
}

/**
 * Convolution `k` of `state` with its eval-mode BatchNorm folded in: W' = W·γ/√(σ²+ε), b' = β − μ·γ/√(σ²+ε), for
 * `cout` output channels. The deployed student and the per-epoch validator both take their weights from here.
 */
export function foldBatchNorm(
  state: StudentState,
  k: number,
  cout: number,
): { weight: Float32Array; bias: Float32Array } {
  const w = state.weights[k]!;
  const perOut = w.length / cout;
  const weight = new Float32Array(w.length);
  const bias = new Float32Array(cout);
  for (let c = 0; c < cout; c++) {
    const scale = state.gammas[k]![c]! / Math.sqrt(state.runningVars[k]![c]! + BN_EPS);
    for (let j = 0; j < perOut; j++) weight[c * perOut + j] = w[c * perOut + j]! * scale;
    bias[c] = state.betas[k]![c]! - state.runningMeans[k]![c]! * scale;
  }
  return { weight, bias };
}

/**
 * The deployable student: the teacher's own graph (same ops, padding and outputs) whose convolution weights are
 * the student's with BatchNorm folded in ({@link foldBatchNorm}).
 */
export function foldedStudentGraph(teacher: Graph, layout: StudentLayout, state: StudentState): Graph {
  const initializers = new Map<string, Tensor>();
  const nodes = teacher.nodes.map((n) => ({ ...n, inputs: [...n.inputs], attrs: { ...n.attrs } }));
  const convNodes = nodes.filter((n) => n.op === "Conv");
  layout.convs.forEach((conv, k) => {
    const node = convNodes[k]!;
    const { weight, bias } = foldBatchNorm(state, k, conv.channels);
    const wName = `student.conv${k}.weight`;
    const bName = `student.conv${k}.bias`;
    initializers.set(wName, floatTensor(conv.weightDims, weight));
    initializers.set(bName, floatTensor([conv.channels], bias));
    node.inputs = [node.inputs[0]!, wName, bName];
  });
  // keep the teacher's non-weight constants (Clip bounds, Pad amounts)
  const used = new Set(nodes.flatMap((n) => n.inputs));
  for (const [name, t] of teacher.initializers) {
    if (used.has(name) && !initializers.has(name)) initializers.set(name, t);
  }
  return { ...teacher, nodes, initializers, metadata: { ...teacher.metadata, role: "stpm-student" } };
}

/**
 * The student as the training engine evaluates it: unfolded convolutions followed by BatchNorm with running
 * statistics, written as separate ONNX ops. It exists to check {@link foldedStudentGraph} against.
 */
export function runningStatsStudentGraph(teacher: Graph, layout: StudentLayout, state: StudentState): Graph {
  const b = new GraphBuilder("bn/");
  const convs = new Map(layout.convs.map((c, k) => [c.node, k]));
  const rename = new Map<string, string>();
  const nodes: GraphNode[] = [];
  for (const n of teacher.nodes) {
    const inputs = n.inputs.map((i) => rename.get(i) ?? i);
    const k = convs.get(n);
    if (k === undefined) {
      nodes.push({ ...n, inputs });
      continue;
    }
    const c = layout.convs[k]!.channels;
    const w = b.constant(floatTensor(layout.convs[k]!.weightDims, state.weights[k]!), "w");
    const raw = b.fresh("conv");
    nodes.push({ ...n, inputs: [inputs[0]!, w], outputs: [raw] });
    const stat = (arr: Float32Array): string => b.constant(floatTensor([1, c, 1, 1], arr));
    const centred = b.op("Sub", [raw, stat(state.runningMeans[k]!)]);
    const denom = b.op("Sqrt", [b.op("Add", [stat(state.runningVars[k]!), b.scalar(BN_EPS)])]);
    const normed = b.op("Div", [centred, denom]);
    const out = b.op("Add", [b.op("Mul", [normed, stat(state.gammas[k]!)]), stat(state.betas[k]!)]);
    rename.set(n.outputs[0]!, out);
    nodes.push(...b.nodes.splice(0));
  }
  // graph outputs must keep their names: alias the renamed tensors back
  for (const o of teacher.outputs) {
    const r = rename.get(o.name);
    if (r) nodes.push({ op: "Identity", inputs: [r], outputs: [o.name], attrs: {} });
  }
  const initializers = new Map(teacher.initializers);
  for (const [name, t] of b.initializers) initializers.set(name, t);
  return { ...teacher, nodes, initializers };
}

export interface SgdOptions {
  lr: number;
  momentum: number;
  weightDecay: number;
}

/** SGD with momentum and L2 weight decay, exactly torch.optim.SGD's update (dampening 0, no Nesterov). */
export class Sgd {
  private readonly buffers: Float32Array[];
  private first = true;

  constructor(
    private readonly params: Float32Array[],
    private readonly opts: SgdOptions,
  ) {
    this.buffers = params.map((p) => new Float32Array(p.length));
  }

  step(grads: Float32Array[]): void {
    const { lr, momentum, weightDecay } = this.opts;
    for (let k = 0; k < this.params.length; k++) {
      const p = this.params[k]!;
      const g = grads[k]!;
      const buf = this.buffers[k]!;
      for (let i = 0; i < p.length; i++) {
        const d = g[i]! + weightDecay * p[i]!;
        // torch initialises the momentum buffer with the first gradient itself
        buf[i] = this.first ? d : momentum * buf[i]! + d;
        p[i] = p[i]! - lr * buf[i]!;
      }
    }
    this.first = false;
  }
}
