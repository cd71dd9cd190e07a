import { floatTensor, type Graph, GraphBuilder, type GraphNode } from "../src/model/onnx-graph.js";
import type { ScoringGraphOptions } from "../src/pipeline/scorer.js";
import { NORM_EPS } from "../src/train/training-graph.js";

/**
 * A candidate replacement for buildScoringGraph's distance, measured by the inference benchmark: the same map,
 * with ½‖t/|t| − s/|s|‖² expanded as ½(t·t/m_t² + s·s/m_s²) − t·s/(m_t·m_s), m = max(|x|, ε). Three channel
 * reductions replace the normalised feature maps, so no per-position norm is broadcast back over the channels
 * (a slow broadcast once ONNX Runtime has moved int8 features to NHWC) and three full-size passes disappear.
 */
function prefixInto(g: Graph, prefix: string, input: string, b: GraphBuilder): string[] {
  const rename = (n: string): string => (n === "" ? "" : n === g.inputs[0]!.name ? input : `${prefix}${n}`);
  for (const [k, t] of g.initializers) b.initializers.set(`${prefix}${k}`, t);
  for (const n of g.nodes) {
    const node: GraphNode = { ...n, inputs: n.inputs.map(rename), outputs: n.outputs.map(rename) };
    b.nodes.push(node);
  }
  return g.outputs.map((o) => rename(o.name));
}

export function buildDotProductScoringGraph(
  teacher: Graph,
  student: Graph,
  opts: ScoringGraphOptions,
): Graph {
  const b = new GraphBuilder("dot/");
  const { height: H, width: W } = opts;
  const scale = floatTensor(
    [1, 3, 1, 1],
    opts.std.map((s) => 1 / (255 * s)),
  );
  const shift = floatTensor(
    [1, 3, 1, 1],
    opts.mean.map((m, i) => m / opts.std[i]!),
  );
  const nchw = b.op("Transpose", [b.op("Cast", ["frames"], { to: 1 })], { perm: [0, 3, 1, 2] });
  const x = b.op("Sub", [b.op("Mul", [nchw, b.constant(scale)]), b.constant(shift)]);
  const tOuts = prefixInto(teacher, "teacher/", x, b);
  const sOuts = prefixInto(student, "student/", x, b);
  const eps = b.scalar(NORM_EPS);
  const axis = b.ints([1]);
  const dot = (p: string, q: string): string =>
    b.op("ReduceSum", [b.op("Mul", [p, q]), axis], { keepdims: 1 });
  const sizes = b.ints([0, 1, H, W]);
  const levelMaps = tOuts.map((t, i) => {
    const s = sOuts[i]!;
    const tt = dot(t, t);
    const ss = dot(s, s);
    const ts = dot(t, s);
    const mt = b.op("Max", [b.op("Sqrt", [tt]), eps]);
    const ms = b.op("Max", [b.op("Sqrt", [ss]), eps]);
    const selfTerms = b.op("Add", [
      b.op("Div", [tt, b.op("Mul", [mt, mt])]),
      b.op("Div", [ss, b.op("Mul", [ms, ms])]),
    ]);
    const cross = b.op("Div", [ts, b.op("Mul", [mt, ms])]);
    // rounding can take 1 − cos a hair below zero where the features agree; a distance is never negative
    const dist = b.op("Max", [b.op("Sub", [b.op("Mul", [selfTerms, b.scalar(0.5)]), cross]), b.scalar(0)]);
    const batch = b.op("Slice", [b.op("Shape", [dist]), b.ints([0]), b.ints([2])]);
    const target = b.op("Concat", [batch, b.op("Slice", [sizes, b.ints([2]), b.ints([4])])], { axis: 0 });
    return b.op("Resize", [dist, "", "", target], {
      mode: "linear",
      coordinate_transformation_mode: "half_pixel",
    });
  });
  let product = levelMaps[0]!;
  for (const m of levelMaps.slice(1)) product = b.op("Mul", [product, m]);
  b.nodes.push({ op: "Squeeze", inputs: [product, b.ints([1])], outputs: ["anomaly_map"], attrs: {} });
  b.nodes.push({
    op: "ReduceMax",
    inputs: ["anomaly_map"],
    outputs: ["score"],
    attrs: { axes: [1, 2], keepdims: 0 },
  });
  return {
    nodes: b.nodes,
    initializers: b.initializers,
    inputs: [{ name: "frames", dims: ["N", H, W, 3], elemType: "uint8" }],
    outputs: [
      { name: "anomaly_map", dims: ["N", H, W] },
      { name: "score", dims: ["N"] },
    ],
    metadata: {},
    opset: 17,
  };
}
