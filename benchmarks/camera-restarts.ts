import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { Camera } from "../src/capture/camera.js";
import { completeConfig } from "../src/config/index.js";
import { createLogger } from "../src/core/log.js";
import {
  captureProcessPids,
  captureRssKb,
  machineInfo,
  machineState,
  median,
  rssKbOf,
  runJsonChild,
  writeResults,
} from "./common.js";

/**
 * Memory per camera restart: a Camera over a source that ends after a few frames (end of stream → restart) at a
 * 1 ms backoff, restarted `warmup + restarts` times. RSS is read after a full GC every SAMPLE_EVERY restarts, so JS
 * garbage does not count; what is left is what the restarts keep (native pipelines, handles).
 * The figure is the median over those intervals: RSS also grows in one-off steps of 10–20 MB at random moments (a new
 * malloc arena for another thread, V8 growing its young generation), which made the end-to-end figure of 200
 * restarts range from 6 to 96 kB per restart between identical runs, while a leak grows in every interval.
 *
 * `--capture child` (the default) runs the camera as the daemon does, its pipeline in a capture process: RSS is then
 * this (the daemon's) process's, and the capture processes' is reported beside it; `--capture in-process` plays
 * the pipeline here, as before capture processes.
 *
 * Run: node --expose-gc dist/benchmarks/camera-restarts.js [--restarts 200] [--warmup 50] [--source "…"]
 *        [--size 64x48] [--capture child|in-process]
 * Prints one JSON line (kB per restart of RSS, of the JS heap, and of external memory).
 *
 * Compare: node dist/benchmarks/camera-restarts.js --compare [--runs 3] [--restarts 1000] [--warmup 50]
 * measures a replayable and a dynamic-pad source both ways, each run in a fresh process, and writes
 * results/camera-restarts.{json,md}.
 */

/**
 * 20 intervals over 200 restarts: with 25 (8 intervals) the median once read 61 kB in a full test run under load, as
 * the steps fell in half the intervals; with 10 it read 0–0.4 kB in five runs beside three busy loops.
 */
const SAMPLE_EVERY = 10;

export type CaptureMode = "child" | "in-process";

export interface RestartMemory {
  capture: CaptureMode;
  restarts: number;
  /** Median over intervals of SAMPLE_EVERY restarts. */
  rssKbPerRestart: number;
  /** From the first reading to the last, steps included. */
  rssKbPerRestartOverall: number;
  heapKbPerRestart: number;
  externalKbPerRestart: number;
  rssStartMib: number;
  rssEndMib: number;
  /** Pipelines the camera built (1 when its restarts replay the same one). */
  pipelines: number;
  /** Child mode: the capture processes' summed RSS, median kB per restart over the same intervals, and at the end. */
  captureRssKbPerRestart: number;
  captureRssEndMib: number;
  /** Child mode: capture processes seen (sampled at each reading). */
  captureProcessesSeen: number;
  seconds: number;
}

/** The Linux resident set size of this process (VmRSS), in kB: it includes GStreamer's native allocations. */
function rssKb(): number {
  return rssKbOf("self");
}

function collect(): void {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc === undefined) throw new Error("run node with --expose-gc");
  gc();
  gc();
}

async function restartsReached(camera: Camera, count: number): Promise<void> {
  while (camera.stats().restarts < count) await new Promise((resolve) => setTimeout(resolve, 2));
}

export interface RestartMemoryOptions {
  restarts?: number;
  warmup?: number;
  /** A source that ends by itself; the default is not live, so its frames come at once and a cycle takes ms. */
  source?: string;
  /** Output frame size. */
  width?: number;
  height?: number;
  capture?: CaptureMode;
}

export async function measureRestartMemory(options: RestartMemoryOptions = {}): Promise<RestartMemory> {
  const { restarts = 200, warmup = 50, width = 64, height = 48, capture = "child" } = options;
  // read by the Camera as it is built (src/capture/camera.ts, captureInProcess)
  process.env.STPMD_CAPTURE = capture === "in-process" ? "in-process" : "";
  const config = completeConfig({
    model: { bundle: "unused" },
    mqtt: { url: "mqtt://unused" },
    cameras: [
      {
        id: "restarts",
        source: options.source ?? "videotestsrc num-buffers=5 ! video/x-raw,width=64,height=48",
        stall_timeout_s: 0,
        restart_backoff: { initial_ms: 1, max_ms: 1, factor: 1 },
      },
    ],
  });
  const camera = new Camera(config.cameras[0]!, { width, height, logger: createLogger("silent") });
  const t0 = Date.now();
  camera.start();
  try {
    const readings: Array<{ rss: number; captureRss: number; mem: NodeJS.MemoryUsage; restarts: number }> =
      [];
    const seen = new Set<number>();
    for (let target = warmup; target <= warmup + restarts; target += SAMPLE_EVERY) {
      await restartsReached(camera, target);
      collect();
      for (const pid of captureProcessPids()) seen.add(pid);
      readings.push({
        rss: rssKb(),
        captureRss: captureRssKb(),
        mem: process.memoryUsage(),
        restarts: camera.stats().restarts,
      });
    }
    const start = readings[0]!;
    const end = readings.at(-1)!;
    const n = end.restarts - start.restarts;
    const slopes = (key: "rss" | "captureRss") =>
      readings.slice(1).map((r, i) => (r[key] - readings[i]![key]) / (r.restarts - readings[i]!.restarts));
    return {
      capture,
      restarts: n,
      rssKbPerRestart: median(slopes("rss")),
      rssKbPerRestartOverall: (end.rss - start.rss) / n,
      heapKbPerRestart: (end.mem.heapUsed - start.mem.heapUsed) / 1024 / n,
      externalKbPerRestart: (end.mem.external - start.mem.external) / 1024 / n,
      rssStartMib: start.rss / 1024,
      rssEndMib: end.rss / 1024,
      pipelines: camera.stats().pipelines,
      captureRssKbPerRestart: median(slopes("captureRss")),
      captureRssEndMib: end.captureRss / 1024,
      captureProcessesSeen: seen.size,
      seconds: (Date.now() - t0) / 1000,
    };
  } finally {
    camera.stop();
  }
}

/** The two kinds of source the comparison restarts, 640×480 scaled to the 256×256 a model takes. */
const COMPARED_SOURCES = {
  // its restarts replay the one pipeline
  replayable: "videotestsrc num-buffers=5 ! video/x-raw,width=640,height=480",
  // decodebin links its pad when the stream starts, like rtspsrc: a replayed pipeline fails "not-linked", so
  // every restart needs a new pipeline (an rtspsrc needs a server; JPEG through decodebin behaves the same)
  "dynamic-pad": "videotestsrc num-buffers=5 ! video/x-raw,width=640,height=480 ! jpegenc ! decodebin",
} as const;

/** Every source both ways, `runs` times alternating, each in a fresh process; writes results/camera-restarts.*. */
async function compare(runs: number, restarts: number, warmup: number): Promise<void> {
  const self = fileURLToPath(import.meta.url);
  const before = await machineState();
  const rows: Array<{ source: string } & RestartMemory> = [];
  for (let run = 0; run < runs; run++) {
    for (const [source, description] of Object.entries(COMPARED_SOURCES)) {
      const modes: CaptureMode[] = run % 2 === 0 ? ["in-process", "child"] : ["child", "in-process"];
      for (const capture of modes) {
        const args = [
          "--expose-gc",
          self,
          "--source",
          description,
          "--size",
          "256x256",
          "--capture",
          capture,
        ];
        args.push("--restarts", String(restarts), "--warmup", String(warmup));
        const result = (await runJsonChild(process.execPath, args)) as RestartMemory;
        process.stderr.write(`${JSON.stringify({ source, ...result })}\n`);
        rows.push({ source, ...result });
      }
    }
  }
  const after = await machineState();
  const summary = Object.keys(COMPARED_SOURCES).flatMap((source) =>
    (["in-process", "child"] as const).map((capture) => {
      const mine = rows.filter((r) => r.source === source && r.capture === capture);
      const med = (f: (r: RestartMemory) => number) => median(mine.map(f));
      return {
        source,
        capture,
        runs: mine.length,
        daemon_rss_kb_per_restart: med((r) => r.rssKbPerRestart),
        daemon_rss_kb_per_restart_overall: med((r) => r.rssKbPerRestartOverall),
        daemon_rss_end_mib: med((r) => r.rssEndMib),
        capture_rss_kb_per_restart: med((r) => r.captureRssKbPerRestart),
        capture_rss_end_mib: med((r) => r.captureRssEndMib),
        pipelines: med((r) => r.pipelines),
        capture_processes_seen: med((r) => r.captureProcessesSeen),
        seconds: med((r) => r.seconds),
      };
    }),
  );
  const f1 = (x: number) => x.toFixed(1);
  const md = [
    "# Camera restarts: RSS kept per restart, capture in the daemon's process vs in a capture process",
    "",
    `${restarts} restarts after ${warmup} of warm-up, 1 ms backoff, 640×480 scaled to 256×256, ${runs} run(s) of each, alternating, each in a fresh process (\`node dist/benchmarks/camera-restarts.js --compare --runs ${runs} --restarts ${restarts} --warmup ${warmup}\`). Medians over runs of the median RSS growth per ${SAMPLE_EVERY} restarts after a full GC.`,
    "",
    `Sources: replayable \`${COMPARED_SOURCES.replayable}\`; dynamic-pad \`${COMPARED_SOURCES["dynamic-pad"]}\`.`,
    "",
    `Load before: \`${before.uptime}\`; after: \`${after.uptime}\`.`,
    "",
    "| source | capture | daemon RSS kB/restart (median) | daemon RSS kB/restart (first→last) | daemon RSS at end MiB | capture processes' RSS kB/restart | their RSS at end MiB | pipelines | capture processes | seconds |",
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ...summary.map(
      (r) =>
        `| ${r.source} | ${r.capture} | ${f1(r.daemon_rss_kb_per_restart)} | ${f1(r.daemon_rss_kb_per_restart_overall)} | ${f1(r.daemon_rss_end_mib)} | ${r.capture === "child" ? f1(r.capture_rss_kb_per_restart) : "–"} | ${r.capture === "child" ? f1(r.capture_rss_end_mib) : "–"} | ${r.pipelines} | ${r.capture === "child" ? r.capture_processes_seen : "–"} | ${f1(r.seconds)} |`,
    ),
    "",
  ].join("\n");
  await writeResults(
    "camera-restarts",
    { machine: machineInfo(), before, after, restarts, warmup, runs, summary, rows },
    md,
  );
  process.stdout.write(md);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const { values } = parseArgs({
    options: {
      restarts: { type: "string" },
      warmup: { type: "string" },
      source: { type: "string" },
      size: { type: "string" },
      capture: { type: "string" },
      compare: { type: "boolean" },
      runs: { type: "string" },
    },
  });
  if (values.compare) {
    await compare(
      Number(values.runs ?? "3"),
      Number(values.restarts ?? "1000"),
      Number(values.warmup ?? "50"),
    );
    process.exit(0);
  }
  const capture = values.capture ?? "child";
  if (capture !== "child" && capture !== "in-process")
    throw new Error(`--capture must be child or in-process`);
  const [width, height] = (values.size ?? "64x48").split("x").map(Number);
  const result = await measureRestartMemory({
    restarts: values.restarts === undefined ? undefined : Number(values.restarts),
    warmup: values.warmup === undefined ? undefined : Number(values.warmup),
    source: values.source,
    width,
    height,
    capture,
  });
  process.stdout.write(`${JSON.stringify(result)}\n`);
}
