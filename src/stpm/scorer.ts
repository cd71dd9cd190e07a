import { encodeModel, floatTensor, type Graph, GraphBuilder, type GraphNode } from "../onnx/onnx-graph.js";
import { createSession, ort, type SessionOptions } from "../onnx/ort.js";
import { anomalyMapNodes, type LevelDistance, normalisedDistance } from "./anomaly-map.js";

/**
 * STPM scoring as one ONNX graph: uint8 RGB frames in, anomaly maps and image scores out. Preprocessing,
 * teacher, student and the anomaly map ({@link anomalyMapNodes}: per-level ½‖t̂ − ŝ‖², bilinear upsampling, the
 * product over levels and the maximum) all run inside ONNX Runtime, so feature maps never travel back to
 * JavaScript.
 *
 * Input:   frames uint8 [N, H+2m, W+2m, 3] (packed RGB with the context margin m, geometry.ts's contextInput)
 * Outputs: anomaly_map float32 [N, H, W] (cropped to the inspected area), score float32 [N]
 */
export interface ScoringGraphOptions {
  height: number;
  width: number;
  mean: number[];
  std: number[];
  /** Context margin per side (the bundle geometry's); 0 or absent: frames are fed as they are. */
  margin?: number;
}

function prefixGraph(g: Graph, prefix: string, inputName: string, b: GraphBuilder): string[] {
  const rename = (name: string): string => (name === g.inputs[0]!.name ? inputName : `${prefix}${name}`);
  for (const [name, t] of g.initializers) b.initializers.set(`${prefix}${name}`, t);
  for (const n of g.nodes) {
    const node: GraphNode = {
      op: n.op,
      inputs: n.inputs.map((i) => (i === "" ? "" : rename(i))),
      outputs: n.outputs.map(rename),
      attrs: n.attrs,
    };
    b.nodes.push(node);
  }
  return g.outputs.map((o) => rename(o.name));
}

/** (x/255 − mean)/std per channel of an N×3×H×W float tensor; see buildScoringGraph for why it is built so. */
function normaliseInput(b: GraphBuilder, x: string, mean: number[], std: number[]): string {
  const scales = std.map((s) => 1 / (255 * s));
  const shifts = mean.map((m, i) => m / std[i]!);
  if (scales.every((v) => v === scales[0]) && shifts.every((v) => v === shifts[0])) {
    return b.op("Sub", [b.op("Mul", [x, b.scalar(scales[0]!)]), b.scalar(shifts[0]!)], {}, "x");
  }
  const kernel = new Array<number>(9).fill(0);
  for (let c = 0; c < 3; c++) kernel[c * 3 + c] = scales[c]!;
  return b.op(
    "Conv",
    [
      x,
      b.constant(floatTensor([3, 3, 1, 1], kernel)),
      b.constant(
        floatTensor(
          [3],
          shifts.map((v) => -v),
        ),
      ),
    ],
    { kernel_shape: [1, 1] },
    "x",
  );
}

export function buildScoringGraph(
  teacher: Graph,
  student: Graph,
  opts: ScoringGraphOptions,
  distance: LevelDistance = normalisedDistance,
): Graph {
  const b = new GraphBuilder("score/");
  const { height: H, width: W } = opts;
  const m = opts.margin ?? 0;
  // uint8 NHWC → normalised float NCHW: x·(1/(255·std)) − mean/std, per channel. Written so that it broadcasts
  // cheaply in either layout: in the int8 graph ORT moves it to the NHWC side of the Transpose, where a [1,3,1,1]
  // Mul/Sub becomes a broadcast over spans of 3 (~0.4 ms per frame each in benchmarks/profile-scoring.ts).
  // Channels sharing one mean and std (the MobileNetV2 teacher) take scalars; otherwise a 1×1 convolution with a
  // diagonal kernel, which ORT keeps in NCHW.
  const nchw = b.op("Transpose", [b.op("Cast", ["frames"], { to: 1 })], { perm: [0, 3, 1, 2] });
  const x = normaliseInput(b, nchw, opts.mean, opts.std);
  const tOuts = prefixGraph(teacher, "teacher/", x, b);
  const sOuts = prefixGraph(student, "student/", x, b);
  const levels = tOuts.map((t, i) => ({ teacher: t, student: sOuts[i]! }));
  anomalyMapNodes(b, levels, opts, { map: "anomaly_map", score: "score" }, distance);
  return {
    nodes: b.nodes,
    initializers: b.initializers,
    inputs: [{ name: "frames", dims: ["N", H + 2 * m, W + 2 * m, 3], elemType: "uint8" }],
    outputs: [
      { name: "anomaly_map", dims: ["N", H, W] },
      { name: "score", dims: ["N"] },
    ],
    metadata: {},
    opset: 17,
  };
}

export interface ScoredBatch {
  /** N × H × W anomaly maps, one after another. */
  maps: Float32Array;
  scores: Float32Array;
}

/** A loaded scoring session. One instance per model; cheap to call from one place at a time. */
export class Scorer {
  private constructor(
    private readonly session: ort.InferenceSession,
    readonly height: number,
    readonly width: number,
    /** Context margin: frames are (height + 2·margin) × (width + 2·margin), maps height × width. */
    readonly margin: number,
  ) {}

  static async create(
    teacher: Graph,
    student: Graph,
    opts: ScoringGraphOptions,
    sessionOpts: SessionOptions = {},
  ): Promise<Scorer> {
    const session = await createSession(encodeModel(buildScoringGraph(teacher, student, opts)), sessionOpts);
    return new Scorer(session, opts.height, opts.width, opts.margin ?? 0);
  }

  /**
   * Scores `count` frames packed back to back in `frames` (count × (H+2m) × (W+2m) × 3 bytes). ORT writes into
   * arrays made here, so the result owns its buffers: callers may keep views of it or transfer it to another thread.
   */
  async score(frames: Uint8Array, count: number): Promise<ScoredBatch> {
    const fed = [this.height + 2 * this.margin, this.width + 2 * this.margin];
    const input = new ort.Tensor("uint8", frames, [count, fed[0]!, fed[1]!, 3]);
    const maps = new Float32Array(count * this.height * this.width);
    const scores = new Float32Array(count);
    await this.session.run(
      { frames: input },
      {
        anomaly_map: new ort.Tensor("float32", maps, [count, this.height, this.width]),
        score: new ort.Tensor("float32", scores, [count]),
      },
    );
    return { maps, scores };
  }

  /**
   * Why this model cannot judge frames, or undefined when it can: scores one mid-grey frame (the same for every
   * bundle, so a refusal is reproducible) and requires a finite score and map. A student with NaN weights passes
   * every hash and architecture check and then scores every frame NaN; loaders refuse it here, before it serves.
   */
  async probe(): Promise<string | undefined> {
    const fedBytes = (this.height + 2 * this.margin) * (this.width + 2 * this.margin) * 3;
    const { maps, scores } = await this.score(new Uint8Array(fedBytes).fill(128), 1);
    let bad = 0;
    for (const v of maps) if (!Number.isFinite(v)) bad += 1;
    const score = scores[0]!;
    const what = [
      ...(Number.isFinite(score) ? [] : [`the score is ${score}`]),
      ...(bad > 0 ? [`${bad} of ${maps.length} map pixels are not finite`] : []),
    ];
    return what.length === 0
      ? undefined
      : `the model's output is not finite on a mid-grey probe frame (${what.join(", ")})`;
  }

  /**
   * Scores a list of packed RGB model inputs (with their context margin) in batches of `batchSize`, returning
   * per-image maps and scores.
   */
  async scoreAll(images: Uint8Array[], batchSize = 8): Promise<{ maps: Float32Array[]; scores: number[] }> {
    const hw = this.height * this.width;
    const fedBytes = (this.height + 2 * this.margin) * (this.width + 2 * this.margin) * 3;
    const maps: Float32Array[] = [];
    const scores: number[] = [];
    for (let start = 0; start < images.length; start += batchSize) {
      const chunk = images.slice(start, start + batchSize);
      const packed = new Uint8Array(chunk.length * fedBytes);
      chunk.forEach((img, i) => {
        packed.set(img, i * fedBytes);
      });
      const r = await this.score(packed, chunk.length);
      for (let i = 0; i < chunk.length; i++) {
        maps.push(r.maps.subarray(i * hw, (i + 1) * hw));
        scores.push(r.scores[i]!);
      }
    }
    return { maps, scores };
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}
