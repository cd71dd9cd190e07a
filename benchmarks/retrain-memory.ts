/**
 * Peak resident memory of `stpmd retrain` on issue #19's large case: 213 images of 500×1250 (synthetic grey strips:
 * a vertical sine, a horizontal ramp and noise, generated under the OS temp folder), `--image-size 256x640`, one
 * epoch. Each variant runs as its own process under `/usr/bin/time -v` (maximum resident set size, user and system
 * CPU), one after another.
 *
 *   node dist/benchmarks/retrain-memory.js [--epochs 1] [--variants default,low-memory] [--main dist/src/main.cjs]
 *
 * `--main` may point at an older build (a copy of its dist/ beside a node_modules link) to measure "before".
 */
import { execFile } from "node:child_process";
import { mkdir, mkdtemp, readdir } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs, promisify } from "node:util";
import sharp from "sharp";
import { machineState, writeResults } from "./common.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, "../..");
const SHARED = process.env.STPMD_SHARED ?? path.resolve(REPO, "../shared");
const { values: a } = parseArgs({
  options: {
    epochs: { type: "string", default: "1" },
    variants: { type: "string", default: "default,low-memory" },
    main: { type: "string", default: path.join(REPO, "dist/src/main.cjs") },
    frames: { type: "string" },
  },
});

const VARIANT_ARGS: Record<string, string[]> = { default: [], "low-memory": ["--low-memory"] };

/** 213 grey strips 500 wide, 1250 high: what the line data looks like, to memory. */
async function strips(dir: string, count = 213, width = 500, height = 1250): Promise<string> {
  await mkdir(dir, { recursive: true });
  if ((await readdir(dir)).length === count) return dir;
  let seed = 12345;
  const rnd = (): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed / 0x7fffffff;
  };
  for (let i = 0; i < count; i++) {
    const px = Buffer.alloc(width * height * 3);
    const phase = rnd() * 6.28;
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        const g = 110 + 40 * Math.sin(y / 37 + phase) + 20 * (x / width) + (rnd() - 0.5) * 30;
        const o = (y * width + x) * 3;
        px[o] = px[o + 1] = px[o + 2] = Math.max(0, Math.min(255, g));
      }
    }
    await sharp(px, { raw: { width, height, channels: 3 } })
      .png()
      .toFile(path.join(dir, `s${String(i).padStart(3, "0")}.png`));
  }
  return dir;
}

/** One field of `/usr/bin/time -v`'s report. */
function field(report: string, name: string): number {
  const line = report.split("\n").find((l) => l.trim().startsWith(name));
  return line ? Number(line.split(":").at(-1)!.trim()) : Number.NaN;
}

function wallSeconds(report: string): number {
  const line = report.split("\n").find((l) => l.includes("Elapsed (wall clock)"));
  const parts = (line?.split("): ")[1] ?? "").split(":").map(Number);
  return parts.reduce((t, x) => t * 60 + x, 0);
}

const frames = a.frames ?? (await strips(path.join(os.tmpdir(), "stpmd-bench-strips")));
const runs: Record<string, unknown>[] = [];
for (const variant of a.variants!.split(",")) {
  const out = await mkdtemp(path.join(os.tmpdir(), "stpmd-mem-"));
  const args = [
    ...["-v", process.execPath, a.main!, "retrain", "--frames", frames],
    ...[
      "--teacher",
      path.join(SHARED, "weights/mobilenet_v2_coral_pyramid.onnx"),
      "--out",
      path.join(out, "b"),
    ],
    ...["--image-size", "256x640", "--epochs", a.epochs!, "--no-progress", ...(VARIANT_ARGS[variant] ?? [])],
  ];
  const before = await machineState();
  const { stderr } = await promisify(execFile)("/usr/bin/time", args, { maxBuffer: 64 << 20 });
  const run = {
    variant,
    command: `/usr/bin/time ${args.join(" ")}`,
    max_rss_mib: Math.round(field(stderr, "Maximum resident set size (kbytes)") / 1024),
    user_s: field(stderr, "User time (seconds)"),
    system_s: field(stderr, "System time (seconds)"),
    wall_s: wallSeconds(stderr),
    machine_before: before,
  };
  process.stderr.write(
    `${variant}: ${run.max_rss_mib} MiB, ${(run.user_s + run.system_s).toFixed(1)} s CPU\n`,
  );
  runs.push(run);
}
const md = [
  `# retrain peak memory: ${frames} at --image-size 256x640, ${a.epochs} epoch(s)`,
  "",
  "| variant | max RSS (MiB) | user + sys CPU (s) | wall (s) |",
  "|---|---:|---:|---:|",
  ...runs.map(
    (r) =>
      `| ${r.variant} | ${r.max_rss_mib} | ${((r.user_s as number) + (r.system_s as number)).toFixed(1)} | ${r.wall_s} |`,
  ),
].join("\n");
await writeResults("retrain-memory", { epochs: Number(a.epochs), frames, runs }, md);
