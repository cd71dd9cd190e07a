/**
 * What a context margin costs per frame (issue 19, item 1): the scoring graph of the shared teacher and a student
 * of its architecture at `--size`² with margins 0, 16, 32, one intra-op thread, scored in interleaved rounds so
 * that a busy machine's load falls on every margin alike; reports the median ms per frame and the ratio to margin 0
 * beside the input area's ratio ((size + 2m)² / size²).
 *
 *   node dist/benchmarks/margin-cost.js [--size 256] [--rounds 7] [--batch 8]
 */
import { readFile } from "node:fs/promises";
import { performance } from "node:perf_hooks";
import { decodeModel } from "../src/onnx/onnx-graph.js";
import { Random } from "../src/stpm/random.js";
import { Scorer } from "../src/stpm/scorer.js";
import { foldedStudentGraph, initStudent } from "../src/train/student.js";
import { studentLayout } from "../src/train/training-graph.js";
import { arg, median, SHARED_TEACHER as TEACHER } from "./common.js";

const SIZE = Number(arg("size", "256"));
const ROUNDS = Number(arg("rounds", "7"));
const BATCH = Number(arg("batch", "8"));
const MARGINS = [0, 16, 32];

const teacher = decodeModel(new Uint8Array(await readFile(TEACHER)));
const norm = { mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5] };
const rng = new Random(7);
const scorers = await Promise.all(
  MARGINS.map(async (m) => {
    const layout = studentLayout(teacher, SIZE + 2 * m, SIZE + 2 * m);
    const student = foldedStudentGraph(teacher, layout, initStudent(layout, new Random(1)));
    const scorer = await Scorer.create(
      teacher,
      student,
      { height: SIZE, width: SIZE, margin: m, ...norm },
      { intraOpThreads: 1 },
    );
    const frames = new Uint8Array(BATCH * (SIZE + 2 * m) ** 2 * 3).map(() => Math.floor(rng.next() * 256));
    await scorer.score(frames, BATCH); // warm-up
    return { m, scorer, frames, times: [] as number[] };
  }),
);
for (let r = 0; r < ROUNDS; r++) {
  for (const s of scorers) {
    const t0 = performance.now();
    await s.scorer.score(s.frames, BATCH);
    s.times.push((performance.now() - t0) / BATCH);
  }
}
const base = median(scorers[0]!.times);
for (const s of scorers) {
  const ms = median(s.times);
  console.log(
    JSON.stringify({
      size: SIZE,
      margin: s.m,
      ms_per_frame: Number(ms.toFixed(1)),
      ratio: Number((ms / base).toFixed(3)),
      area_ratio: Number((((SIZE + 2 * s.m) / SIZE) ** 2).toFixed(3)),
    }),
  );
  await s.scorer.release();
}
