import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { scoreStats, writeBundle } from "../../src/bundle/bundle.js";
import { randomTeacher } from "../../src/bundle/random-teacher.js";
import type { Logger } from "../../src/core/log.js";
import { encodeModel } from "../../src/onnx/onnx-graph.js";
import { Random } from "../../src/stpm/random.js";
import { foldedStudentGraph, initStudent } from "../../src/train/student.js";
import { studentLayout } from "../../src/train/training-graph.js";

/** The manifest fields of a 32×32 test bundle with model_version `version`. */
export function manifestFields(version: string) {
  return {
    model_version: version,
    created_at: new Date().toISOString(),
    input: {
      name: "frames",
      height: 32,
      width: 32,
      mean: [0.5, 0.5, 0.5],
      std: [0.5, 0.5, 0.5],
      normalisation_source: "metadata",
    },
    outputs: ["feat_s4", "feat_s8", "feat_s16"],
    teacher_source_path: "teacher.onnx",
    threshold: 0.5,
    threshold_rule: "test",
    validation_scores: [0.1, 0.2],
    score_stats: scoreStats([0.1, 0.2]),
    training: {},
  };
}

/** Writes a tiny 32×32 bundle (random teacher, its initial student) to `dir`. */
export async function writeTinyBundle(dir: string, version = "v1", logger?: Logger): Promise<void> {
  const teacher = randomTeacher(1, 4);
  const layout = studentLayout(teacher, 32, 32);
  const student = foldedStudentGraph(teacher, layout, initStudent(layout, new Random(1)));
  await writeBundle(dir, encodeModel(teacher), encodeModel(student), manifestFields(version), logger);
}

/** dist/test/helpers/tiny-bundle.js → dist/test/helpers/killed-bundle-write.js */
const killedWriter = fileURLToPath(new URL("./killed-bundle-write.js", import.meta.url));

/**
 * Writes tiny bundle `version` to `dir` in a process SIGKILLed between the write's two renames (see
 * killed-bundle-write.ts); resolves with its pid.
 */
export function killedWrite(dir: string, version: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = execFile(process.execPath, [killedWriter, dir, version], (err) => {
      if (child.signalCode === "SIGKILL") resolve(child.pid!);
      else reject(err ?? new Error("the writer was not killed: it finished"));
    });
  });
}
