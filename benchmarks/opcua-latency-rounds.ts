import path from "node:path";
import { parseArgs } from "node:util";
import { fmt, machineInfo, machineState, median, runJsonChild, writeResults } from "./common.js";

/**
 * Does the OPC 40100 Machine Vision view change the trigger → ResultsReady latency? Runs opcua-latency.js with and
 * without `--machine-vision` in alternation (the order flips every round, so that a drift of the shared box's
 * load does not favour one side), each run a fresh process and server, and compares the rounds' p50 / p99.
 *
 * Run: node dist/benchmarks/opcua-latency-rounds.js [--triggers 300] [--rounds 4] [--warmup 20]
 * Writes benchmarks/results/opcua-latency-rounds.json and .md.
 */

interface Row {
  name: string;
  p50_ms: number;
  p99_ms: number;
  mean_ms: number;
}

interface Run {
  round: number;
  machine_vision: boolean;
  rows: Row[];
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      triggers: { type: "string", default: "300" },
      rounds: { type: "string", default: "4" },
      warmup: { type: "string", default: "20" },
    },
  });
  const rounds = Number(values.rounds);
  const script = path.join(path.dirname(new URL(import.meta.url).pathname), "opcua-latency.js");
  const before = await machineState();
  const runs: Run[] = [];
  for (let round = 0; round < rounds; round++) {
    for (const mv of round % 2 === 0 ? [false, true] : [true, false]) {
      process.stderr.write(`round ${round + 1}/${rounds}, machine vision ${mv ? "on" : "off"}…\n`);
      const args = [script, "--json", "--triggers", values.triggers, "--warmup", values.warmup];
      const report = (await runJsonChild(process.execPath, mv ? [...args, "--machine-vision"] : args)) as {
        rows: Row[];
      };
      runs.push({ round: round + 1, machine_vision: mv, rows: report.rows });
    }
  }
  const cases = runs[0]!.rows.map((r) => r.name);
  const of = (mv: boolean, name: string, key: "p50_ms" | "p99_ms") =>
    runs.filter((r) => r.machine_vision === mv).map((r) => r.rows.find((row) => row.name === name)![key]);
  const summary = cases.map((name) => ({
    name,
    off_p50_median_ms: median(of(false, name, "p50_ms")),
    on_p50_median_ms: median(of(true, name, "p50_ms")),
    off_p50_range_ms: [Math.min(...of(false, name, "p50_ms")), Math.max(...of(false, name, "p50_ms"))],
    on_p50_range_ms: [Math.min(...of(true, name, "p50_ms")), Math.max(...of(true, name, "p50_ms"))],
    off_p99_median_ms: median(of(false, name, "p99_ms")),
    on_p99_median_ms: median(of(true, name, "p99_ms")),
  }));
  const after = await machineState();
  const report = {
    benchmark: "opcua-latency.js with and without --machine-vision, alternating rounds",
    machine: machineInfo(),
    load_before: before,
    load_after: after,
    triggers_per_case: Number(values.triggers),
    warmup_per_case: Number(values.warmup),
    rounds,
    summary,
    runs,
  };
  const range = (r: number[]) => `${fmt(r[0], 2)}–${fmt(r[1], 2)}`;
  const lines = [
    "# OPC UA trigger → ResultsReady latency with and without the Machine Vision view",
    "",
    `opcua-latency.js (${values.triggers} triggers per case after ${values.warmup} untimed ones, a fresh process and server per run) with and without \`--machine-vision\`, ${rounds} rounds, the order flipped every round. With the view on, every triggered part also gets a ResultReadyEvent, a stored result and a state-machine update, done in one batch 20 ms after the part's trigger or result, not between the result and ResultsReady.`,
    "",
    "| case | p50 off (median of rounds) | p50 on | p50 off, range | p50 on, range | p99 off (median) | p99 on (median) |",
    "|---|---:|---:|---:|---:|---:|---:|",
    ...summary.map(
      (s) =>
        `| ${s.name} | ${fmt(s.off_p50_median_ms, 2)} | ${fmt(s.on_p50_median_ms, 2)} | ${range(s.off_p50_range_ms)} | ${range(s.on_p50_range_ms)} | ${fmt(s.off_p99_median_ms, 2)} | ${fmt(s.on_p99_median_ms, 2)} |`,
    ),
    "",
    "Per run (ms, p50 / p99):",
    "",
    `| round | view | ${cases.join(" | ")} |`,
    `|---:|---|${cases.map(() => "---:").join("|")}|`,
    ...runs.map(
      (r) =>
        `| ${r.round} | ${r.machine_vision ? "on" : "off"} | ${r.rows.map((row) => `${fmt(row.p50_ms, 2)} / ${fmt(row.p99_ms, 2)}`).join(" | ")} |`,
    ),
    "",
    `Load before \`${before.uptime}\`, after \`${after.uptime}\` (the load before is the sign of other work on the box).`,
    "",
  ];
  await writeResults("opcua-latency-rounds", report, lines.join("\n"));
  process.stdout.write(lines.join("\n"));
}

await main();
