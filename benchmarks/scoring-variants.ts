import type { Graph, GraphBuilder } from "../src/onnx/onnx-graph.js";
import type { LevelDistance } from "../src/stpm/anomaly-map.js";
import { NORM_EPS } from "../src/stpm/normalize.js";
import { buildScoringGraph, type ScoringGraphOptions } from "../src/stpm/scorer.js";

/**
 * A candidate replacement for the scoring graph's distance, measured by the inference benchmark: the same map,
 * with ½‖t/|t| − s/|s|‖² expanded as ½(t·t/m_t² + s·s/m_s²) − t·s/(m_t·m_s), m = max(|x|, ε). Three channel
 * reductions replace the normalised feature maps, so no per-position norm is broadcast back over the channels
 * (a slow broadcast once ONNX Runtime has moved int8 features to NHWC) and three full-size passes disappear.
 * Measured: no consistent gain, so the product keeps the direct form.
 */
const dotProductDistance: LevelDistance = (b: GraphBuilder, t: string, s: string): string => {
  const eps = b.scalar(NORM_EPS);
  const dot = (p: string, q: string): string =>
    b.op("ReduceSum", [b.op("Mul", [p, q]), b.ints([1])], { keepdims: 1 });
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
  return b.op("Max", [b.op("Sub", [b.op("Mul", [selfTerms, b.scalar(0.5)]), cross]), b.scalar(0)]);
};

export function buildDotProductScoringGraph(
  teacher: Graph,
  student: Graph,
  opts: ScoringGraphOptions,
): Graph {
  return buildScoringGraph(teacher, student, opts, dotProductDistance);
}
