import { type Graph, GraphBuilder, type GraphNode, type ValueInfo } from "../onnx/onnx-graph.js";
import {
  type ConvGeometry,
  clipBounds,
  convGeometry,
  inferShapes,
  padAmounts,
  type ShapeMap,
} from "../onnx/shapes.js";
import { NORM_EPS } from "../stpm/normalize.js";

/**
 * The student's training step as one ONNX graph, run by ONNX Runtime: forward pass with BatchNorm in training mode,
 * STPM loss against the cached (normalised) teacher features, and the backward pass written out op by op.
 *
 * Why a hand-written backward graph: onnxruntime-node has no training API, tfjs-node cannot install here or on
 * Jetson, and tfjs-wasm lacks the convolution gradient kernels. ONNX Runtime's CPU kernels (MLAS) are the fastest
 * convolution code available to Node on this hardware, and a static graph lets ORT plan memory once. Every
 * gradient below is checked against finite differences in test/train/training-graph.test.ts.
 *
 * Inputs:  x [N,3,H,W], teacher_0..2 (L2-normalised teacher features), inv_batch [] (= 1/N), and per student
 *          convolution k: w_k (conv weight), gamma_k / beta_k [1,C,1,1] (BatchNorm affine).
 * Outputs: loss [], grad_w_k, grad_gamma_k, grad_beta_k, batch_mean_k / batch_var_k [1,C,1,1] (biased variance).
 */

export const BN_EPS = 1e-5;

export interface StudentConv {
  index: number;
  /** The teacher node this convolution mirrors. */
  node: GraphNode;
  weightDims: number[];
  geometry: ConvGeometry;
  channels: number;
}

export interface StudentLayout {
  convs: StudentConv[];
  inputSize: [number, number];
  featureShapes: number[][];
  shapes: ShapeMap;
}

/** Finds the teacher's convolutions (one BatchNorm-equipped student conv each) and checks the graph is trainable. */
export function studentLayout(teacher: Graph, height: number, width: number): StudentLayout {
  const shapes = inferShapes(teacher, [1, 3, height, width]);
  const convs: StudentConv[] = [];
  for (const node of teacher.nodes) {
    if (node.op !== "Conv") continue;
    const weightDims = teacher.initializers.get(node.inputs[1]!)!.dims;
    convs.push({
      index: convs.length,
      node,
      weightDims,
      geometry: convGeometry(node, weightDims),
      channels: weightDims[0]!,
    });
  }
  const featureShapes = teacher.outputs.map((o) => shapes.get(o.name)!);
  return { convs, inputSize: [height, width], featureShapes, shapes };
}

interface ForwardRecord {
  node: GraphNode;
  /** student-side names of the node's inputs/outputs */
  inputs: string[];
  output: string;
  conv?: { k: StudentConv; raw: string; centred: string; invstd: string; scale: string };
  maxpoolIndices?: string;
}

export function buildTrainingGraph(teacher: Graph, layout: StudentLayout): Graph {
  const b = new GraphBuilder("");
  const [H, W] = layout.inputSize;
  const inputs: ValueInfo[] = [{ name: "x", dims: ["N", 3, H, W] }];
  const outputs: ValueInfo[] = [{ name: "loss", dims: [] }];
  const rename = new Map<string, string>([[teacher.inputs[0]!.name, "x"]]);
  const studentName = (t: string): string => {
    const s = rename.get(t);
    if (!s) throw new Error(`tensor ${t} used before it is produced`);
    return s;
  };
  const shapeOf = (t: string): number[] => layout.shapes.get(t)!;
  const convByNode = new Map(layout.convs.map((c) => [c.node, c]));
  const records: ForwardRecord[] = [];

  for (const node of teacher.nodes) {
    const xs = node.inputs.filter((i) => !teacher.initializers.has(i)).map(studentName);
    const rec: ForwardRecord = { node, inputs: xs, output: "" };
    switch (node.op) {
      case "Conv": {
        const k = convByNode.get(node)!;
        inputs.push({ name: `w_${k.index}`, dims: k.weightDims });
        inputs.push({ name: `gamma_${k.index}`, dims: [1, k.channels, 1, 1] });
        inputs.push({ name: `beta_${k.index}`, dims: [1, k.channels, 1, 1] });
        const raw = b.op("Conv", [xs[0]!, `w_${k.index}`], convAttrs(k.geometry), "conv");
        const mean = b.op("ReduceMean", [raw], { axes: [0, 2, 3], keepdims: 1 }, "bn_mean");
        const centred = b.op("Sub", [raw, mean]);
        const variance = b.op("ReduceMean", [b.op("Mul", [centred, centred])], {
          axes: [0, 2, 3],
          keepdims: 1,
        });
        const invstd = b.op(
          "Reciprocal",
          [b.op("Sqrt", [b.op("Add", [variance, b.scalar(BN_EPS)])])],
          {},
          "invstd",
        );
        // y = (x − μ)·(γ·σ⁻¹) + β: the per-channel factor is formed first, so x̂ is never materialised (the
        // backward pass works from the centred values too) — one full-tensor pass fewer per convolution
        const scale = b.op("Mul", [`gamma_${k.index}`, invstd]);
        rec.output = b.op("Add", [b.op("Mul", [centred, scale]), `beta_${k.index}`], {}, "bn");
        b.nodes.push({ op: "Identity", inputs: [mean], outputs: [`batch_mean_${k.index}`], attrs: {} });
        b.nodes.push({ op: "Identity", inputs: [variance], outputs: [`batch_var_${k.index}`], attrs: {} });
        outputs.push({ name: `batch_mean_${k.index}`, dims: [1, k.channels, 1, 1] });
        outputs.push({ name: `batch_var_${k.index}`, dims: [1, k.channels, 1, 1] });
        rec.conv = { k, raw, centred, invstd, scale };
        break;
      }
      case "Relu":
        rec.output = b.op("Relu", [xs[0]!]);
        break;
      case "Clip": {
        const { min, max } = clipBounds(teacher, node);
        rec.output = b.op("Clip", [xs[0]!, b.scalar(min), b.scalar(max)]);
        break;
      }
      case "Add":
        rec.output = b.op("Add", [xs[0]!, xs[1]!]);
        break;
      case "Identity":
        rec.output = xs[0]!;
        break;
      case "Pad":
        rec.output = b.op("Pad", [xs[0]!, b.ints(padAmounts(teacher, node))], { mode: "constant" });
        break;
      case "MaxPool": {
        const [y, idx] = b.opMulti("MaxPool", [xs[0]!], 2, poolAttrs(node));
        rec.output = y!;
        rec.maxpoolIndices = idx!;
        break;
      }
      default:
        throw new Error(`op ${node.op} is not supported for student training`);
    }
    rename.set(node.outputs[0]!, rec.output);
    records.push(rec);
  }

  // ---- loss and its gradient with respect to each student feature map ----
  const grads = new Map<string, string[]>();
  const addGrad = (t: string, g: string): void => {
    const list = grads.get(t) ?? [];
    list.push(g);
    grads.set(t, list);
  };
  const levelLosses: string[] = [];
  teacher.outputs.forEach((out, level) => {
    const [, C, h, w] = layout.featureShapes[level]!;
    const tName = `teacher_${level}`;
    inputs.push({ name: tName, dims: ["N", C!, h!, w!] });
    const s = studentName(out.name);
    const norm = b.op("Max", [
      b.op("Sqrt", [reduceSum(b, b.op("Mul", [s, s]), [1], true)]),
      b.scalar(NORM_EPS),
    ]);
    const sHat = b.op("Div", [s, norm], {}, "s_hat");
    const diff = b.op("Sub", [sHat, tName], {}, "diff");
    // mean over batch and positions of ½‖ŝ−t̂‖²: scale = 1/(N·h·w), N fed in as inv_batch
    const scale = b.op("Mul", ["inv_batch", b.scalar(1 / (h! * w!))]);
    levelLosses.push(
      b.op("Mul", [
        reduceSum(b, b.op("Mul", [diff, diff]), [0, 1, 2, 3], false),
        b.op("Mul", [scale, b.scalar(0.5)]),
      ]),
    );
    const gHat = b.op("Mul", [diff, scale]);
    const dot = reduceSum(b, b.op("Mul", [gHat, sHat]), [1], true);
    addGrad(s, b.op("Div", [b.op("Sub", [gHat, b.op("Mul", [sHat, dot])]), norm], {}, "g_feat"));
  });
  inputs.push({ name: "inv_batch", dims: [] });
  b.nodes.push({ op: "Sum", inputs: levelLosses, outputs: ["loss"], attrs: {} });

  // ---- backward pass, nodes in reverse order ----
  const gradOf = (t: string): string | undefined => {
    const list = grads.get(t);
    if (!list || list.length === 0) return undefined;
    return list.length === 1 ? list[0] : b.op("Sum", list, {}, "g_sum");
  };
  for (const rec of [...records].reverse()) {
    const gy = gradOf(rec.output);
    if (!gy) continue;
    const { node } = rec;
    switch (node.op) {
      case "Identity":
        addGrad(rec.inputs[0]!, gy);
        break;
      case "Add":
        addGrad(rec.inputs[0]!, gy);
        addGrad(rec.inputs[1]!, gy);
        break;
      case "Relu": {
        const pass = b.op("Greater", [rec.inputs[0]!, b.scalar(0)]);
        addGrad(rec.inputs[0]!, b.op("Where", [pass, gy, b.scalar(0)]));
        break;
      }
      case "Clip": {
        // inside the bounds the clip is the identity: where its output equals its input the gradient passes
        // (two passes instead of Greater/Less/And/Where; it differs from PyTorch only at exactly min or max)
        const x = rec.inputs[0]!;
        const pass = b.op("Equal", [x, rec.output]);
        addGrad(x, b.op("Where", [pass, gy, b.scalar(0)]));
        break;
      }
      case "Pad": {
        const pads = padAmounts(teacher, node);
        const inShape = shapeOf(node.inputs[0]!);
        const rank = inShape.length;
        const starts = pads.slice(0, rank);
        const ends = starts.map((s, i) => (i === 0 ? Number.MAX_SAFE_INTEGER : s + inShape[i]!));
        addGrad(rec.inputs[0]!, b.op("Slice", [gy, b.ints(starts), b.ints(ends)]));
        break;
      }
      case "MaxPool": {
        const x = rec.inputs[0]!;
        const xShape = b.op("Shape", [x]);
        const zeros = b.op("Reshape", [b.op("ConstantOfShape", [xShape]), b.ints([-1])]);
        const flatIdx = b.op("Reshape", [rec.maxpoolIndices!, b.ints([-1])]);
        const flatG = b.op("Reshape", [gy, b.ints([-1])]);
        // overlapping windows can pick the same input twice: scatter with addition
        const scattered = b.op("ScatterElements", [zeros, flatIdx, flatG], { axis: 0, reduction: "add" });
        addGrad(x, b.op("Reshape", [scattered, xShape]));
        break;
      }
      case "Conv":
        emitConvBackward(b, rec, gy, shapeOf, addGrad, outputs);
        break;
      default:
        throw new Error(`no gradient for op ${node.op}`);
    }
  }

  return {
    nodes: b.nodes,
    initializers: b.initializers,
    inputs,
    outputs,
    metadata: {},
    opset: 17,
  };
}

function reduceSum(b: GraphBuilder, x: string, axes: number[], keepdims: boolean): string {
  return b.op("ReduceSum", [x, b.ints(axes)], { keepdims: keepdims ? 1 : 0 });
}

function convAttrs(g: ConvGeometry): Record<string, number[] | number> {
  return { kernel_shape: g.kernel, strides: g.strides, pads: g.pads, group: g.group, dilations: [1, 1] };
}

function poolAttrs(node: GraphNode): GraphNode["attrs"] {
  const attrs: GraphNode["attrs"] = {};
  for (const k of ["kernel_shape", "strides", "pads", "ceil_mode"]) {
    if (node.attrs[k] !== undefined) attrs[k] = node.attrs[k]!;
  }
  return attrs;
}

function emitConvBackward(
  b: GraphBuilder,
  rec: ForwardRecord,
  gy: string,
  shapeOf: (t: string) => number[],
  addGrad: (t: string, g: string) => void,
  outputs: ValueInfo[],
): void {
  const { k, centred, invstd, scale } = rec.conv!;
  const i = k.index;
  // BatchNorm (training mode) backward, written with the centred values c = x − μ (x̂ = c·σ⁻¹):
  //   dβ = Σ gy,  dγ = σ⁻¹·Σ gy·c,
  //   dx = γσ⁻¹·(gy − mean(gy)) − c·γσ⁻²·mean(gy·x̂), where mean(gy) = dβ/M and mean(gy·x̂) = dγ/M (M = N·h·w),
  // so the reductions computed for dβ and dγ are reused and every per-channel factor is formed before it meets a
  // full tensor.
  b.nodes.push({
    op: "ReduceSum",
    inputs: [gy, b.ints([0, 2, 3])],
    outputs: [`grad_beta_${i}`],
    attrs: { keepdims: 1 },
  });
  const sumGyC = b.op("ReduceSum", [b.op("Mul", [gy, centred]), b.ints([0, 2, 3])], { keepdims: 1 });
  b.nodes.push({ op: "Mul", inputs: [sumGyC, invstd], outputs: [`grad_gamma_${i}`], attrs: {} });
  outputs.push({ name: `grad_beta_${i}`, dims: [1, k.channels, 1, 1] });
  outputs.push({ name: `grad_gamma_${i}`, dims: [1, k.channels, 1, 1] });
  const [, , hy, wy] = shapeOf(rec.node.outputs[0]!);
  const invM = b.op("Mul", ["inv_batch", b.scalar(1 / (hy! * wy!))]);
  const meanG = b.op("Mul", [`grad_beta_${i}`, invM]);
  const meanGX = b.op("Mul", [`grad_gamma_${i}`, invM]);
  const cFactor = b.op("Neg", [b.op("Mul", [b.op("Mul", [scale, invstd]), meanGX])]);
  const gRaw = b.op(
    "Add",
    [b.op("Mul", [b.op("Sub", [gy, meanG]), scale]), b.op("Mul", [centred, cFactor])],
    {},
    "g_conv",
  );

  const x = rec.inputs[0]!;
  const xShape = shapeOf(rec.node.inputs[0]!);
  const yShape = shapeOf(rec.node.outputs[0]!);
  const g = k.geometry;
  const [kh, kw] = g.kernel;
  const [sh, sw] = g.strides;
  const [pt, pl, pb, pr] = g.pads;

  // weight gradient
  const out = `grad_w_${i}`;
  outputs.push({ name: out, dims: k.weightDims });
  const pointwise =
    kh === 1 && kw === 1 && sh === 1 && sw === 1 && g.pads.every((p) => p === 0) && g.group === 1;
  if (pointwise) {
    // dW[o,i] = Σ_{n,p} gy[n,o,p]·x[n,i,p]: a batched product gy_n·x_nᵀ summed over n. ORT fuses the inner
    // Transpose into the MatMul (FusedMatMul, transB), so neither full tensor is copied.
    const gFlat = b.op("Reshape", [gRaw, b.ints([0, k.channels, -1])]);
    const xFlat = b.op("Reshape", [x, b.ints([0, xShape[1]!, -1])]);
    const perImage = b.op("MatMul", [gFlat, b.op("Transpose", [xFlat], { perm: [0, 2, 1] })]);
    const gw = b.op("ReduceSum", [perImage, b.ints([0])], { keepdims: 0 });
    b.nodes.push({ op: "Reshape", inputs: [gw, b.ints(k.weightDims)], outputs: [out], attrs: {} });
  } else {
    // Correlate the (zero-padded) input with the output gradient, dilated by the stride: the result's spatial
    // extent is the kernel's. Batch and channel axes swap roles so the sum over the batch becomes the conv's
    // reduction. The padding is the conv's own `pads`, not a separate Pad copy.
    const hp = xShape[2]! + pt + pb;
    const wp = xShape[3]! + pl + pr;
    const extentH = hp - sh * (yShape[2]! - 1);
    const extentW = wp - sw * (yShape[3]! - 1);
    const corrAttrs = { dilations: [sh, sw], strides: [1, 1], pads: [pt, pl, pb, pr], group: g.group };
    const gT = b.op("Transpose", [gRaw], { perm: [1, 0, 2, 3] });
    const xT = b.op("Transpose", [x], { perm: [1, 0, 2, 3] });
    let corr: string;
    if (g.group === 1) {
      corr = b.op("Transpose", [b.op("Conv", [xT, gT], corrAttrs)], { perm: [1, 0, 2, 3] });
    } else {
      corr = b.op("Conv", [b.op("Reshape", [xT, b.ints([1, -1, xShape[2]!, xShape[3]!])]), gT], corrAttrs);
    }
    if (extentH !== kh || extentW !== kw) {
      corr = b.op("Slice", [corr, b.ints([0, 0]), b.ints([kh, kw]), b.ints([2, 3])]);
    }
    b.nodes.push({ op: "Reshape", inputs: [corr, b.ints(k.weightDims)], outputs: [out], attrs: {} });
  }

  // input gradient (not needed for the image itself)
  if (x === "x") return;
  // ORT's ConvTranspose runs GEMM + col2im; for the two common cases an ordinary Conv computes the same thing
  // with ORT's faster forward kernels (ORT's profile at batch 32 had a stride-1 depthwise ConvTranspose as the
  // costliest input-gradient op, 187 ms).
  if (sh === 1 && sw === 1 && outPadAlignedSame(xShape, yShape)) {
    if (pointwise) {
      const wT = b.op("Transpose", [`w_${i}`], { perm: [1, 0, 2, 3] });
      addGrad(x, b.op("Conv", [gRaw, wT], { strides: [1, 1], pads: [0, 0, 0, 0], group: 1 }));
      return;
    }
    if (g.group > 1 && kh - 1 - pt >= 0 && kw - 1 - pl >= 0 && kh - 1 - pb >= 0 && kw - 1 - pr >= 0) {
      // depthwise: correlate with the spatially flipped kernel, padding k−1−p on each side
      const flipped = b.op("Slice", [
        `w_${i}`,
        b.ints([-1, -1]),
        b.ints([-kh - 1, -kw - 1]),
        b.ints([2, 3]),
        b.ints([-1, -1]),
      ]);
      const pads = [kh - 1 - pt, kw - 1 - pl, kh - 1 - pb, kw - 1 - pr];
      addGrad(
        x,
        b.op("Conv", [gRaw, flipped], { strides: [1, 1], pads, group: g.group, kernel_shape: [kh, kw] }),
      );
      return;
    }
  }
  const outPadH = xShape[2]! - (sh * (yShape[2]! - 1) + kh - pt - pb);
  const outPadW = xShape[3]! - (sw * (yShape[3]! - 1) + kw - pl - pr);
  const gx = b.op("ConvTranspose", [gRaw, `w_${i}`], {
    kernel_shape: [kh, kw],
    strides: [sh, sw],
    pads: [pt, pl, pb, pr],
    group: g.group,
    output_padding: [outPadH, outPadW],
    dilations: [1, 1],
  });
  addGrad(x, gx);
}

/** A stride-1 convolution whose output keeps the input's spatial size ("same" padding). */
function outPadAlignedSame(xShape: number[], yShape: number[]): boolean {
  return xShape[2] === yShape[2] && xShape[3] === yShape[3];
}
