import net from "node:net";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { pino } from "pino";
import { Daemon } from "../src/daemon/daemon.js";
import { testConfig } from "../test/helpers/config.js";
import { noiseFrames, replaySource } from "../test/helpers/daemon-process.js";
import { freePort } from "../test/helpers/opcua.js";
import { writeTinyBundle } from "../test/helpers/tiny-bundle.js";
import { tempDir } from "../test/helpers/tiny-data.js";
import { fmt, machineInfo, machineState, median, runJsonChild, writeResults } from "./common.js";

/**
 * How long after the model is loaded the PLC can reach the OPC UA port: an in-process daemon (tiny bundle, one
 * replay camera, the MQTT broker away, HTTP off) is started and the port is probed with TCP connects every 10 ms.
 * Times are from `daemon.start()`: `model_ms` when the "model loaded" line is logged, `listening_ms` when the first
 * connect succeeds; `after_model_ms` is the difference, the figure issue 23 asks to bring to seconds.
 *
 * Cases: a first start (an empty `pki_dir`: the server's key and self-signed certificate are created) and a later
 * start (the same `pki_dir` again: they are read). Each start runs in a process of its own, so it pays for loading
 * node-opcua as a daemon's start does.
 *
 * `--bundle` starts with that bundle instead of a tiny 32×32 one (a real model takes longer to load, which the
 * server's preparation runs alongside).
 *
 * Run: node dist/benchmarks/opcua-startup.js [--runs 3] [--stem opcua-startup] [--bundle <dir>]
 * Writes benchmarks/results/<stem>.json and .md.
 */

interface Run {
  case: "first start" | "later start";
  model_ms: number;
  listening_ms: number;
  after_model_ms: number;
}

/** Resolves once a TCP connect to `port` succeeds; checks every 10 ms. */
async function portOpen(port: number, stop: { done: boolean }): Promise<number> {
  for (;;) {
    if (stop.done) return Number.NaN;
    const open = await new Promise<boolean>((resolve) => {
      const socket = net.connect({ port, host: "127.0.0.1" });
      socket.once("connect", () => {
        socket.destroy();
        resolve(true);
      });
      socket.once("error", () => resolve(false));
    });
    if (open) return performance.now();
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function startOnce(
  work: string,
  pkiDir: string,
  which: Run["case"],
  bundle: string,
  noise: string,
): Promise<Run> {
  const port = await freePort();
  const config = testConfig({
    model: { bundle, watch: false },
    cameras: [{ id: "cam1", source: replaySource(noise, 5) }],
    mqtt: { url: "mqtt://127.0.0.1:1", outbox: { dir: path.join(work, `outbox-${port}`) } },
    http: { enabled: false },
    opcua: { enabled: true, port, bind: "127.0.0.1", pki_dir: pkiDir, allow_anonymous: true },
    health: { watchdog: false },
  });
  let modelAt = Number.NaN;
  const logger = pino(
    { level: "info" },
    {
      write: (line: string) => {
        if (Number.isNaN(modelAt) && line.includes('"msg":"model loaded"')) modelAt = performance.now();
      },
    },
  );
  const daemon = new Daemon(config, logger);
  const stop = { done: false };
  const t0 = performance.now();
  const listening = portOpen(port, stop);
  try {
    await daemon.start();
    const listenAt = await listening;
    return {
      case: which,
      model_ms: Math.round(modelAt - t0),
      listening_ms: Math.round(listenAt - t0),
      after_model_ms: Math.round(listenAt - modelAt),
    };
  } finally {
    stop.done = true;
    await daemon.stop();
  }
}

/** One start in this process: `--child <work> <pki_dir> <case> <bundle>`; prints the run as JSON. */
async function child(work: string, pki: string, which: Run["case"], bundle: string): Promise<void> {
  const run = await startOnce(work, pki, which, bundle, path.join(work, "noise"));
  console.log(JSON.stringify(run));
  // node-opcua leaves timers behind after shutdown; the run is over
  process.exit(0);
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      runs: { type: "string", default: "3" },
      stem: { type: "string", default: "opcua-startup" },
      bundle: { type: "string" },
    },
  });
  const runs = Number(values.runs);
  const work = await tempDir("stpmd-opcua-startup-");
  const bundle = values.bundle ?? path.join(work, "model");
  if (values.bundle === undefined) await writeTinyBundle(bundle);
  await noiseFrames(path.join(work, "noise"), 4, 32);
  const state = await machineState();
  const results: Run[] = [];
  const script = new URL(import.meta.url).pathname;
  for (let i = 0; i < runs; i++) {
    const pki = path.join(work, `pki-${i}`);
    for (const which of ["first start", "later start"] as const) {
      const run = (await runJsonChild(process.execPath, [
        script,
        "--child",
        work,
        pki,
        which,
        bundle,
      ])) as Run;
      results.push(run);
      console.log(
        `${which}: model loaded ${run.model_ms} ms, OPC UA listening ${run.listening_ms} ms (${run.after_model_ms} ms after the model)`,
      );
    }
  }
  const summary = (["first start", "later start"] as const).map((which) => {
    const of = results.filter((r) => r.case === which);
    return {
      case: which,
      runs: of.length,
      median_after_model_ms: median(of.map((r) => r.after_model_ms)),
      max_after_model_ms: Math.max(...of.map((r) => r.after_model_ms)),
      median_listening_ms: median(of.map((r) => r.listening_ms)),
    };
  });
  const md = [
    "# OPC UA start-up: model loaded → port open",
    "",
    "| case | runs | median after model (ms) | max after model (ms) | median from start (ms) |",
    "|---|---|---|---|---|",
    ...summary.map(
      (s) =>
        `| ${s.case} | ${s.runs} | ${fmt(s.median_after_model_ms, 0)} | ${s.max_after_model_ms} | ${fmt(s.median_listening_ms, 0)} |`,
    ),
  ].join("\n");
  const report = {
    machine: machineInfo(),
    state,
    bundle: values.bundle ?? "tiny (32×32)",
    runs: results,
    summary,
  };
  await writeResults(values.stem, report, md);
  console.log(md);
}

if (process.argv[2] === "--child") {
  await child(process.argv[3]!, process.argv[4]!, process.argv[5] as Run["case"], process.argv[6]!);
} else {
  await main();
}
