import { readFile, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { parseArgs } from "node:util";
import { completeConfig } from "../src/config/index.js";
import { createLogger } from "../src/core/log.js";
import type { InspectionResult } from "../src/core/result.js";
import { candidatePaths } from "../src/stations/candidates/store.js";
import { StationRegistry } from "../src/stations/registry.js";
import { trainTinyBundle } from "../test/helpers/daemon-process.js";
import { tempDir } from "../test/helpers/tiny-data.js";
import { fmt, machineInfo, machineState, median, quantileOf, writeResults } from "./common.js";

/**
 * What a candidate in shadow costs the live model: one camera (`videotestsrc` snow at `--fps`, `--size`²) judged by
 * a small bundle, with no shadow and with a candidate of the same size shadowing 10 %, 50 % and 100 % of its
 * frames. Reported per share: live frames/s delivered, capture → delivery latency p50/p99, live frames dropped, and
 * the shadow's frames judged and dropped. The shares alternate, `--runs` times each, so a change of the machine's
 * load hits all of them.
 *
 * Run: node dist/benchmarks/shadow.js [--runs 2] [--seconds 6] [--size 128] [--fps 60]
 * Writes results/shadow.{json,md}.
 */

const { values } = parseArgs({
  options: {
    runs: { type: "string", default: "2" },
    seconds: { type: "string", default: "6" },
    size: { type: "string", default: "128" },
    fps: { type: "string", default: "60" },
  },
});
const RUNS = Number(values.runs);
const SECONDS = Number(values.seconds);
const SIZE = Number(values.size);
const FPS = Number(values.fps);
const WARMUP_S = 2;
const SHARES = [0, 0.1, 0.5, 1];
const CAMERA = "cam";

interface Row {
  share: number;
  live_fps: number;
  latency_ms_p50: number;
  latency_ms_p99: number;
  live_dropped: number;
  shadow_fps: number;
  shadow_dropped: number;
}

async function measure(work: string, live: string, share: number): Promise<Row> {
  const candidates = path.join(work, "candidates");
  const paths = candidatePaths(candidates, CAMERA);
  await rm(paths.shadow, { recursive: true, force: true });
  const config = completeConfig({
    model: { bundle: live, watch: false },
    cameras: [
      { id: CAMERA, source: `videotestsrc is-live=true pattern=snow ! video/x-raw,framerate=${FPS}/1` },
    ],
    mqtt: { url: "mqtt://127.0.0.1:1", outbox: { dir: path.join(work, "outbox") } },
    candidates: { dir: candidates, shadow: { share: share || 1 } },
  });
  let counting = false;
  const latencies: number[] = [];
  const registry = new StationRegistry(config, createLogger("silent"), (batch: InspectionResult[]) => {
    if (!counting) return;
    const now = Date.now();
    for (const r of batch) latencies.push(now - r.frame.captureTs);
  });
  await registry.open();
  if (share > 0)
    await registry.shadows.start(CAMERA, paths.candidate, paths.shadow, config.candidates.shadow);
  registry.start();
  await new Promise((r) => setTimeout(r, WARMUP_S * 1000));
  const before = { shadow: registry.shadows.view(CAMERA), dropped: registry.droppedFrames };
  counting = true;
  await new Promise((r) => setTimeout(r, SECONDS * 1000));
  counting = false;
  const after = { shadow: registry.shadows.view(CAMERA), dropped: registry.droppedFrames };
  registry.stopCapture();
  await registry.drain();
  await registry.close();
  latencies.sort((a, b) => a - b);
  return {
    share,
    live_fps: latencies.length / SECONDS,
    latency_ms_p50: quantileOf(latencies, 0.5),
    latency_ms_p99: quantileOf(latencies, 0.99),
    live_dropped: after.dropped - before.dropped,
    shadow_fps: ((after.shadow?.frames ?? 0) - (before.shadow?.frames ?? 0)) / SECONDS,
    shadow_dropped: (after.shadow?.dropped ?? 0) - (before.shadow?.dropped ?? 0),
  };
}

async function main(): Promise<void> {
  const work = await tempDir("stpmd-bench-shadow-");
  const live = path.join(work, "live");
  const { candidate } = candidatePaths(path.join(work, "candidates"), CAMERA);
  await trainTinyBundle(work, live, 1, SIZE);
  await trainTinyBundle(work, candidate, 2, SIZE);
  // model versions are creation times to the second: both bundles may share one
  const file = path.join(candidate, "manifest.json");
  const manifest = JSON.parse(await readFile(file, "utf8")) as { model_version: string };
  manifest.model_version += "-candidate";
  await writeFile(file, JSON.stringify(manifest));

  const before = await machineState();
  const rows: Row[] = [];
  for (let run = 0; run < RUNS; run++) {
    for (const share of SHARES) {
      const row = await measure(work, live, share);
      rows.push(row);
      process.stderr.write(`[bench] run ${run + 1} share ${share}: ${JSON.stringify(row)}\n`);
    }
  }
  const after = await machineState();
  await rm(work, { recursive: true, force: true });
  const base = median(rows.filter((r) => r.share === 0).map((r) => r.live_fps));
  const summary = SHARES.map((share) => {
    const of = rows.filter((r) => r.share === share);
    const fps = median(of.map((r) => r.live_fps));
    return {
      share,
      live_fps: fps,
      live_over_none: fps / base,
      p50: median(of.map((r) => r.latency_ms_p50)),
      p99: median(of.map((r) => r.latency_ms_p99)),
      live_dropped: of.reduce((s, r) => s + r.live_dropped, 0),
      shadow_fps: median(of.map((r) => r.shadow_fps)),
      shadow_dropped: of.reduce((s, r) => s + r.shadow_dropped, 0),
    };
  });
  const report = {
    machine: machineInfo(),
    before,
    after,
    size: SIZE,
    fps: FPS,
    seconds: SECONDS,
    runs: RUNS,
    summary,
    rows,
  };
  const md = [
    "# Live inspection with a candidate in shadow",
    "",
    `\`node dist/benchmarks/shadow.js --runs ${RUNS} --seconds ${SECONDS} --size ${SIZE} --fps ${FPS}\` on ${String(report.machine.cpu)} (${String(report.machine.logical_cpus)} cores, shared): one camera (videotestsrc snow, ${SIZE}², ${FPS} frames/s offered), a small bundle live and another as the candidate; ${RUNS} runs of ${SECONDS} s per share after ${WARMUP_S} s of warm-up, shares alternating, medians. Load before ${JSON.stringify(before.loadavg)}, after ${JSON.stringify(after.loadavg)}.`,
    "",
    "| shadow share | live frames/s | vs no shadow | capture→delivery p50 / p99 ms | live dropped | shadow frames/s | shadow dropped |",
    "|---:|---:|---:|---:|---:|---:|---:|",
    ...summary.map(
      (s) =>
        `| ${s.share === 0 ? "none" : `${s.share * 100} %`} | ${fmt(s.live_fps)} | ${fmt(s.live_over_none, 3)} | ${fmt(s.p50, 0)} / ${fmt(s.p99, 0)} | ${s.live_dropped} | ${fmt(s.shadow_fps)} | ${s.shadow_dropped} |`,
    ),
  ].join("\n");
  const out = await writeResults("shadow", report, md);
  process.stderr.write(`[bench] wrote ${out}\n${md}\n`);
}

await main();
