import type { GraphBuilder } from "../onnx/onnx-graph.js";
import type { Size } from "./geometry.js";
import { NORM_EPS } from "./normalize.js";

/**
 * STPM's anomaly map as ONNX nodes, from the teacher's and the student's feature pyramids: per level ½‖t̂ − ŝ‖²
 * over channels, bilinear upsampling to the model input, the product over levels; the image score is the map's
 * maximum (NaN when any pixel is NaN or infinite). The deployed scoring graph (scorer.ts) and the per-epoch validation graph of training
 * (train/validation.ts) both build it here, so the epoch training keeps is picked by the very map the daemon judges
 * frames with.
 */

/** Per-position teacher–student distance of one pyramid level: N×C×h×w features in, N×1×h×w out. */
export type LevelDistance = (b: GraphBuilder, teacher: string, student: string) => string;

/** STPM's distance: ½‖t/|t| − s/|s|‖² over channels, with |x| clamped to ε as F.normalize does. */
export const normalisedDistance: LevelDistance = (b, t, s) => {
  const eps = b.scalar(NORM_EPS);
  const normalise = (f: string): string => {
    const sq = b.op("ReduceSum", [b.op("Mul", [f, f]), b.ints([1])], { keepdims: 1 });
    return b.op("Div", [f, b.op("Max", [b.op("Sqrt", [sq]), eps])]);
  };
  const d = b.op("Sub", [normalise(t), normalise(s)]);
  return b.op("Mul", [b.op("ReduceSum", [b.op("Mul", [d, d]), b.ints([1])], { keepdims: 1 }), b.scalar(0.5)]);
};

/** One pyramid level's features: tensor names of N×C×h×w teacher and student outputs. */
export interface LevelFeatures {
  teacher: string;
  student: string;
}

/**
 * Adds the anomaly map (N×H×W, `size` being the model input) and the image scores (N) of `levels` to `b`, under
 * the tensor names `names.map` and `names.score`. With a context margin (geometry.ts's contextInput) the network
 * is fed H+2·margin × W+2·margin: the map is upsampled to that and cropped back to H×W before the score, so the
 * margin's context shapes the map and never its maximum.
 */
export function anomalyMapNodes(
  b: GraphBuilder,
  levels: LevelFeatures[],
  size: Size & { margin?: number },
  names: { map: string; score: string },
  distance: LevelDistance = normalisedDistance,
): void {
  const m = size.margin ?? 0;
  const sizes = b.ints([0, 1, size.height + 2 * m, size.width + 2 * m]);
  const levelMaps = levels.map(({ teacher, student }) => {
    const dist = distance(b, teacher, student);
    // Resize's sizes needs the batch: take it from the distance map's own shape
    const batch = b.op("Slice", [b.op("Shape", [dist]), b.ints([0]), b.ints([2])]);
    const target = b.op("Concat", [batch, b.op("Slice", [sizes, b.ints([2]), b.ints([4])])], { axis: 0 });
    // bilinear, align_corners=False (half_pixel), as F.interpolate in the authors' code
    return b.op("Resize", [dist, "", "", target], {
      mode: "linear",
      coordinate_transformation_mode: "half_pixel",
    });
  });
  let product = levelMaps[0]!;
  for (const level of levelMaps.slice(1)) product = b.op("Mul", [product, level]);
  if (m > 0) {
    product = b.op("Slice", [
      product,
      b.ints([m, m]),
      b.ints([m + size.height, m + size.width]),
      b.ints([2, 3]),
    ]);
  }
  b.nodes.push({ op: "Squeeze", inputs: [product, b.ints([1])], outputs: [names.map], attrs: {} });
  // The score is the map's maximum, and not a number when any pixel is not: ORT's ReduceMax skips a NaN unless it
  // comes first (measured on 1.x CPU: [1, NaN, 3, 2] → 3, [NaN, 1, 2, 3] → NaN), which would let a map with NaN
  // pixels pass as a finite score. Adding 0 × the map's sum carries any NaN or infinity into the score (0 × ∞ is
  // NaN) and leaves a finite maximum as it is.
  const max = b.op("ReduceMax", [names.map], { axes: [1, 2], keepdims: 0 });
  const sum = b.op("ReduceSum", [names.map, b.ints([1, 2])], { keepdims: 0 });
  b.nodes.push({
    op: "Add",
    inputs: [max, b.op("Mul", [sum, b.scalar(0)])],
    outputs: [names.score],
    attrs: {},
  });
}
