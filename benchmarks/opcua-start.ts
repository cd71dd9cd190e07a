import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { startTestServer } from "../test/helpers/opcua.js";
import { fmt, machineInfo, machineState, median, writeResults } from "./common.js";

/**
 * What the OPC 40100 (Machine Vision) view costs at start: the time from constructing the OPC UA interface to its
 * port listening, with and without `opcua.machine_vision.enabled` (which loads the DI and MachineVision nodesets
 * besides the standard one and instantiates the VisionSystem). Runs alternate between the two so that load drift
 * hits both; each run has a fresh certificate store, as a first start has.
 *
 * Run: node dist/benchmarks/opcua-start.js [--runs 5]
 * Writes benchmarks/results/opcua-start.json and .md.
 */
async function once(machineVision: boolean): Promise<{ ms: number; heapMiB: number }> {
  const t0 = performance.now();
  const server = await startTestServer({ machine_vision: { enabled: machineVision } }, ["cam1", "cam2"]);
  const ms = performance.now() - t0;
  const heapMiB = process.memoryUsage().heapUsed / 2 ** 20;
  await server.stop();
  return { ms, heapMiB };
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { runs: { type: "string", default: "5" } } });
  const runs = Number(values.runs);
  const before = await machineState();
  const off: number[] = [];
  const on: number[] = [];
  await once(false); // warm the module cache and the JIT: a daemon pays that once, not per configuration
  for (let i = 0; i < runs; i++) {
    off.push((await once(false)).ms);
    on.push((await once(true)).ms);
    process.stderr.write(`run ${i + 1}: off ${fmt(off[i])} ms, on ${fmt(on[i])} ms\n`);
  }
  const report = {
    benchmark: "OPC UA interface start → listening, with and without the Machine Vision view",
    machine: machineInfo(),
    load_before: before,
    load_after: await machineState(),
    runs,
    off_ms: off,
    on_ms: on,
    off_median_ms: median(off),
    on_median_ms: median(on),
  };
  const lines = [
    "# OPC UA start with and without the Machine Vision view",
    "",
    `Start of the OPC UA interface (fresh certificate store: key and self-signed certificate made, address space built, port listening), median of ${runs} alternating runs after one untimed one.`,
    "",
    "| opcua.machine_vision.enabled | median ms | runs ms |",
    "|---|---:|---|",
    `| false | ${fmt(report.off_median_ms)} | ${off.map((x) => fmt(x, 0)).join(", ")} |`,
    `| true | ${fmt(report.on_median_ms)} | ${on.map((x) => fmt(x, 0)).join(", ")} |`,
    "",
    `Load before: \`${before.uptime}\`, after: \`${report.load_after.uptime}\`.`,
    "",
  ];
  await writeResults("opcua-start", report, lines.join("\n"));
  process.stdout.write(lines.join("\n"));
}

await main();
