/**
 * Fills the git-ignored folder `.gpu/` with what benchmarks/gpu_infer.py needs on a lent GPU machine, which gets
 * a copy of the working tree but neither `../shared` nor Node:
 *
 * - `frames/NN-kind-name.png`: the 32 bottle test PNGs (900×900) of inference.ts, good and defective kinds
 *   alternately, copied unchanged;
 * - `mobilenet_v2_{teacher,student}.safetensors`: the conv weights and biases of the trained bottle bundle in
 *   ONNX node order (conv{k}.weight / conv{k}.bias), the format torch_nets.load_conv_tensors reads;
 * - `manifest.json`: frame order and sources, the bundle's version, normalisation and threshold, and the conv
 *   FLOPs per frame of teacher + student as stpmd counts them (a cross-check for the Python hook count).
 *
 *   node dist/benchmarks/gpu-prepare.js [--out .gpu] [--bundle out/models/bottle] [--frames 32]
 *
 * Normally run through benchmarks/gpu-prepare.sh, which builds first.
 */
import { chmod, copyFile, mkdir, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { loadBundle } from "../src/bundle/bundle.js";
import { benchFrames, convFlops, convTensors, writeSafetensors } from "./common.js";

const HERE = path.dirname(fileURLToPath(import.meta.url)); // dist/benchmarks
const REPO = path.resolve(HERE, "../..");
const SHARED = process.env.STPMD_SHARED ?? path.resolve(REPO, "../shared");
const BOTTLE = path.join(SHARED, "data/mvtec_ad/bottle");
const SIZE = 256;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      out: { type: "string", default: path.join(REPO, ".gpu") },
      bundle: {
        type: "string",
        default: process.env.STPMD_BENCH_BUNDLE ?? path.join(REPO, "out/models/bottle"),
      },
      frames: { type: "string", default: "32" },
    },
  });
  const out = path.resolve(values.out);
  const log = (s: string): void => {
    process.stderr.write(`[gpu-prepare] ${s}\n`);
  };

  const bundle = await loadBundle(values.bundle);
  log(`bundle ${values.bundle} (${bundle.manifest.model_version})`);
  const frames = await benchFrames(BOTTLE, Number(values.frames));
  if (frames.length < Number(values.frames))
    throw new Error(`only ${frames.length} bottle test images found`);

  await mkdir(out, { recursive: true });
  const framesDir = path.join(out, "frames");
  await rm(framesDir, { recursive: true, force: true });
  await mkdir(framesDir);
  const frameEntries: { file: string; kind: string; source: string }[] = [];
  for (const [i, f] of frames.entries()) {
    const name = `${String(i).padStart(2, "0")}-${f.kind}-${path.basename(f.file)}`;
    await copyFile(f.file, path.join(framesDir, name));
    await chmod(path.join(framesDir, name), 0o644); // the shared copies are read-only and executable
    frameEntries.push({ file: `frames/${name}`, kind: f.kind, source: path.relative(SHARED, f.file) });
  }
  log(`copied ${frameEntries.length} frames to ${framesDir}`);

  const weights = {
    teacher: "mobilenet_v2_teacher.safetensors",
    student: "mobilenet_v2_student.safetensors",
  };
  const teacherConvs = convTensors(bundle.teacher);
  const studentConvs = convTensors(bundle.student);
  await writeSafetensors(path.join(out, weights.teacher), teacherConvs);
  await writeSafetensors(path.join(out, weights.student), studentConvs);
  log(`wrote ${teacherConvs.length} + ${studentConvs.length} conv tensors (node order)`);

  const manifest = {
    written_by: "benchmarks/gpu-prepare.ts",
    created_at: new Date().toISOString(),
    shared: SHARED,
    frames: frameEntries,
    mobilenet_v2: {
      bundle: path.relative(REPO, path.resolve(values.bundle)),
      model_version: bundle.manifest.model_version,
      teacher_source: bundle.manifest.teacher.source_path,
      mean: bundle.manifest.input.mean,
      std: bundle.manifest.input.std,
      threshold: bundle.manifest.threshold,
      weights,
      conv_count: {
        teacher: bundle.teacher.nodes.filter((n) => n.op === "Conv").length,
        student: bundle.student.nodes.filter((n) => n.op === "Conv").length,
      },
      conv_flops_per_frame: convFlops(bundle.teacher, SIZE) + convFlops(bundle.student, SIZE),
      input_size: SIZE,
    },
  };
  await writeFile(path.join(out, "manifest.json"), `${JSON.stringify(manifest, null, 2)}\n`);
  let bytes = 0;
  for (const f of [...frameEntries.map((e) => e.file), weights.teacher, weights.student, "manifest.json"]) {
    bytes += (await stat(path.join(out, f))).size;
  }
  log(`wrote ${out}/manifest.json; ${(bytes / 2 ** 20).toFixed(1)} MiB in all`);
}

await main();
