/**
 * What an open web console costs the daemon side.
 *
 * This process plays the daemon's result path into a real HttpInterface with the console on: two cameras at
 * `--rate` results/s in all, in ticks of 10 ms, frames of `--size`² with their anomaly maps, one result in ten
 * defective (so the page also fetches defect images). "closed" is that with nobody watching; "open" adds one console
 * page in headless Chromium (Debian's, through playwright-core): its event stream, its live images (at most two per
 * second per camera), its defect images and its status polls. The browser and the Playwright client that drives
 * it run in a child process (Playwright parses every network event of the page, which would otherwise land in the
 * measured process); their CPU is not counted: they stand for the operator's PC. process.cpuUsage() over each run;
 * runs alternate the order of the two variants; medians.
 *
 *   node dist/benchmarks/console.js [--runs 5] [--seconds 10] [--rate 90] [--size 256]
 */
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { chromium } from "playwright-core";
import { createLogger } from "../src/core/log.js";
import type { InspectionResult } from "../src/core/result.js";
import { renderSnapshot } from "../src/data/snapshot.js";
import { freeLoopbackPort } from "../src/demo/broker.js";
import { HttpInterface } from "../src/publish/http/http.js";
import { TestLineControl } from "../test/helpers/line-control.js";
import { cpuPairsTable, machineInfo, machineState, median, pacedResults, writeResults } from "./common.js";

const WARMUP_S = 2;
const CAMERAS = ["cam1", "cam2"];
const logger = createLogger("silent");
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface Run {
  variant: "closed" | "open";
  run: number;
  results: number;
  cpu_ms_per_s: number;
  /** Requests the page made during the measured window, by kind. */
  page?: { images: number; status_polls: number };
}

/** A frame of noise over a ramp, and a map that is hot in one square when `defective`. */
function makeResult(camera: string, seq: number, size: number, defective: boolean): InspectionResult {
  const rgb = new Uint8Array(size * size * 3);
  for (let i = 0; i < rgb.length; i++) rgb[i] = ((i / 3) % size) * (200 / size) + ((i * 2654435761) >>> 28);
  const map = new Float32Array(size * size);
  for (let i = 0; i < map.length; i++) map[i] = 0.1 + ((i * 40503) % 97) / 1000;
  const hot = Math.floor(size / 3);
  if (defective) {
    for (let y = hot; y < hot + 16; y++) map.fill(1.5, y * size + hot, y * size + hot + 16);
  }
  return {
    frame: { cameraId: camera, seq, captureTs: Date.now(), width: size, height: size, rgb },
    score: defective ? 1.5 : 0.2,
    threshold: 0.5,
    verdict: defective ? "defect" : "ok",
    regions: defective
      ? [{ bbox: [hot, hot, 16, 16], area: 256, peak: 1.5, centroid: [hot + 8, hot + 8] }]
      : [],
    map,
    modelVersion: "bench",
    inferredTs: Date.now(),
  };
}

/** Child mode: opens the console at `url` in headless Chromium, counts its requests for `seconds`, prints JSON. */
async function pageClient(url: string, seconds: number): Promise<void> {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: ["--no-sandbox"],
  });
  const page = await browser.newPage();
  const counts = { images: 0, status_polls: 0 };
  let counting = false;
  page.on("requestfinished", (request) => {
    if (!counting) return;
    if (request.url().includes(".jpg")) counts.images += 1;
    else if (request.url().endsWith("/api/status")) counts.status_polls += 1;
  });
  await page.goto(url);
  await page.locator("#stream", { hasText: "live" }).waitFor();
  process.stdout.write("ready\n");
  await sleep(WARMUP_S * 1000);
  counting = true;
  await sleep(seconds * 1000);
  counting = false;
  await browser.close();
  process.stdout.write(`${JSON.stringify(counts)}\n`);
}

/** Starts the page client and resolves once its page is live; `output()` is what it printed. */
async function startPage(url: string, seconds: number): Promise<ChildProcess & { output: () => string }> {
  const self = fileURLToPath(import.meta.url);
  const child = spawn(process.execPath, [self, "--page", url, "--seconds", String(seconds)], {
    stdio: ["ignore", "pipe", "inherit"],
  }) as ChildProcess & { output: () => string };
  let out = "";
  child.output = () => out;
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on("data", (chunk: Buffer) => {
      out += chunk.toString("utf8");
      if (out.includes("ready\n")) resolve();
    });
    child.once("exit", (code) => reject(new Error(`page client exited with ${code}: ${out}`)));
  });
  return child;
}

async function measure(
  variant: Run["variant"],
  run: number,
  templates: InspectionResult[],
  rate: number,
  seconds: number,
): Promise<Run> {
  const control = new TestLineControl(CAMERAS, 0.5);
  const http = new HttpInterface({
    config: {
      enabled: true,
      bind: "127.0.0.1",
      port: await freeLoopbackPort(),
      console: { enabled: true, users: [], max_clients: 8, session_idle_min: 720 },
    },
    control,
    logger,
    processMetrics: false,
  });
  await http.start();
  const page =
    variant === "open" ? await startPage(`http://127.0.0.1:${http.address.port}/`, seconds) : undefined;
  let emitted = 0;
  const paced = await pacedResults(rate, seconds, WARMUP_S, (due) => {
    for (let i = 0; i < due; i++) {
      const template = templates[emitted % templates.length]!;
      // a new result object per frame, as the daemon hands over; the pixel buffers are shared
      http.onResult({ ...template, frame: { ...template.frame, seq: emitted, captureTs: Date.now() } });
      emitted += 1;
    }
    http.onBatch(due, 20);
  });
  let counts: Run["page"];
  if (page) {
    // the child stops on its own clock (started when its page went live, so it ends a little after this loop)
    if (page.exitCode === null) await once(page, "exit");
    counts = JSON.parse(page.output().trim().split("\n").at(-1)!) as Run["page"];
  }
  await http.stop();
  return {
    variant,
    run,
    results: paced.results,
    cpu_ms_per_s: paced.cpuMsPerS,
    ...(counts ? { page: counts } : {}),
  };
}

/** The console's per-result cost in a loop, and one image rendering at this size. */
async function microbenchmarks(templates: InspectionResult[], size: number): Promise<Record<string, number>> {
  const control = new TestLineControl(CAMERAS, 0.5);
  const consoleOn = (enabled: boolean) =>
    new HttpInterface({
      config: {
        enabled: true,
        bind: "127.0.0.1",
        port: 1,
        console: { enabled, users: [], max_clients: 8, session_idle_min: 720 },
      },
      control,
      logger,
      processMetrics: false,
    });
  const perResultNs = (http: HttpInterface) => {
    const n = 500_000;
    for (let i = 0; i < 10_000; i++) http.onResult(templates[i % templates.length]!);
    const t = performance.now();
    for (let i = 0; i < n; i++) http.onResult(templates[i % templates.length]!);
    return ((performance.now() - t) * 1e6) / n;
  };
  const without = perResultNs(consoleOn(false));
  const withConsole = perResultNs(consoleOn(true));
  const defect = templates.find((r) => r.verdict === "defect")!;
  const renders: number[] = [];
  for (let i = 0; i < 60; i++) {
    const t = performance.now();
    await renderSnapshot(defect.frame, defect.map, defect.threshold, {
      quality: 80,
      maxSide: 640,
      regions: defect.regions,
    });
    if (i >= 10) renders.push(performance.now() - t);
  }
  return {
    on_result_ns_without_console: without,
    on_result_ns_with_console: withConsole,
    [`render_ms_median_${size}`]: median(renders),
  };
}

const { values } = parseArgs({
  options: {
    page: { type: "string" },
    runs: { type: "string", default: "5" },
    seconds: { type: "string", default: "10" },
    rate: { type: "string", default: "90" },
    size: { type: "string", default: "256" },
  },
});
const seconds = Number(values.seconds);
if (values.page !== undefined) {
  await pageClient(values.page, seconds);
  process.exit(0);
}
const runs = Number(values.runs);
const rate = Number(values.rate);
const size = Number(values.size);
// 20 frames: every tenth defective, cameras alternating
const templates = [...Array(20).keys()].map((i) => makeResult(CAMERAS[i % 2]!, i, size, i % 10 === 3));
const before = await machineState();
const micro = await microbenchmarks(templates, size);
const rows: Run[] = [];
// an unrecorded pair first: JIT and the browser's first page would land on whichever ran first
for (const variant of ["closed", "open"] as const) await measure(variant, -1, templates, rate, 2);
for (let run = 0; run < runs; run++) {
  const order: Run["variant"][] = run % 2 === 0 ? ["closed", "open"] : ["open", "closed"];
  for (const variant of order) {
    const row = await measure(variant, run, templates, rate, seconds);
    console.error(JSON.stringify(row));
    rows.push(row);
  }
}
const after = await machineState();
const cpuOf = (variant: Run["variant"]) =>
  rows.filter((r) => r.variant === variant).map((r) => r.cpu_ms_per_s);
const pairDiffs = [...Array(runs).keys()].map((run) => {
  const pick = (v: Run["variant"]) => rows.find((r) => r.run === run && r.variant === v)!.cpu_ms_per_s;
  return pick("open") - pick("closed");
});
const pages = rows.flatMap((r) => (r.page ? [r.page] : []));
const imagesPerS = median(pages.map((p) => p.images / seconds));
const report = {
  machine: machineInfo(),
  before,
  after,
  rate,
  size,
  seconds,
  warmup_s: WARMUP_S,
  runs,
  rows,
  median_cpu_ms_per_s: {
    closed: median(cpuOf("closed")),
    open: median(cpuOf("open")),
    difference_of_pairs: median(pairDiffs),
  },
  page_images_per_s: imagesPerS,
  microbenchmarks: micro,
};
const f = (x: number, d = 1) => x.toFixed(d);
const md = [
  "# Web console: what one open console costs the daemon side",
  "",
  `${rate} results/s over two cameras (${size}×${size} frames with their maps, one in ten defective) handed to a real HttpInterface with the console on, in 10 ms ticks; "open" adds one console page in headless Chromium, driven from a child process whose CPU is not counted (event stream, live and defect images, status every 2 s). CPU of the daemon-side process only (process.cpuUsage), ${seconds} s per run after ${WARMUP_S} s warm-up, ${runs} runs per variant in alternating order; medians.`,
  "",
  `Load before: \`${String(before.uptime)}\`; after: \`${String(after.uptime)}\`.`,
  "",
  ...cpuPairsTable(
    [
      ["console on, nobody watching", cpuOf("closed")],
      ["one console open", cpuOf("open")],
    ],
    pairDiffs,
  ),
  "",
  `The page fetched ${f(imagesPerS, 1)} images per second (median over the open runs; each card's live and defect images at most 2 per second each).`,
  "",
  `Per call, in a loop: the HTTP interface's onResult ${f(micro.on_result_ns_without_console!, 0)} ns without the console, ${f(micro.on_result_ns_with_console!, 0)} ns with it (nobody watching); one console image of a ${size}² defect frame (heatmap, outline, JPEG) ${f(micro[`render_ms_median_${size}`]!, 2)} ms (median of 50).`,
  "",
].join("\n");
await writeResults("console", report, md);
console.log(md);
process.exit(0);
