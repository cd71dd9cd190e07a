import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { Camera } from "../src/capture/camera.js";
import { completeConfig } from "../src/config/index.js";
import { createLogger } from "../src/core/log.js";
import { median } from "./common.js";

/**
 * Memory per camera restart: a Camera over a source that ends after a few frames (end of stream → restart) at a
 * 1 ms backoff, restarted `warmup + restarts` times. RSS is read after a full GC every SAMPLE_EVERY restarts, so JS
 * garbage does not count; what is left is what the restarts keep (native pipelines, handles).
 * The figure is the median over those intervals: RSS also grows in one-off steps of 10–20 MB at random moments (a new
 * malloc arena for another thread, V8 growing its young generation), which made the end-to-end figure of 200
 * restarts range from 6 to 96 kB per restart between identical runs, while a leak grows in every interval.
 *
 * Run: node --expose-gc dist/benchmarks/camera-restarts.js [--restarts 200] [--warmup 50] [--source "…"]
 *        [--size 64x48]
 * Prints one JSON line (kB per restart of RSS, of the JS heap, and of external memory).
 */

/**
 * 20 intervals over 200 restarts: with 25 (8 intervals) the median once read 61 kB in a full test run under load, as
 * the steps fell in half the intervals; with 10 it read 0–0.4 kB in five runs beside three busy loops.
 */
const SAMPLE_EVERY = 10;

export interface RestartMemory {
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
  seconds: number;
}

/** The Linux resident set size of this process (VmRSS), in kB: it includes GStreamer's native allocations. */
function rssKb(): number {
  const line = readFileSync("/proc/self/status", "utf8")
    .split("\n")
    .find((l) => l.startsWith("VmRSS:"));
  return Number(line?.split(/\s+/)[1]);
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
}

export async function measureRestartMemory(options: RestartMemoryOptions = {}): Promise<RestartMemory> {
  const { restarts = 200, warmup = 50, width = 64, height = 48 } = options;
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
    const readings: Array<{ rss: number; mem: NodeJS.MemoryUsage; restarts: number }> = [];
    for (let target = warmup; target <= warmup + restarts; target += SAMPLE_EVERY) {
      await restartsReached(camera, target);
      collect();
      readings.push({ rss: rssKb(), mem: process.memoryUsage(), restarts: camera.stats().restarts });
    }
    const start = readings[0]!;
    const end = readings.at(-1)!;
    const n = end.restarts - start.restarts;
    const slopes = readings
      .slice(1)
      .map((r, i) => (r.rss - readings[i]!.rss) / (r.restarts - readings[i]!.restarts));
    return {
      restarts: n,
      rssKbPerRestart: median(slopes),
      rssKbPerRestartOverall: (end.rss - start.rss) / n,
      heapKbPerRestart: (end.mem.heapUsed - start.mem.heapUsed) / 1024 / n,
      externalKbPerRestart: (end.mem.external - start.mem.external) / 1024 / n,
      rssStartMib: start.rss / 1024,
      rssEndMib: end.rss / 1024,
      pipelines: camera.stats().pipelines,
      seconds: (Date.now() - t0) / 1000,
    };
  } finally {
    camera.stop();
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const { values } = parseArgs({
    options: {
      restarts: { type: "string" },
      warmup: { type: "string" },
      source: { type: "string" },
      size: { type: "string" },
    },
  });
  const [width, height] = (values.size ?? "64x48").split("x").map(Number);
  const result = await measureRestartMemory({
    restarts: values.restarts === undefined ? undefined : Number(values.restarts),
    warmup: values.warmup === undefined ? undefined : Number(values.warmup),
    source: values.source,
    width,
    height,
  });
  process.stdout.write(`${JSON.stringify(result)}\n`);
}
