import { execFile, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import type { Graph } from "../src/model/onnx-graph.js";
import { convGeometry, inferShapes } from "../src/model/shapes.js";

/** Helpers shared by the benchmark scripts: statistics, machine state, child processes, FLOP counts. */

export function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** Peak resident set size of this process (VmHWM), MiB. */
export function peakRssMib(): number {
  const line = readFileSync("/proc/self/status", "utf8")
    .split("\n")
    .find((l) => l.startsWith("VmHWM:"));
  return line ? Number(line.split(/\s+/)[1]) / 1024 : Number.NaN;
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

/**
 * Writes result files and formats them with the project's biome settings, so that `npm run lint` (which checks
 * benchmarks/) stays clean after a run.
 */
export async function writeResults(files: Record<string, string>): Promise<void> {
  for (const [file, text] of Object.entries(files)) await writeFile(file, text);
  const biome = path.resolve(
    path.dirname(new URL(import.meta.url).pathname),
    "../../node_modules/.bin/biome",
  );
  await run(biome, ["format", "--write", ...Object.keys(files)]).catch((err: Error) => {
    process.stderr.write(`[bench] results written but not formatted (${err.message.split("\n")[0]})\n`);
  });
}

export function fmt(x: number | undefined, digits = 1): string {
  return x === undefined || !Number.isFinite(x) ? "–" : x.toFixed(digits);
}
