import { floatTensor, type Graph, GraphBuilder } from "../onnx/onnx-graph.js";
import { Random } from "../stpm/random.js";

/**
 * A small randomly initialised pyramid network (strides 4, 8, 16) built from every op a teacher may contain.
 * It stands in for an ImageNet teacher where none is available — `stpmd demo` without `--teacher`, and tests —
 * and is never a substitute for a real one: random features detect only crude anomalies.
 */
export function randomTeacher(seed = 1, width = 8): Graph {
  const rng = new Random(seed);
  const b = new GraphBuilder("t_");
  const conv = (
    x: string,
    cin: number,
    cout: number,
    k: number,
    stride: number,
    pads: number[],
    group = 1,
  ): string => {
    const fanIn = (cin / group) * k * k;
    const w = floatTensor([cout, cin / group, k, k]);
    for (let i = 0; i < w.data.length; i++) (w.data as Float32Array)[i] = rng.normal() * Math.sqrt(2 / fanIn);
    const bias = floatTensor([cout]);
    for (let i = 0; i < cout; i++) (bias.data as Float32Array)[i] = rng.normal() * 0.1;
    return b.op("Conv", [x, b.constant(w, "w"), b.constant(bias, "b")], {
      kernel_shape: [k, k],
      strides: [stride, stride],
      pads,
      group,
      dilations: [1, 1],
    });
  };
  const relu6 = (x: string): string => b.op("Clip", [x, b.scalar(0), b.scalar(6)]);
  const c1 = width;
  const c2 = Math.round(width * 1.5);
  const c3 = width * 2;
  const c4 = width * 3;
  // stride 2, TensorFlow "SAME" padding (0 top/left, 1 bottom/right) as in the shared MobileNetV2 teacher
  const stem = relu6(conv("input", 3, c1, 3, 2, [0, 0, 1, 1]));
  const dw = relu6(conv(stem, c1, c1, 3, 1, [1, 1, 1, 1], c1));
  const block = b.op("Add", [stem, conv(dw, c1, c1, 1, 1, [0, 0, 0, 0])]);
  const s4 = b.op("Relu", [conv(block, c1, c2, 3, 2, [1, 1, 1, 1])]);
  const padded = b.op("Pad", [s4, b.ints([0, 0, 1, 1, 0, 0, 1, 1])], { mode: "constant" });
  const pooled = b.op("MaxPool", [padded], { kernel_shape: [3, 3], strides: [2, 2] });
  const s8 = b.op("Relu", [conv(pooled, c2, c3, 1, 1, [0, 0, 0, 0])]);
  const s16 = b.op("Relu", [conv(s8, c3, c4, 3, 2, [1, 1, 1, 1])]);
  return pyramidGraph(
    b,
    [
      { from: s4, channels: c2 },
      { from: s8, channels: c3 },
      { from: s16, channels: c4 },
    ],
    {
      arch: `stpmd.random_teacher(seed=${seed}, width=${width})`,
      input_mean: "0.5,0.5,0.5",
      input_std: "0.5,0.5,0.5",
      padding: "tf_same",
      source: "random (not ImageNet-trained: detection quality is not representative)",
    },
  );
}

/**
 * A teacher graph from a builder whose network reads `input` and produces the stride-4, -8 and -16 features in
 * `levels`: they become the outputs `feat_s4`, `feat_s8`, `feat_s16`.
 */
export function pyramidGraph(
  b: GraphBuilder,
  levels: [
    { from: string; channels: number },
    { from: string; channels: number },
    { from: string; channels: number },
  ],
  metadata: Record<string, string>,
): Graph {
  const outputs = levels.map((l, i) => ({ ...l, name: `feat_s${4 << i}` }));
  // Name the producing tensors after the outputs rather than adding Identity nodes: ONNX Runtime 1.30's
  // Identity elimination breaks graphs where an Identity feeds a graph output and its input has other consumers.
  const renamed = new Map(outputs.map((o) => [o.from, o.name]));
  for (const node of b.nodes) {
    node.inputs = node.inputs.map((i) => renamed.get(i) ?? i);
    node.outputs = node.outputs.map((o) => renamed.get(o) ?? o);
  }
  return {
    nodes: b.nodes,
    initializers: b.initializers,
    inputs: [{ name: "input", dims: ["batch", 3, "height", "width"] }],
    outputs: outputs.map((o) => ({ name: o.name, dims: ["batch", o.channels, "h", "w"] })),
    metadata,
    opset: 17,
  };
}
