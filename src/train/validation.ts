import { encodeModel, type Graph, GraphBuilder, type ValueInfo } from "../onnx/onnx-graph.js";
import { createSession, floatInput, type ort } from "../onnx/ort.js";
import { anomalyMapNodes } from "../stpm/anomaly-map.js";
import type { Size } from "../stpm/geometry.js";
import { foldBatchNorm, foldedStudentGraph, type StudentState } from "./student.js";
import type { StudentLayout } from "./training-graph.js";

/** The inspected area's model size and the context margin fed around it. */
type MarginedSize = Size & { margin?: number };

/**
 * Per-epoch validation without rebuilding anything: one ONNX Runtime session for the whole run, whose inputs are
 * the held-out images (already normalised), the teacher's features for them (the teacher is frozen, so they are
 * computed once) and the student's BatchNorm-folded convolution weights and biases. Each epoch feeds the new
 * weights; the graph ends in the deployed Scorer's own anomaly map and score ({@link anomalyMapNodes}), so its image
 * scores equal the Scorer's up to float rounding (retrain rescores the kept epoch with the Scorer itself for the
 * threshold). Against a fresh Scorer per epoch this saves the session build and the teacher's forward pass.
 */
export class Validator {
  private constructor(
    private readonly session: ort.InferenceSession,
    private readonly layout: StudentLayout,
    private readonly inputs: Float32Array,
    private readonly teacherFeatures: Float32Array[],
    private readonly featureDims: number[][],
    private readonly count: number,
    private readonly size: MarginedSize,
    private readonly batch: number,
  ) {}

  /**
   * `inputs`: count × 3 × (height+2·margin) × (width+2·margin) normalised images (with their context margin);
   * `teacherFeatures`: per level count × C × h × w, the teacher's raw (not normalised) outputs for them. The map
   * is cropped to height × width before the score, as the Scorer's.
   */
  static async create(
    teacher: Graph,
    layout: StudentLayout,
    inputs: Float32Array,
    teacherFeatures: Float32Array[],
    count: number,
    size: MarginedSize,
    batch = 8,
    threads?: number,
  ): Promise<Validator> {
    const graph = validationGraph(teacher, layout, size);
    // no arena: what it would hold between epochs would sit beside the training step's peak (retrain-memory.md)
    const session = await createSession(encodeModel(graph), {
      memArena: false,
      ...(threads ? { intraOpThreads: threads } : {}),
    });
    const featureDims = layout.featureShapes.map((s) => s.slice(1));
    return new Validator(session, layout, inputs, teacherFeatures, featureDims, count, size, batch);
  }

  /** Image scores of the held-out images under the student `state` (eval-mode BatchNorm, folded). */
  async scores(state: StudentState): Promise<number[]> {
    const weights: Record<string, ort.Tensor> = {};
    this.layout.convs.forEach((conv, k) => {
      const { weight, bias } = foldBatchNorm(state, k, conv.channels);
      weights[`w_${k}`] = floatInput(weight, conv.weightDims);
      weights[`b_${k}`] = floatInput(bias, [conv.channels]);
    });
    const m = this.size.margin ?? 0;
    const width = this.size.width + 2 * m;
    const height = this.size.height + 2 * m;
    const chw = 3 * width * height;
    const scores: number[] = [];
    for (let start = 0; start < this.count; start += this.batch) {
      const n = Math.min(this.batch, this.count - start);
      const feeds: Record<string, ort.Tensor> = {
        ...weights,
        x: floatInput(this.inputs.subarray(start * chw, (start + n) * chw), [n, 3, height, width]),
      };
      this.teacherFeatures.forEach((f, level) => {
        const dims = this.featureDims[level]!;
        const per = dims.reduce((a, b) => a * b, 1);
        feeds[`teacher_${level}`] = floatInput(f.subarray(start * per, (start + n) * per), [n, ...dims]);
      });
      const out = await this.session.run(feeds);
      scores.push(...(out.score!.data as Float32Array));
    }
    return scores;
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}

/** The folded student with its convolution weights as inputs, and the Scorer's map and score after it. */
export function validationGraph(teacher: Graph, layout: StudentLayout, size: MarginedSize): Graph {
  const m = size.margin ?? 0;
  // the folded graph's structure (ops, padding, constants); its weight initialisers become inputs
  const dummy = {
    weights: layout.convs.map((c) => new Float32Array(c.weightDims.reduce((a, b) => a * b, 1))),
    gammas: layout.convs.map((c) => new Float32Array(c.channels)),
    betas: layout.convs.map((c) => new Float32Array(c.channels)),
    runningMeans: layout.convs.map((c) => new Float32Array(c.channels)),
    runningVars: layout.convs.map((c) => new Float32Array(c.channels).fill(1)),
    batchesSeen: 0,
  };
  const student = foldedStudentGraph(teacher, layout, dummy);
  const b = new GraphBuilder("val/");
  const inputs: ValueInfo[] = [{ name: "x", dims: ["N", 3, size.height + 2 * m, size.width + 2 * m] }];
  const rename = new Map<string, string>([[student.inputs[0]!.name, "x"]]);
  layout.convs.forEach((c, k) => {
    rename.set(`student.conv${k}.weight`, `w_${k}`);
    rename.set(`student.conv${k}.bias`, `b_${k}`);
    inputs.push({ name: `w_${k}`, dims: c.weightDims }, { name: `b_${k}`, dims: [c.channels] });
  });
  const name = (t: string): string => (t === "" ? "" : (rename.get(t) ?? `s/${t}`));
  for (const [n, t] of student.initializers) {
    if (!rename.has(n)) b.initializers.set(name(n), t);
  }
  for (const n of student.nodes) {
    b.nodes.push({ op: n.op, inputs: n.inputs.map(name), outputs: n.outputs.map(name), attrs: n.attrs });
  }
  const levels = student.outputs.map((o, level) => {
    const [, c, h, w] = layout.featureShapes[level]!;
    inputs.push({ name: `teacher_${level}`, dims: ["N", c!, h!, w!] });
    return { teacher: `teacher_${level}`, student: name(o.name) };
  });
  anomalyMapNodes(b, levels, size, { map: "anomaly_map", score: "score" });
  return {
    nodes: b.nodes,
    initializers: b.initializers,
    inputs,
    outputs: [{ name: "score", dims: ["N"] }],
    metadata: {},
    opset: 17,
  };
}
