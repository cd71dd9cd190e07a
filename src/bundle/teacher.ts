import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { errorMessage, StpmdError } from "../core/errors.js";
import { decodeModel, type Graph } from "../onnx/onnx-graph.js";
import { inferShapes } from "../onnx/shapes.js";

/** ImageNet statistics: torchvision teachers expect them when the ONNX metadata names none. */
export const IMAGENET_MEAN = [0.485, 0.456, 0.406];
export const IMAGENET_STD = [0.229, 0.224, 0.225];

export interface Normalisation {
  mean: number[];
  std: number[];
  /** "metadata" when read from the teacher's ONNX metadata_props, "imagenet-default" otherwise. */
  source: "metadata" | "imagenet-default";
}

export interface Teacher {
  file: string;
  bytes: Uint8Array;
  sha256: string;
  graph: Graph;
  normalisation: Normalisation;
}

export function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

function parseTriple(value: string | undefined): number[] | undefined {
  if (!value) return undefined;
  const parts = value.split(",").map((v) => Number(v.trim()));
  return parts.length === 3 && parts.every((v) => Number.isFinite(v)) ? parts : undefined;
}

export function normalisationOf(graph: Graph): Normalisation {
  const mean = parseTriple(graph.metadata.input_mean);
  const std = parseTriple(graph.metadata.input_std);
  if (mean && std) return { mean, std, source: "metadata" };
  return { mean: IMAGENET_MEAN, std: IMAGENET_STD, source: "imagenet-default" };
}

/**
 * Checks that a graph is usable as an STPM teacher: one image input (N×3×H×W), exactly three 4-D feature
 * outputs, only ops the student can be trained with. `probeSize` is the input size used for the shape check.
 */
export function validateTeacherGraph(graph: Graph, file: string, probeSize = 256): void {
  if (graph.inputs.length !== 1) {
    throw new StpmdError(
      "ERR_TEACHER_INVALID",
      `${file}: a teacher needs exactly one input, found ${graph.inputs.length}`,
    );
  }
  const input = graph.inputs[0]!;
  if (input.dims.length !== 4 || (typeof input.dims[1] === "number" && input.dims[1] !== 3)) {
    throw new StpmdError(
      "ERR_TEACHER_INVALID",
      `${file}: input ${input.name} must be N×3×H×W, found [${input.dims.join(", ")}]`,
    );
  }
  if (graph.outputs.length !== 3) {
    throw new StpmdError(
      "ERR_TEACHER_INVALID",
      `${file}: a teacher needs exactly three feature outputs (strides 4, 8, 16), found ${graph.outputs.length}`,
    );
  }
  let shapes: Map<string, number[]>;
  try {
    shapes = inferShapes(graph, [1, 3, probeSize, probeSize]);
  } catch (err) {
    throw new StpmdError("ERR_TEACHER_UNSUPPORTED_OP", `${file}: ${errorMessage(err)}`);
  }
  for (const out of graph.outputs) {
    const dims = shapes.get(out.name);
    if (dims?.length !== 4) {
      throw new StpmdError("ERR_TEACHER_INVALID", `${file}: output ${out.name} is not a 4-D feature map`);
    }
  }
}

export async function loadTeacher(file: string): Promise<Teacher> {
  let bytes: Uint8Array;
  try {
    bytes = new Uint8Array(await readFile(file));
  } catch (err) {
    throw new StpmdError("ERR_INPUT_MISSING", `${file}: teacher ONNX cannot be read (${errorMessage(err)})`);
  }
  let graph: Graph;
  try {
    graph = decodeModel(bytes);
  } catch (err) {
    throw new StpmdError("ERR_TEACHER_INVALID", `${file}: not a valid ONNX model (${errorMessage(err)})`);
  }
  validateTeacherGraph(graph, file);
  return { file, bytes, sha256: sha256(bytes), graph, normalisation: normalisationOf(graph) };
}
