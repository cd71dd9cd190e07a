import type { Graph, GraphNode, Tensor } from "./onnx-graph.js";

/** Ops a teacher may contain: the student is rebuilt (and differentiated) op by op, so the set is closed. */
export const SUPPORTED_TEACHER_OPS = ["Conv", "Relu", "Clip", "Add", "MaxPool", "Pad", "Identity"] as const;

/** Static sizes of every tensor for one input size; dimension 0 (the batch) is carried as given. */
export type ShapeMap = Map<string, number[]>;

export interface ConvGeometry {
  kernel: [number, number];
  strides: [number, number];
  /** [top, left, bottom, right] as in ONNX `pads`. */
  pads: [number, number, number, number];
  group: number;
}

function intsAttr(node: GraphNode, name: string, fallback: number[]): number[] {
  const v = node.attrs[name];
  return Array.isArray(v) ? v : fallback;
}

export function convGeometry(node: GraphNode, weightDims: number[]): ConvGeometry {
  const kernel = intsAttr(node, "kernel_shape", weightDims.slice(2)) as [number, number];
  const strides = intsAttr(node, "strides", [1, 1]) as [number, number];
  const pads = intsAttr(node, "pads", [0, 0, 0, 0]) as [number, number, number, number];
  const dil = intsAttr(node, "dilations", [1, 1]);
  if (dil.some((d) => d !== 1))
    throw new Error(`Conv ${node.outputs[0]}: dilated convolutions are not supported`);
  if (node.attrs.auto_pad && node.attrs.auto_pad !== "NOTSET") {
    throw new Error(`Conv ${node.outputs[0]}: auto_pad is not supported; export with explicit pads`);
  }
  const group = typeof node.attrs.group === "number" ? node.attrs.group : 1;
  return { kernel, strides, pads, group };
}

function pooledSize(
  size: number,
  k: number,
  s: number,
  padBegin: number,
  padEnd: number,
  ceil: boolean,
): number {
  const span = size + padBegin + padEnd - k;
  return (ceil ? Math.ceil(span / s) : Math.floor(span / s)) + 1;
}

function constantOf(graph: Graph, name: string): Tensor | undefined {
  return graph.initializers.get(name);
}

/**
 * Propagates sizes from the graph input through every node. Throws on ops outside SUPPORTED_TEACHER_OPS, naming
 * the op, so an unsupported teacher is rejected before any training starts.
 */
export function inferShapes(graph: Graph, inputDims: number[]): ShapeMap {
  const shapes: ShapeMap = new Map();
  shapes.set(graph.inputs[0]!.name, inputDims);
  for (const [name, t] of graph.initializers) shapes.set(name, t.dims);
  for (const node of graph.nodes) {
    const x = shapes.get(node.inputs[0]!);
    if (!x)
      throw new Error(`${node.op} node producing ${node.outputs[0]} reads unknown tensor ${node.inputs[0]}`);
    shapes.set(node.outputs[0]!, nodeOutputShape(graph, node, x, shapes));
  }
  return shapes;
}

function nodeOutputShape(graph: Graph, node: GraphNode, x: number[], shapes: ShapeMap): number[] {
  switch (node.op) {
    case "Conv": {
      const w = shapes.get(node.inputs[1]!);
      if (!w || !graph.initializers.has(node.inputs[1]!)) {
        throw new Error(`Conv ${node.outputs[0]}: weights must be a constant initializer`);
      }
      const g = convGeometry(node, w);
      if (x[1]! !== w[1]! * g.group) throw new Error(`Conv ${node.outputs[0]}: channel mismatch`);
      if (g.group !== 1 && !(g.group === x[1] && w[0] === x[1])) {
        throw new Error(
          `Conv ${node.outputs[0]}: only plain (group 1) and depthwise convolutions are supported`,
        );
      }
      return [
        x[0]!,
        w[0]!,
        pooledSize(x[2]!, g.kernel[0], g.strides[0], g.pads[0], g.pads[2], false),
        pooledSize(x[3]!, g.kernel[1], g.strides[1], g.pads[1], g.pads[3], false),
      ];
    }
    case "MaxPool": {
      const k = intsAttr(node, "kernel_shape", []);
      const s = intsAttr(node, "strides", [1, 1]);
      const p = intsAttr(node, "pads", [0, 0, 0, 0]);
      const ceil = node.attrs.ceil_mode === 1;
      if (intsAttr(node, "dilations", [1, 1]).some((d) => d !== 1)) {
        throw new Error(`MaxPool ${node.outputs[0]}: dilations are not supported`);
      }
      return [
        x[0]!,
        x[1]!,
        pooledSize(x[2]!, k[0]!, s[0]!, p[0]!, p[2]!, ceil),
        pooledSize(x[3]!, k[1]!, s[1]!, p[1]!, p[3]!, ceil),
      ];
    }
    case "Pad": {
      const pads = padAmounts(graph, node);
      return x.map((d, i) => d + pads[i]! + pads[i + x.length]!);
    }
    case "Add": {
      const y = shapes.get(node.inputs[1]!);
      if (!y || y.join() !== x.join())
        throw new Error(`Add ${node.outputs[0]}: operands must have equal shapes`);
      return x;
    }
    case "Relu":
    case "Clip":
    case "Identity":
      return x;
    default:
      throw new Error(
        `op ${node.op} (node producing ${node.outputs[0]}) is not supported; supported ops: ${SUPPORTED_TEACHER_OPS.join(", ")}`,
      );
  }
}

/** Constant zero padding amounts of a Pad node, as ONNX orders them (all begins, then all ends). */
export function padAmounts(graph: Graph, node: GraphNode): number[] {
  const mode = node.attrs.mode ?? "constant";
  if (mode !== "constant") throw new Error(`Pad ${node.outputs[0]}: only constant padding is supported`);
  const value = node.inputs[2] ? constantOf(graph, node.inputs[2]) : undefined;
  if (value && value.data[0] !== 0 && value.data[0] !== 0n) {
    throw new Error(`Pad ${node.outputs[0]}: only zero padding is supported`);
  }
  const pads = constantOf(graph, node.inputs[1] ?? "");
  if (!pads) throw new Error(`Pad ${node.outputs[0]}: pads must be a constant`);
  return Array.from(pads.data as ArrayLike<number | bigint>, (v) => Number(v));
}

/** Clip bounds from inputs (opset ≥ 11) or attributes (older opsets). */
export function clipBounds(graph: Graph, node: GraphNode): { min: number; max: number } {
  const read = (idx: number, attr: string, fallback: number): number => {
    const name = node.inputs[idx];
    if (name) {
      const t = constantOf(graph, name);
      if (!t) throw new Error(`Clip ${node.outputs[0]}: bounds must be constants`);
      return Number(t.data[0]);
    }
    const a = node.attrs[attr];
    return a && typeof a === "object" && "float" in a ? a.float : fallback;
  };
  return { min: read(1, "min", -3.4e38), max: read(2, "max", 3.4e38) };
}
