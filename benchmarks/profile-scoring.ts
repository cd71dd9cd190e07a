/**
 * Where the fused scoring graph spends its time, from ONNX Runtime's own profiler: per-frame kernel time of the
 * teacher, the student, and each op type of the rest (preprocessing and STPM's maths), plus the costliest nodes.
 * Profiling adds overhead to small ops, so read the split, not the total.
 *
 *   node dist/benchmarks/profile-scoring.js [--bundle out/models/bottle] [--batch 8] [--runs 10]
 */
import { readFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { loadBundle, scoringOptions } from "../src/bundle/bundle.js";
import { encodeModel } from "../src/onnx/onnx-graph.js";
import { ort } from "../src/onnx/ort.js";
import { buildScoringGraph } from "../src/stpm/scorer.js";

interface ProfileEvent {
  cat: string;
  name: string;
  dur: number;
  args: { op_name?: string };
}

const { values } = parseArgs({
  options: {
    bundle: { type: "string", default: "out/models/bottle" },
    batch: { type: "string", default: "8" },
    runs: { type: "string", default: "10" },
  },
});
const batch = Number(values.batch);
const runs = Number(values.runs);
const bundle = await loadBundle(values.bundle);
const options = scoringOptions(bundle.manifest);
// the graph is fed each frame with the bundle's context margin around it
const height = options.height + 2 * options.margin;
const width = options.width + 2 * options.margin;
const prefix = path.join(os.tmpdir(), `stpmd-profile-${process.pid}`);
const session = await ort.InferenceSession.create(
  encodeModel(buildScoringGraph(bundle.teacher, bundle.student, options)),
  { enableProfiling: true, profileFilePrefix: prefix, logSeverityLevel: 3, graphOptimizationLevel: "all" },
);
// a deterministic, textured input: the values do not change the work done
const frames = new Uint8Array(batch * height * width * 3).map((_, i) => (i * 7919) & 255);
const feed = { frames: new ort.Tensor("uint8", frames, [batch, height, width, 3]) };
for (let i = 0; i < runs; i++) await session.run(feed);
session.endProfiling();
await session.release();
const file = (await import("node:fs"))
  .readdirSync(os.tmpdir())
  .find((f) => f.startsWith(path.basename(prefix)));
if (!file) throw new Error(`ONNX Runtime wrote no profile next to ${prefix}`);
const profile = path.join(os.tmpdir(), file);
const events = (JSON.parse(await readFile(profile, "utf8")) as ProfileEvent[]).filter(
  (e) => e.cat === "Node" && e.name.endsWith("_kernel_time"),
);
await rm(profile);

const perFrameMs = (us: number): number => us / runs / batch / 1000;
// ORT's int8 fusions rename nodes, so the networks' quantized ops are told by type, not by name prefix
const NETWORK_OPS = new Set(["QLinearConv", "QLinearAdd", "NhwcMaxPool"]);
const groups = new Map<string, number>();
const nodes = new Map<string, number>();
for (const e of events) {
  const node = e.name.replace(/_kernel_time$/, "");
  const op = e.args.op_name ?? "?";
  const group = node.startsWith("teacher/")
    ? "teacher"
    : node.startsWith("student/")
      ? "student"
      : NETWORK_OPS.has(op)
        ? `teacher + student: ${op}`
        : `rest: ${op}`;
  groups.set(group, (groups.get(group) ?? 0) + e.dur);
  if (group.startsWith("rest")) nodes.set(node, (nodes.get(node) ?? 0) + e.dur);
}
const total = [...groups.values()].reduce((a, b) => a + b, 0);
console.log(
  `${values.bundle} (${bundle.manifest.model_version}), batch ${batch}, ${runs} runs; ms per frame`,
);
console.log("| part | ms/frame | share |\n|---|---:|---:|");
for (const [group, us] of [...groups].sort((a, b) => b[1] - a[1])) {
  console.log(`| ${group} | ${perFrameMs(us).toFixed(3)} | ${((100 * us) / total).toFixed(1)} % |`);
}
console.log(`| total | ${perFrameMs(total).toFixed(3)} | |\n\ncostliest nodes outside the two networks:`);
for (const [node, us] of [...nodes].sort((a, b) => b[1] - a[1]).slice(0, 8)) {
  console.log(`  ${node}: ${perFrameMs(us).toFixed(3)} ms/frame`);
}
