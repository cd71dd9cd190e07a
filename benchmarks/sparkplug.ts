import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { completeConfig } from "../src/config/index.js";
import { createLogger } from "../src/core/log.js";
import { MosquittoBroker } from "../src/demo/broker.js";
import { SparkplugNode } from "../src/publish/sparkplug/sparkplug.js";
import { TestLineControl } from "../test/helpers/line-control.js";
import { fmt, machineInfo, machineState, mainThreadCpuMs, median, writeResults } from "./common.js";

/**
 * The CPU the Sparkplug edge node costs: results are fed at `--rate` per second for `--seconds` through the
 * in-process TestLineControl (the same onResult calls the daemon makes), once with no interface and once with a
 * started, born SparkplugNode on a local mosquitto, alternating, `--runs` times each. Two figures per run, per wall
 * second: the main thread's CPU time (from /proc/self/task/<pid>/stat: the node's work, its encoding and its socket
 * writes all run there, and the GC and libuv helper threads, whose time swings with the machine's load, are left
 * out) and the whole process's (process.cpuUsage). The broker runs in its own process and is not counted.
 * `--defect-rate` of the results are defective (each one DDATA at once).
 *
 * Run: node dist/benchmarks/sparkplug.js [--rate 90] [--seconds 10] [--runs 3] [--defect-rate 0.01] [--cameras 2]
 * Writes results/sparkplug-cpu.{json,md}.
 */

const { values } = parseArgs({
  options: {
    rate: { type: "string", default: "90" },
    seconds: { type: "string", default: "10" },
    runs: { type: "string", default: "3" },
    "defect-rate": { type: "string", default: "0.01" },
    cameras: { type: "string", default: "2" },
  },
});
const rate = Number(values.rate);
const seconds = Number(values.seconds);
const runs = Number(values.runs);
const defectRate = Number(values["defect-rate"]);
const cameraIds = Array.from({ length: Number(values.cameras) }, (_, i) => `cam${i + 1}`);
const TICK_MS = 5;
const BURST_RESULTS = 20_000;

interface Feed {
  main_thread_cpu_ms_per_s: number;
  process_cpu_ms_per_s: number;
  results: number;
}

/** Feeds `rate` results/s for `seconds` (paced against the clock) and returns CPU ms per wall second. */
async function feed(control: TestLineControl): Promise<Feed> {
  let emitted = 0;
  let defectsDue = 0;
  const cpu0 = process.cpuUsage();
  const main0 = mainThreadCpuMs();
  const t0 = performance.now();
  for (;;) {
    const elapsed = performance.now() - t0;
    if (elapsed >= seconds * 1000) break;
    const due = Math.floor((elapsed / 1000) * rate);
    while (emitted < due) {
      defectsDue += defectRate;
      const defective = defectsDue >= 1;
      if (defective) defectsDue -= 1;
      control.emit(cameraIds[emitted % cameraIds.length]!, defective ? 0.9 : 0.1);
      emitted += 1;
    }
    await new Promise((resolve) => setTimeout(resolve, TICK_MS));
  }
  const wall = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  return {
    main_thread_cpu_ms_per_s: (mainThreadCpuMs() - main0) / wall,
    process_cpu_ms_per_s: (cpu.user + cpu.system) / 1000 / wall,
    results: emitted,
  };
}

/**
 * CPU µs per result with no pacing: `count` results back to back (yielding every 100 so the socket drains), where
 * the timers and sleeps of the paced feed are absent and a difference of a few µs per result stands out of the
 * noise of a loaded machine.
 */
async function burst(control: TestLineControl, count: number): Promise<number> {
  let defectsDue = 0;
  const cpu0 = process.cpuUsage();
  for (let i = 0; i < count; i++) {
    defectsDue += defectRate;
    const defective = defectsDue >= 1;
    if (defective) defectsDue -= 1;
    control.emit(cameraIds[i % cameraIds.length]!, defective ? 0.9 : 0.1);
    if (i % 100 === 99) await new Promise((resolve) => setImmediate(resolve));
  }
  const cpu = process.cpuUsage(cpu0);
  return (cpu.user + cpu.system) / count;
}

async function runOnce(
  broker: MosquittoBroker,
  withNode: boolean,
  n: number,
  mode: "paced" | "burst" = "paced",
) {
  const control = new TestLineControl(cameraIds, 0.5);
  const dir = await mkdtemp(path.join(os.tmpdir(), "stpmd-sparkplug-bench-"));
  let node: SparkplugNode | undefined;
  if (withNode) {
    const config = completeConfig({
      model: { bundle: "unused" },
      cameras: cameraIds.map((id) => ({ id, source: "videotestsrc" })),
      mqtt: { url: broker.url, client_id: `bench-${n}` },
      sparkplug: {
        enabled: true,
        group_id: "bench",
        edge_node_id: `node${n}`,
        bdseq_file: path.join(dir, "bdseq"),
        history: { dir: path.join(dir, "history") },
      },
    });
    node = new SparkplugNode(
      { sparkplug: config.sparkplug, mqtt: config.mqtt },
      control,
      createLogger("warn"),
    );
    control.interfaces.push(node);
    await node.start();
    while (!node.isBorn) await new Promise((resolve) => setTimeout(resolve, 10));
  }
  try {
    return mode === "paced" ? await feed(control) : await burst(control, BURST_RESULTS);
  } finally {
    await node?.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

const before = await machineState();
const broker = await MosquittoBroker.start();
const rows: { run: number; without: Feed; with: Feed }[] = [];
const bursts: { run: number; without_us_per_result: number; with_us_per_result: number }[] = [];
try {
  await runOnce(broker, true, -1); // warm-up: JIT, first connect
  for (let run = 0; run < runs; run++) {
    // alternating order, so a drift in the machine's load hits both sides alike
    const nodeFirst = run % 2 === 1;
    const a = await runOnce(broker, nodeFirst, run);
    const b = await runOnce(broker, !nodeFirst, run);
    const [on, off] = nodeFirst ? [a, b] : [b, a];
    rows.push({ run, without: off as Feed, with: on as Feed });
    console.error(JSON.stringify(rows.at(-1)));
  }
  for (let run = 0; run < runs; run++) {
    const nodeFirst = run % 2 === 1;
    const a = (await runOnce(broker, nodeFirst, 100 + run, "burst")) as number;
    const b = (await runOnce(broker, !nodeFirst, 100 + run, "burst")) as number;
    const [on, off] = nodeFirst ? [a, b] : [b, a];
    bursts.push({ run, without_us_per_result: off, with_us_per_result: on });
    console.error(JSON.stringify(bursts.at(-1)));
  }
} finally {
  await broker.close();
}
const after = await machineState();
const med = (side: "without" | "with", key: "main_thread_cpu_ms_per_s" | "process_cpu_ms_per_s") =>
  median(rows.map((r) => r[side][key]));
// the difference within each run (same machine state), then the median over runs
const extraMain = median(
  rows.map((r) => r.with.main_thread_cpu_ms_per_s - r.without.main_thread_cpu_ms_per_s),
);
const extraProcess = median(rows.map((r) => r.with.process_cpu_ms_per_s - r.without.process_cpu_ms_per_s));
const extraUsPerResult = median(bursts.map((r) => r.with_us_per_result - r.without_us_per_result));
const result = {
  machine: machineInfo(),
  before,
  after,
  rate,
  seconds,
  runs,
  defect_rate: defectRate,
  cameras: cameraIds.length,
  rows,
  median_main_thread_cpu_ms_per_s: {
    without: med("without", "main_thread_cpu_ms_per_s"),
    with: med("with", "main_thread_cpu_ms_per_s"),
  },
  median_process_cpu_ms_per_s: {
    without: med("without", "process_cpu_ms_per_s"),
    with: med("with", "process_cpu_ms_per_s"),
  },
  extra_main_thread_cpu_ms_per_s: extraMain,
  extra_process_cpu_ms_per_s: extraProcess,
  bursts,
  burst_results: BURST_RESULTS,
  extra_us_per_result: extraUsPerResult,
  extra_cpu_ms_per_s_from_bursts: (extraUsPerResult * rate) / 1000,
};
const stem = rate === 90 && seconds === 10 ? "sparkplug-cpu" : `sparkplug-cpu-${rate}-${seconds}s`;
const md = [
  "# Sparkplug edge node CPU",
  "",
  `${rate} results/s over ${cameraIds.length} cameras for ${seconds} s, ${defectRate * 100} % defective, through the in-process TestLineControl; without and with a born SparkplugNode on a local mosquitto (broker CPU not counted), ${runs} runs each, alternating. CPU ms per wall second: the main thread's (/proc) and the whole process's (process.cpuUsage).`,
  "",
  `Load before: \`${before.uptime}\`; after: \`${after.uptime}\`.`,
  "",
  "| run | main thread without | main thread with | process without | process with |",
  "|---:|---:|---:|---:|---:|",
  ...rows.map(
    (r) =>
      `| ${r.run} | ${fmt(r.without.main_thread_cpu_ms_per_s)} | ${fmt(r.with.main_thread_cpu_ms_per_s)} | ${fmt(r.without.process_cpu_ms_per_s)} | ${fmt(r.with.process_cpu_ms_per_s)} |`,
  ),
  "",
  `Back to back (${BURST_RESULTS} results per run, no pacing, process CPU): ${bursts.map((b) => `${fmt(b.without_us_per_result)} → ${fmt(b.with_us_per_result)}`).join(", ")} µs per result; median extra **${fmt(extraUsPerResult, 2)} µs per result**, i.e. **${fmt((extraUsPerResult * rate) / 1000, 2)} CPU ms/s at ${rate} results/s** (${fmt((extraUsPerResult * rate) / 10000, 3)} % of one core) plus the once-a-second report.`,
  "",
  `Paced, median of the per-run differences: the node costs **${fmt(extraMain)} CPU ms/s on the main thread** (${fmt(extraMain / 10, 2)} % of one core), ${fmt(extraProcess)} ms/s for the whole process, at ${rate} results/s.`,
  "",
].join("\n");
await writeResults(stem, result, md);
