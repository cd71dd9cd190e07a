import path from "node:path";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { createLogger } from "../src/core/log.js";
import type { InspectionResult } from "../src/core/result.js";
import { Daemon } from "../src/daemon/daemon.js";
import { MosquittoBroker } from "../src/demo/broker.js";
import { ScorerThread } from "../src/pipeline/scorer-thread.js";
import { testConfig } from "../test/helpers/config.js";
import { noiseFrames, replaySource, trainTinyBundle } from "../test/helpers/daemon-process.js";
import { tempDir } from "../test/helpers/tiny-data.js";
import { fmt, machineInfo, machineState, median, writeResults } from "./common.js";

/**
 * Recipe switch time (docs/recipes.md): the real daemon with `--cameras` replay cameras at `--fps`, two recipes
 * whose bundles (two tiny 64×64 bundles, so the figure is the switch's own cost, not a large model's load) and
 * thresholds differ, switched `--switches` times back and forth through the control (what every interface calls).
 * Per switch: the request → acknowledged time (the new bundle loaded and checked, each camera switched) and the
 * request → first frame judged under the new recipe, per camera and for the line (the last camera's). Only the
 * recipe in force has its bundle loaded, as in the daemon, so every switch loads the other bundle; for scale, the
 * load of that bundle alone (inference thread, sessions, probe; 5 times, before the daemon starts) is reported too.
 *
 * Run: node dist/benchmarks/recipe-switch.js [--switches 6] [--cameras 2] [--fps 30]
 * Writes results/recipe-switch.{json,md}.
 */

const { values } = parseArgs({
  options: {
    switches: { type: "string", default: "6" },
    cameras: { type: "string", default: "2" },
    fps: { type: "string", default: "30" },
  },
});
const SWITCHES = Number(values.switches);
const CAMERAS = Number(values.cameras);
const FPS = Number(values.fps);

interface Switch {
  from: string;
  to: string;
  /** Request → selectRecipe resolved (bundles loaded, cameras switched), ms. */
  ack_ms: number;
  /** Request → each camera's first frame judged under the new recipe, ms. */
  first_frame_ms: Record<string, number>;
  /** Request → the last camera's first frame under the new recipe: the line's switch time, ms. */
  line_ms: number;
}

async function main(): Promise<void> {
  const before = await machineState();
  const work = await tempDir("stpmd-bench-recipes-");
  const bundles = { A: path.join(work, "bundle-a"), B: path.join(work, "bundle-b") };
  await trainTinyBundle(work, bundles.A, 1);
  await trainTinyBundle(work, bundles.B, 2);
  await noiseFrames(path.join(work, "noise"), 8, 64);
  const loads: number[] = [];
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    const scorer = await ScorerThread.load(bundles.B, { providers: ["cpu"], intraOpThreads: 0 });
    loads.push(round(performance.now() - t0));
    await scorer.release();
  }
  const ids = Array.from({ length: CAMERAS }, (_, i) => `cam${i + 1}`);
  const recipe = (bundle: string, value: number) =>
    Object.fromEntries(ids.map((id) => [id, { bundle, threshold: { value } }]));
  const broker = await MosquittoBroker.start();
  const results: { at: number; result: InspectionResult }[] = [];
  const daemon = new Daemon(
    testConfig({
      model: { bundle: bundles.A, watch: false },
      inference: { max_batch: CAMERAS, max_wait_ms: 0, queue_size: 16 },
      cameras: ids.map((id) => ({ id, source: replaySource(path.join(work, "noise"), FPS) })),
      recipes: { A: recipe(bundles.A, 1e-9), B: recipe(bundles.B, 1e9) },
      active_recipe: "A",
      mqtt: { url: broker.url, client_id: "bench-recipes", outbox: { dir: path.join(work, "outbox") } },
      records: { enabled: false },
      collection: { dir: path.join(work, "frames") },
      health: { watchdog: false },
    }),
    createLogger("warn"),
    { hooks: { onResult: (result) => results.push({ at: performance.now(), result }) } },
  );
  const switches: Switch[] = [];
  try {
    await daemon.start();
    await waitUntil(() => ids.every((id) => results.some((r) => r.result.frame.cameraId === id)), 30_000);
    let from = "A";
    for (let i = 0; i < SWITCHES; i++) {
      const to = from === "A" ? "B" : "A";
      await new Promise((r) => setTimeout(r, 500)); // the line runs steadily under `from` first
      const mark = results.length;
      const t0 = performance.now();
      await daemon.control.selectRecipe(to, { via: "mqtt", user: "bench" });
      const ack = performance.now() - t0;
      const firstOf = (id: string) =>
        results.slice(mark).find((r) => r.result.frame.cameraId === id && r.result.frame.recipe === to);
      await waitUntil(() => ids.every((id) => firstOf(id) !== undefined), 15_000);
      const first = Object.fromEntries(ids.map((id) => [id, round(firstOf(id)!.at - t0)]));
      switches.push({
        from,
        to,
        ack_ms: round(ack),
        first_frame_ms: first,
        line_ms: Math.max(...Object.values(first)),
      });
      process.stderr.write(
        `[bench] ${from} → ${to}: ack ${fmt(ack)} ms, line ${fmt(switches.at(-1)!.line_ms)} ms\n`,
      );
      from = to;
    }
  } finally {
    await daemon.stop();
    await broker.stop();
  }
  const summary = {
    bundle_load_ms_median: median(loads),
    ack_ms_median: median(switches.map((s) => s.ack_ms)),
    line_ms_median: median(switches.map((s) => s.line_ms)),
    line_ms_max: Math.max(...switches.map((s) => s.line_ms)),
  };
  const report = {
    benchmark: "recipe-switch",
    command: `node dist/benchmarks/recipe-switch.js --switches ${SWITCHES} --cameras ${CAMERAS} --fps ${FPS}`,
    cameras: CAMERAS,
    fps: FPS,
    bundles: "two tiny 64×64 bundles (trainTinyBundle), one loaded at a time",
    summary,
    bundle_loads_ms: loads,
    switches,
    machine: machineInfo(),
    load_before: before,
    load_after: await machineState(),
  };
  const rows = switches.map(
    (s, i) =>
      `| ${i + 1} | ${s.from} → ${s.to} | ${fmt(s.ack_ms)} | ${ids.map((id) => fmt(s.first_frame_ms[id])).join(" | ")} | ${fmt(s.line_ms)} |`,
  );
  const markdown = [
    "# Recipe switch time",
    "",
    `${CAMERAS} replay cameras at ${FPS} fps, two recipes with different bundles (tiny 64×64) and thresholds, ${SWITCHES} switches back and forth through the control (\`${report.command}\`). Ack: request → the switch acknowledged (the other bundle loaded and checked, cameras switched). First frame: request → the camera's first frame judged under the new recipe.`,
    "",
    `Median ack ${fmt(summary.ack_ms_median)} ms (the bundle's load alone: median ${fmt(summary.bundle_load_ms_median)} ms of 5); median line switch (the last camera's first frame) ${fmt(summary.line_ms_median)} ms, at most ${fmt(summary.line_ms_max)} ms.`,
    "",
    `| # | switch | ack ms | ${ids.map((id) => `${id} first frame ms`).join(" | ")} | line ms |`,
    `| -: | --- | -: | ${ids.map(() => "-:").join(" | ")} | -: |`,
    ...rows,
  ].join("\n");
  await writeResults("recipe-switch", report, markdown);
  process.stdout.write(`${JSON.stringify(summary)}\n`);
}

function round(ms: number): number {
  return Math.round(ms * 10) / 10;
}

async function waitUntil(done: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`not reached within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
