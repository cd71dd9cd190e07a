/**
 * The GPU proof of issue #12: stpmd's own scoring path — the Scorer, the fused teacher–student graph the daemon
 * runs — on each ONNX Runtime execution provider, checked against the CPU on the same frames and timed at batch 1,
 * 8 and 32. Two networks: the trained MobileNetV2 bottle bundle and a ResNet-18 pyramid (the paper's teacher; seeded
 * weights, built here so that nothing large has to travel). Prepared by benchmarks/gpu-ort-prepare.sh, run on a
 * GPU machine by benchmarks/gpu-ort.sh, and runnable anywhere:
 *
 *   node dist/benchmarks/gpu-ort.js --out DIR [--bundle DIR] [--frames FILE] [--providers cpu,cuda,webgpu]
 *        [--batches 1,8,32] [--seconds 2]
 *
 * --frames: N×256×256×3 packed RGB (the prepare script writes the 32 bottle test frames of inference.ts resized
 * as in training); without it, seeded random frames. A provider that cannot create a session is reported with
 * ONNX Runtime's own first line of error, never silently replaced by the CPU (each session gets that provider
 * alone). Agreement: the largest |Δscore| relative to the CPU's score and the largest |Δmap| relative to the CPU
 * map's maximum, over all frames (scored at batch 8). Speed: median milliseconds per batch after 3 warm-up runs.
 */
import { execFileSync } from "node:child_process";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import path from "node:path";
import { parseArgs } from "node:util";
import { loadBundle } from "../src/bundle/bundle.js";
import type { Graph } from "../src/onnx/onnx-graph.js";
import { Random } from "../src/stpm/random.js";
import { Scorer } from "../src/stpm/scorer.js";
import { resnet18Pyramid } from "./resnet18-pyramid.js";

// This file imports only the bundle loader and the Scorer, not benchmarks/common.ts or the doctor (whose median,
// nvidia-smi query and provider entries it repeats in a few lines): their imports — sharp, the config loader —
// would have to travel to the GPU machine too (benchmarks/gpu-ort-prepare.sh packs only what this needs).

const SIZE = 256;
const IMAGENET = { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };

interface Model {
  name: string;
  teacher: Graph;
  student: Graph;
  mean: number[];
  std: number[];
}

interface ProviderResult {
  provider: string;
  works: boolean;
  error?: string;
  /** Largest |score − CPU score| / CPU score over the frames. */
  max_rel_score_delta?: number;
  /** Largest |map − CPU map| / max(CPU map) over all pixels of all frames. */
  max_rel_map_delta?: number;
  /** batch → median ms per batch and frames per second. */
  timing?: Record<string, { ms: number; frames_per_s: number; runs: number }>;
}

const median = (v: number[]): number => {
  const s = [...v].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

function providerEntry(name: string): Parameters<typeof Scorer.create>[3] {
  if (name === "cuda" || name === "tensorrt") return { providers: [{ name, deviceId: 0 }] };
  return { providers: [name] };
}

async function scoreAll(scorer: Scorer, frames: Uint8Array, n: number) {
  const hw3 = SIZE * SIZE * 3;
  const scores: number[] = [];
  const maps: Float32Array[] = [];
  for (let i = 0; i < n; i += 8) {
    const count = Math.min(8, n - i);
    const r = await scorer.score(frames.subarray(i * hw3, (i + count) * hw3), count);
    for (let j = 0; j < count; j++) {
      scores.push(r.scores[j]!);
      maps.push(r.maps.subarray(j * SIZE * SIZE, (j + 1) * SIZE * SIZE));
    }
  }
  return { scores, maps };
}

async function timeBatch(scorer: Scorer, frames: Uint8Array, n: number, batch: number, seconds: number) {
  const hw3 = SIZE * SIZE * 3;
  const packed = new Uint8Array(batch * hw3);
  for (let j = 0; j < batch; j++) packed.set(frames.subarray((j % n) * hw3, ((j % n) + 1) * hw3), j * hw3);
  for (let w = 0; w < 3; w++) await scorer.score(packed, batch);
  const ms: number[] = [];
  const start = performance.now();
  while (performance.now() - start < seconds * 1000 || ms.length < 5) {
    const t = performance.now();
    await scorer.score(packed, batch);
    ms.push(performance.now() - t);
  }
  const m = median(ms);
  return { ms: Number(m.toFixed(3)), frames_per_s: Number(((batch * 1000) / m).toFixed(1)), runs: ms.length };
}

async function main(): Promise<void> {
  const { values: a } = parseArgs({
    options: {
      out: { type: "string" },
      bundle: { type: "string" },
      frames: { type: "string" },
      providers: { type: "string", default: "cpu,cuda,webgpu" },
      batches: { type: "string", default: "1,8,32" },
      seconds: { type: "string", default: "2" },
    },
  });
  if (!a.out) throw new Error("--out DIR is required");
  const providers = a.providers!.split(",");
  if (providers[0] !== "cpu") providers.unshift("cpu"); // the reference comes first
  const batches = a.batches!.split(",").map(Number);
  const seconds = Number(a.seconds);
  let frames: Uint8Array;
  if (a.frames) frames = new Uint8Array(await readFile(a.frames));
  else {
    const rng = new Random(7);
    frames = new Uint8Array(8 * SIZE * SIZE * 3).map(() => Math.floor(rng.next() * 256));
  }
  const n = frames.length / (SIZE * SIZE * 3);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${a.frames}: not a whole number of 256×256 RGB frames`);

  const models: Model[] = [];
  if (a.bundle) {
    const bundle = await loadBundle(a.bundle);
    const { width, height, mean, std } = bundle.manifest.input;
    if (width !== SIZE || height !== SIZE)
      throw new Error(`${a.bundle}: input ${width}×${height}, expected 256×256`);
    models.push({
      name: `mobilenet_v2 (${bundle.manifest.model_version})`,
      teacher: bundle.teacher,
      student: bundle.student,
      mean,
      std,
    });
  }
  models.push({
    name: "resnet18 (seeded)",
    teacher: resnet18Pyramid(1),
    student: resnet18Pyramid(2),
    ...IMAGENET,
  });

  const report: Record<string, unknown> = {
    when: new Date().toISOString(),
    onnxruntime_node: (createRequire(import.meta.url)("onnxruntime-node/package.json") as { version: string })
      .version,
    gpus: nvidiaSmi(),
    frames: a.frames ? `${n} frames from ${a.frames}` : `${n} seeded random frames`,
    batches,
    models: {} as Record<string, ProviderResult[]>,
  };
  await mkdir(a.out, { recursive: true });
  // written after every provider, so that a provider that takes the process down leaves the others' results
  const save = async () => {
    await writeFile(path.join(a.out!, "gpu-ort.json"), `${JSON.stringify(report, null, 1)}\n`);
    await writeFile(path.join(a.out!, "gpu-ort.md"), markdown(report, batches));
  };
  for (const model of models) {
    const results: ProviderResult[] = [];
    (report.models as Record<string, ProviderResult[]>)[model.name] = results;
    let reference: Awaited<ReturnType<typeof scoreAll>> | undefined;
    for (const provider of providers) {
      let scorer: Scorer;
      try {
        scorer = await Scorer.create(
          model.teacher,
          model.student,
          { height: SIZE, width: SIZE, mean: model.mean, std: model.std },
          providerEntry(provider),
        );
      } catch (err) {
        const error = (err instanceof Error ? err.message : String(err)).split("\n")[0]!;
        results.push({ provider, works: false, error });
        process.stderr.write(`${model.name} ${provider}: no session: ${error}\n`);
        await save();
        continue;
      }
      try {
        const got = await scoreAll(scorer, frames, n);
        const row: ProviderResult = { provider, works: true, timing: {} };
        if (provider === "cpu") reference = got;
        else if (reference) {
          let ds = 0;
          let dm = 0;
          got.scores.forEach((s, i) => {
            ds = Math.max(ds, Math.abs(s - reference!.scores[i]!) / Math.abs(reference!.scores[i]!));
            const ref = reference!.maps[i]!;
            let peak = 0;
            for (const v of ref) peak = Math.max(peak, v);
            const m = got.maps[i]!;
            for (let p = 0; p < m.length; p++) dm = Math.max(dm, Math.abs(m[p]! - ref[p]!) / peak);
          });
          row.max_rel_score_delta = ds;
          row.max_rel_map_delta = dm;
        }
        for (const batch of batches)
          row.timing![String(batch)] = await timeBatch(scorer, frames, n, batch, seconds);
        results.push(row);
        process.stderr.write(`${model.name} ${provider}: ${JSON.stringify(row)}\n`);
        await save();
      } finally {
        await scorer.release();
      }
    }
  }
  process.stdout.write(markdown(report, batches));
}

function nvidiaSmi(): string[] {
  try {
    return execFileSync(
      "nvidia-smi",
      ["--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
      {
        encoding: "utf8",
      },
    )
      .trim()
      .split("\n");
  } catch {
    return [];
  }
}

function markdown(report: Record<string, unknown>, batches: number[]): string {
  const lines = [
    `# stpmd's Scorer per execution provider (${report.when})`,
    "",
    `onnxruntime-node ${report.onnxruntime_node}; GPUs: ${(report.gpus as string[]).join("; ") || "none"}; ${report.frames}.`,
    "",
    `| model | provider | ${batches.map((b) => `batch ${b}: ms (frames/s)`).join(" | ")} | max rel. Δscore vs cpu | max rel. Δmap vs cpu |`,
    `|---|---|${batches.map(() => "---|").join("")}---|---|`,
  ];
  for (const [model, rows] of Object.entries(report.models as Record<string, ProviderResult[]>)) {
    for (const r of rows) {
      if (!r.works) {
        lines.push(
          `| ${model} | ${r.provider} | ${batches.map(() => "—").join(" | ")} | no session: ${r.error} | |`,
        );
        continue;
      }
      const t = batches.map((b) => `${r.timing![String(b)]!.ms} (${r.timing![String(b)]!.frames_per_s})`);
      const d = (x?: number) => (x === undefined ? "—" : x.toExponential(1));
      lines.push(
        `| ${model} | ${r.provider} | ${t.join(" | ")} | ${d(r.max_rel_score_delta)} | ${d(r.max_rel_map_delta)} |`,
      );
    }
  }
  return `${lines.join("\n")}\n`;
}

await main();
