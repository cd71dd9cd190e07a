import { execFile, spawn } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { promisify } from "node:util";
import mqtt from "mqtt";
import { listImages } from "../src/data/images.js";
import { encodeModel, type Graph, int64Tensor } from "../src/onnx/onnx-graph.js";
import { createSession, ort } from "../src/onnx/ort.js";
import { convGeometry, inferShapes } from "../src/onnx/shapes.js";
import { Random } from "../src/stpm/random.js";

/** Helpers shared by the benchmark scripts: statistics, machine state, child processes, FLOP counts, peak compute. */

export function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** The value at rank ⌊q·n⌋ of sorted values (nearest rank, no interpolation); NaN without any. */
export function quantileOf(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

/** Peak resident set size of this process (VmHWM), MiB. */
export function peakRssMib(): number {
  const line = readFileSync("/proc/self/status", "utf8")
    .split("\n")
    .find((l) => l.startsWith("VmHWM:"));
  return line ? Number(line.split(/\s+/)[1]) / 1024 : Number.NaN;
}

/** VmRSS of process `pid` ("self" for this one) in kB; NaN once it is gone. */
export function rssKbOf(pid: number | "self"): number {
  try {
    const line = readFileSync(`/proc/${pid}/status`, "utf8")
      .split("\n")
      .find((l) => l.startsWith("VmRSS:"));
    return line ? Number(line.split(/\s+/)[1]) : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

/** Pids of this process's cameras' capture processes (src/capture/capture-process.ts). */
export function captureProcessPids(): number[] {
  const pids: number[] = [];
  for (const task of readdirSync("/proc/self/task")) {
    let children = "";
    try {
      children = readFileSync(`/proc/self/task/${task}/children`, "utf8");
    } catch {
      continue;
    }
    for (const pid of children.split(" ").filter(Boolean).map(Number)) {
      try {
        if (readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("capture-process.js")) pids.push(pid);
      } catch {
        // it just exited
      }
    }
  }
  return pids;
}

/** Clock ticks per second of /proc's utime and stime (USER_HZ: 100 on Linux). */
const USER_HZ = 100;

/**
 * CPU time (user + system, ms) and niceness of a process or thread from its /proc stat file (`/proc/<pid>/stat`,
 * `/proc/self/task/<tid>/stat`); undefined once it is gone.
 */
export function procStat(file: string): { cpuMs: number; nice: number } | undefined {
  try {
    const stat = readFileSync(file, "utf8");
    // the fields after the command's ")", from field 3 (state) on: utime is 14, stime 15, nice 19
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return { cpuMs: ((Number(f[11]) + Number(f[12])) * 1000) / USER_HZ, nice: Number(f[16]) };
  } catch {
    return undefined;
  }
}

/** CPU ms this process's main thread has used so far (its tid is the pid). */
export function mainThreadCpuMs(): number {
  return procStat(`/proc/self/task/${process.pid}/stat`)?.cpuMs ?? Number.NaN;
}

/** Summed VmRSS of the capture processes, in kB (0 when cameras capture in this process). */
export function captureRssKb(): number {
  return captureProcessPids()
    .map(rssKbOf)
    .filter((kb) => Number.isFinite(kb))
    .reduce((a, b) => a + b, 0);
}

const run = promisify(execFile);

/** Processes other than ours that were busy while measuring: the figures are only as good as the machine was idle. */
export async function machineState(): Promise<Record<string, unknown>> {
  const uptime = (await run("uptime").catch(() => ({ stdout: "?" }))).stdout.trim();
  const retrains = await run("pgrep", ["-af", "(cli|main)\\.js retrain"]).then(
    (r) => r.stdout.trim().split("\n").filter(Boolean),
    () => [] as string[],
  );
  const head = (
    await run("git", ["rev-parse", "--short", "HEAD"]).catch(() => ({ stdout: "?" }))
  ).stdout.trim();
  const dirty = (
    await run("git", ["status", "--short", "--untracked-files=no"]).catch(() => ({ stdout: "" }))
  ).stdout
    .split("\n")
    .filter(Boolean)
    .map((l) => l.slice(3));
  return {
    at: new Date().toISOString(),
    git_head: head,
    modified_files: dirty,
    uptime,
    loadavg: os.loadavg().map((l) => Number(l.toFixed(2))),
    retrain_processes_running: retrains.length,
  };
}

export function machineInfo(): Record<string, unknown> {
  const cpus = os.cpus();
  return {
    cpu: cpus[0]?.model ?? "?",
    logical_cpus: cpus.length,
    memory_gib: Number((os.totalmem() / 2 ** 30).toFixed(1)),
    node: process.version,
    platform: `${os.type()} ${os.release()}`,
  };
}

/** Runs a child process, passes its stderr through, and parses the last line of its stdout as JSON. */
export function runJsonChild(command: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      stdio: ["ignore", "pipe", "inherit"],
      env: { ...process.env, ...env },
    });
    let out = "";
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString();
    });
    child.on("error", reject);
    child.on("close", (code) => {
      if (code !== 0) {
        reject(new Error(`${path.basename(command)} ${path.basename(args[0] ?? "")} exited with ${code}`));
        return;
      }
      const last = out.trim().split("\n").pop() ?? "";
      try {
        resolve(JSON.parse(last));
      } catch {
        reject(new Error(`${command}: last output line is not JSON: ${last.slice(0, 200)}`));
      }
    });
  });
}

/** Multiply-add FLOPs of every convolution for one image: 2·Cout·(Cin/group)·kh·kw·Hout·Wout. */
export function convFlops(graph: Graph, size: number): number {
  const shapes = inferShapes(graph, [1, 3, size, size]);
  let flops = 0;
  for (const n of graph.nodes) {
    if (n.op !== "Conv") continue;
    const w = shapes.get(n.inputs[1]!)!;
    const out = shapes.get(n.outputs[0]!)!;
    const g = convGeometry(n, w);
    flops += 2 * w[0]! * w[1]! * g.kernel[0] * g.kernel[1] * out[2]! * out[3]!;
  }
  return flops;
}

/** How many timed runs (after how many untimed ones) each peak kernel gets. */
export interface PeakOptions {
  warmup: number;
  runs: number;
}

export interface PeakKernel {
  kernel: string;
  fp32_gflops?: number;
  int8_gops?: number;
}

export interface Peak {
  kernels: PeakKernel[];
  fp32_peak_gflops: number;
  int8_peak_gops: number;
}

/** One n×n·n×n product in ORT: fp32 MatMul, or uint8×int8 MatMulInteger; returns the fastest run in ms. */
async function timeMatmul(n: number, int8: boolean, opts: PeakOptions): Promise<number> {
  const rng = new Random(7 + n);
  const graph: Graph = int8
    ? {
        nodes: [
          { op: "Cast", inputs: ["b_stored"], outputs: ["b"], attrs: { to: 3 } },
          { op: "MatMulInteger", inputs: ["a", "b"], outputs: ["y32"], attrs: {} },
          // the IR declares no int32 outputs: hand back one element as float (ORT computes the whole product)
          { op: "Slice", inputs: ["y32", "zeros", "ones"], outputs: ["corner"], attrs: {} },
          { op: "Cast", inputs: ["corner"], outputs: ["y"], attrs: { to: 1 } },
        ],
        initializers: new Map([
          [
            "b_stored",
            { dims: [n, n], data: new Float32Array(n * n).map(() => Math.round(rng.next() * 254 - 127)) },
          ],
          ["zeros", int64Tensor([0, 0])],
          ["ones", int64Tensor([1, 1])],
        ]),
        inputs: [{ name: "a", dims: [n, n], elemType: "uint8" }],
        outputs: [{ name: "y", dims: [1, 1] }],
        metadata: {},
        opset: 17,
      }
    : {
        nodes: [{ op: "MatMul", inputs: ["a", "b"], outputs: ["y"], attrs: {} }],
        initializers: new Map([
          ["b", { dims: [n, n], data: new Float32Array(n * n).map(() => rng.normal()) }],
        ]),
        inputs: [{ name: "a", dims: [n, n] }],
        outputs: [{ name: "y", dims: [n, n] }],
        metadata: {},
        opset: 17,
      };
  const session = await createSession(encodeModel(graph));
  const a = int8
    ? new ort.Tensor(
        "uint8",
        new Uint8Array(n * n).map(() => Math.floor(rng.next() * 256)),
        [n, n],
      )
    : new ort.Tensor(
        "float32",
        new Float32Array(n * n).map(() => rng.normal()),
        [n, n],
      );
  const fetches = int8 ? undefined : { y: new ort.Tensor("float32", new Float32Array(n * n), [n, n]) };
  const ts: number[] = [];
  for (let i = 0; i < opts.warmup + opts.runs; i++) {
    const t0 = performance.now();
    await (fetches ? session.run({ a }, fetches) : session.run({ a }));
    if (i >= opts.warmup) ts.push(performance.now() - t0);
  }
  await session.release();
  // a peak is the best the machine does: the fastest run, not the median
  return Math.min(...ts);
}

/** One 3×3 convolution, 256 → 256 channels on 16×16 maps, batch 32 (a ResNet layer3 shape): fastest run, ms. */
async function timeConv(opts: PeakOptions): Promise<{ ms: number; flops: number }> {
  const [c, hw, n] = [256, 16, 32];
  const rng = new Random(11);
  const graph: Graph = {
    nodes: [
      { op: "Conv", inputs: ["x", "w"], outputs: ["y"], attrs: { kernel_shape: [3, 3], pads: [1, 1, 1, 1] } },
    ],
    initializers: new Map([
      ["w", { dims: [c, c, 3, 3], data: new Float32Array(c * c * 9).map(() => rng.normal() * 0.03) }],
    ]),
    inputs: [{ name: "x", dims: [n, c, hw, hw] }],
    outputs: [{ name: "y", dims: [n, c, hw, hw] }],
    metadata: {},
    opset: 17,
  };
  const session = await createSession(encodeModel(graph));
  const x = new ort.Tensor(
    "float32",
    new Float32Array(n * c * hw * hw).map(() => rng.normal()),
    [n, c, hw, hw],
  );
  const fetches = { y: new ort.Tensor("float32", new Float32Array(n * c * hw * hw), [n, c, hw, hw]) };
  const ts: number[] = [];
  for (let i = 0; i < opts.warmup + opts.runs; i++) {
    const t0 = performance.now();
    await session.run({ x }, fetches);
    if (i >= opts.warmup) ts.push(performance.now() - t0);
  }
  await session.release();
  return { ms: Math.min(...ts), flops: 2 * c * c * 9 * hw * hw * n };
}

/**
 * Peak compute of this machine in ORT: square fp32 MatMul and uint8×int8 MatMulInteger at n = 1024 and 2048, and
 * (for fp32) one large 3×3 convolution, which MLAS runs faster than its GEMM; the best of them counts. Run it in a
 * process (or at a time) where nothing else computes.
 */
export async function measurePeak(opts: PeakOptions): Promise<Peak> {
  const kernels: PeakKernel[] = [];
  for (const n of [1024, 2048]) {
    const ops = 2 * n ** 3;
    kernels.push({ kernel: `MatMul ${n}`, fp32_gflops: ops / (await timeMatmul(n, false, opts)) / 1e6 });
    kernels.push({ kernel: `MatMulInteger ${n}`, int8_gops: ops / (await timeMatmul(n, true, opts)) / 1e6 });
  }
  const conv = await timeConv(opts);
  kernels.push({ kernel: "Conv 3×3 256→256 16² batch 32", fp32_gflops: conv.flops / conv.ms / 1e6 });
  return {
    kernels,
    fp32_peak_gflops: Math.max(...kernels.map((r) => r.fp32_gflops ?? 0)),
    int8_peak_gops: Math.max(...kernels.map((r) => r.int8_gops ?? 0)),
  };
}

/**
 * Writes float32 tensors as a .safetensors file (8-byte little-endian header length, JSON header, raw data), the
 * format the PyTorch contenders read weights from.
 */
export async function writeSafetensors(
  file: string,
  tensors: { name: string; dims: number[]; data: Float32Array }[],
): Promise<void> {
  const header: Record<string, unknown> = {};
  let offset = 0;
  for (const t of tensors) {
    header[t.name] = { dtype: "F32", shape: t.dims, data_offsets: [offset, offset + t.data.byteLength] };
    offset += t.data.byteLength;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (json.length % 8)) % 8); // keeps the data 8-byte aligned
  const head = Buffer.alloc(8);
  head.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  const parts = [
    head,
    Buffer.from(json),
    ...tensors.map((t) => Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength)),
  ];
  await writeFile(file, Buffer.concat(parts));
}

/** Conv weights and biases of a (BatchNorm-folded) graph in node order, named conv{k}.weight / conv{k}.bias. */
export function convTensors(graph: Graph): { name: string; dims: number[]; data: Float32Array }[] {
  const out: { name: string; dims: number[]; data: Float32Array }[] = [];
  graph.nodes
    .filter((n) => n.op === "Conv")
    .forEach((n, k) => {
      const w = graph.initializers.get(n.inputs[1]!)!;
      out.push({ name: `conv${k}.weight`, dims: w.dims, data: w.data as Float32Array });
      const b = n.inputs[2] ? graph.initializers.get(n.inputs[2]) : undefined;
      if (b) out.push({ name: `conv${k}.bias`, dims: b.dims, data: b.data as Float32Array });
    });
  return out;
}

/** Where every benchmark writes its results. */
export const RESULTS_DIR = path.resolve(
  path.dirname(new URL(import.meta.url).pathname),
  "../../benchmarks/results",
);

/**
 * Writes `<stem>.json` (the report) and `<stem>.md` into benchmarks/results and formats them with the project's
 * biome settings, so that `npm run lint` (which checks benchmarks/) stays clean after a run. Returns the JSON path.
 */
export async function writeResults(stem: string, report: unknown, markdown: string): Promise<string> {
  await mkdir(RESULTS_DIR, { recursive: true });
  const json = path.join(RESULTS_DIR, `${stem}.json`);
  const md = path.join(RESULTS_DIR, `${stem}.md`);
  await writeFile(json, `${JSON.stringify(report, null, 2)}\n`);
  await writeFile(md, markdown.endsWith("\n") ? markdown : `${markdown}\n`);
  const biome = path.resolve(
    path.dirname(new URL(import.meta.url).pathname),
    "../../node_modules/.bin/biome",
  );
  await run(biome, ["format", "--write", json, md]).catch((err: Error) => {
    process.stderr.write(`[bench] results written but not formatted (${err.message.split("\n")[0]})\n`);
  });
  return json;
}

export function fmt(x: number | undefined, digits = 1): string {
  return x === undefined || !Number.isFinite(x) ? "–" : x.toFixed(digits);
}

/** The MVTec bottle test kinds the speed benchmarks draw frames from. */
export const BENCH_KINDS = ["good", "broken_large", "broken_small", "contamination"] as const;

/**
 * The inference benchmarks' frames: the bottle test kinds in turn (image i of each kind before image i + 1), so
 * batches mix good and defective parts as a line would.
 */
export async function benchFrames(
  bottleDir: string,
  count: number,
): Promise<{ kind: string; file: string }[]> {
  const lists = await Promise.all(BENCH_KINDS.map((k) => listImages(path.join(bottleDir, "test", k))));
  const out: { kind: string; file: string }[] = [];
  for (let i = 0; out.length < count && lists.some((l) => l[i]); i++) {
    lists.forEach((l, k) => {
      if (l[i] && out.length < count) out.push({ kind: BENCH_KINDS[k]!, file: l[i]! });
    });
  }
  return out;
}

/** The tick of {@link pacedResults}: results are handed over in batches this often, as inference does. */
export const PACE_TICK_MS = 10;

/**
 * Hands over `rate` results per second for `warmupS` + `seconds`, in ticks of {@link PACE_TICK_MS} (`emit(due)` hands
 * over the results due in one tick), and measures this process's CPU over the last `seconds` only.
 */
export async function pacedResults(
  rate: number,
  seconds: number,
  warmupS: number,
  emit: (due: number) => void,
): Promise<{ results: number; cpuMsPerS: number }> {
  const t0 = performance.now();
  const measureFrom = t0 + warmupS * 1000;
  const end = measureFrom + seconds * 1000;
  let emitted = 0;
  let measuredFrom = 0;
  let cpuStart: NodeJS.CpuUsage | undefined;
  for (;;) {
    const now = performance.now();
    if (cpuStart === undefined && now >= measureFrom) {
      cpuStart = process.cpuUsage();
      measuredFrom = emitted;
    }
    if (now >= end) break;
    const due = Math.floor(((now - t0) / 1000) * rate) - emitted;
    if (due > 0) emit(due);
    emitted += Math.max(0, due);
    await new Promise((resolve) => setTimeout(resolve, PACE_TICK_MS));
  }
  const cpu = process.cpuUsage(cpuStart);
  const elapsedS = (performance.now() - measureFrom) / 1000;
  return { results: emitted - measuredFrom, cpuMsPerS: (cpu.user + cpu.system) / 1000 / elapsedS };
}

/**
 * The Markdown table of a paired CPU comparison (the console and line-interface benchmarks): each variant's median
 * and runs in ms of CPU per second, then the median of the run pairs' differences, also as a share of one core.
 */
export function cpuPairsTable(
  variants: readonly (readonly [label: string, runs: readonly number[]])[],
  pairDiffs: readonly number[],
): string[] {
  const f = (x: number) => x.toFixed(1);
  const list = (runs: readonly number[]) => runs.map(f).join(", ");
  const diff = median([...pairDiffs]);
  return [
    "| variant | CPU ms per s (median) | runs (ms per s) |",
    "|---|---:|---|",
    ...variants.map(([label, runs]) => `| ${label} | ${f(median([...runs]))} | ${list(runs)} |`),
    `| difference (median of the run pairs) | **${f(diff)}** (${(diff / 10).toFixed(2)} % of one core) | ${list(pairDiffs)} |`,
  ];
}

/** The shared data and teacher (`../shared`, or `STPMD_SHARED` / `STPMD_TEACHER`). */
export const SHARED_DIR = process.env.STPMD_SHARED ?? path.resolve("../shared");
export const SHARED_TEACHER =
  process.env.STPMD_TEACHER ?? path.join(SHARED_DIR, "weights/mobilenet_v2_coral_pyramid.onnx");

/** A benchmark's `--name value` flag, or `fallback` when it is absent. */
export function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}

/**
 * Capture → publish latency as a subscriber sees it: every `<prefix>/+/result` message's arrival time minus its
 * `capture_ts`, kept only between `start()` and `stop()` (the measured window), then its p50 and p99.
 */
export async function resultLatencies(brokerUrl: string, prefix: string, clientId: string) {
  const sub = await mqtt.connectAsync(brokerUrl, { clientId });
  const latencies: number[] = [];
  let measuring = false;
  sub.on("message", (_topic, payload) => {
    if (measuring)
      latencies.push(
        Date.now() - Date.parse((JSON.parse(payload.toString()) as { capture_ts: string }).capture_ts),
      );
  });
  await sub.subscribeAsync(`${prefix}/+/result`, { qos: 0 });
  return {
    start: () => {
      measuring = true;
    },
    stop: () => {
      measuring = false;
    },
    /** Ends the subscription; the window's p50 and p99 (NaN without a message). */
    async end(): Promise<{ p50: number; p99: number }> {
      await sub.endAsync();
      latencies.sort((a, b) => a - b);
      return { p50: quantileOf(latencies, 0.5), p99: quantileOf(latencies, 0.99) };
    },
  };
}
