/**
 * The CPU the HTTP metrics and the MQTT commands add to a daemon inspecting 90 results/s.
 *
 * The measured process plays the daemon's result path: a real Publisher (connected to a local mosquitto)
 * publishes every result of a TestLineControl emitting 90 normal results/s over two cameras, in ticks of 10 ms
 * (one onBatch per tick). "baseline" is that alone; "with" adds the HttpInterface (onResult, onBatch, prom-client's
 * process metrics) and MqttCommands, while a child process scrapes /metrics and sends a `status` command (waiting
 * for its response) once a second. The child's own CPU is not counted: it stands for Prometheus and an HMI.
 * process.cpuUsage() over each run; runs alternate the order of the two variants; medians are reported.
 *
 *   node dist/benchmarks/line-interfaces.js [--runs 5] [--seconds 10] [--rate 90]
 */
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import mqtt from "mqtt";
import { completeConfig } from "../src/config/index.js";
import { createLogger } from "../src/core/log.js";
import { freeLoopbackPort, MosquittoBroker } from "../src/demo/broker.js";
import { HttpInterface } from "../src/publish/http/http.js";
import { MqttCommands } from "../src/publish/mqtt/commands.js";
import { Publisher } from "../src/publish/mqtt/publisher.js";
import { Topics } from "../src/publish/topics.js";
import { TestLineControl } from "../test/helpers/line-control.js";
import {
  cpuPairsTable,
  machineInfo,
  machineState,
  median,
  PACE_TICK_MS,
  pacedResults,
  writeResults,
} from "./common.js";

/** The metrics and health routes alone, as before the console existed. */
const NO_CONSOLE = { enabled: false, users: [], max_clients: 8, session_idle_min: 720 };

const WARMUP_S = 1;
const logger = createLogger("silent");
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Child mode: once a second, scrape /metrics and send `status`, until `seconds` pass; prints one JSON line. */
async function client(httpUrl: string, mqttUrl: string, seconds: number): Promise<void> {
  const mq = await mqtt.connectAsync(mqttUrl, { reconnectPeriod: 0 });
  (mq.stream as { setNoDelay?: (noDelay: boolean) => void }).setNoDelay?.(true); // as the daemon does
  const answered = new Map<string, () => void>();
  mq.on("message", (_topic, payload) => {
    const tx = String((JSON.parse(payload.toString("utf8")) as { transaction?: unknown }).transaction);
    answered.get(tx)?.();
  });
  await mq.subscribeAsync("stpmd/command/status/response", { qos: 1 });
  process.stdout.write("ready\n");
  const scrapeMs: number[] = [];
  const commandMs: number[] = [];
  let bytes = 0;
  const end = Date.now() + seconds * 1000;
  for (let i = 0; Date.now() < end; i++) {
    const next = Date.now() + 1000;
    let t = performance.now();
    const body = await (await fetch(httpUrl)).text();
    scrapeMs.push(performance.now() - t);
    bytes = body.length;
    t = performance.now();
    const tx = `bench-${i}`;
    const response = new Promise<void>((resolve) => answered.set(tx, resolve));
    await mq.publishAsync("stpmd/command/status", JSON.stringify({ transaction: tx }), { qos: 1 });
    await response;
    commandMs.push(performance.now() - t);
    await sleep(Math.max(0, next - Date.now()));
  }
  await mq.endAsync();
  process.stdout.write(
    `${JSON.stringify({ scrapes: scrapeMs.length, scrape_ms_median: median(scrapeMs), metrics_bytes: bytes, commands: commandMs.length, command_rtt_ms_median: median(commandMs) })}\n`,
  );
}

/** Child mode: `count` scrapes back to back, a marker line, then `count` status commands, another marker. */
async function burstClient(httpUrl: string, mqttUrl: string, count: number): Promise<void> {
  const mq = await mqtt.connectAsync(mqttUrl, { reconnectPeriod: 0 });
  (mq.stream as { setNoDelay?: (noDelay: boolean) => void }).setNoDelay?.(true); // as the daemon does
  let answers = 0;
  mq.on("message", () => {
    answers += 1;
  });
  await mq.subscribeAsync("stpmd/command/status/response", { qos: 1 });
  process.stdout.write("ready\n");
  await sleep(200); // the parent reads its CPU clock on "ready"
  for (let i = 0; i < count; i++) await (await fetch(httpUrl)).text();
  process.stdout.write("scrapes-done\n");
  await sleep(200);
  for (let i = 0; i < count; i++) {
    const expected = answers + 1;
    await mq.publishAsync("stpmd/command/status", JSON.stringify({ transaction: i }), { qos: 1 });
    while (answers < expected) await sleep(1);
  }
  process.stdout.write("commands-done\n");
  await mq.endAsync();
}

/**
 * The daemon side's CPU per scrape and per `status` command, from `count` of each sent back to back by a child
 * while nothing else runs here: precise where the 90 results/s A/B is within the machine's noise.
 */
async function perRequestCpu(
  broker: MosquittoBroker,
  work: string,
  count: number,
): Promise<Record<string, number>> {
  const config = completeConfig({
    model: { bundle: "/nonexistent" },
    cameras: [{ id: "cam1", source: "videotestsrc" }],
    mqtt: { url: broker.url, client_id: "bench-burst", outbox: { dir: path.join(work, "outbox-burst") } },
  });
  const publisher = new Publisher(config.mqtt, logger);
  await publisher.start();
  while (!publisher.isConnected) await sleep(10);
  const control = new TestLineControl(["cam1", "cam2"], 0.5);
  for (let i = 0; i < 1000; i++) control.emit(i % 2 ? "cam1" : "cam2", 0.1);
  const http = new HttpInterface({
    config: { enabled: true, bind: "127.0.0.1", port: await freeLoopbackPort(), console: NO_CONSOLE },
    control,
    logger,
  });
  const commands = new MqttCommands({ session: publisher, topics: new Topics("stpmd"), control, logger });
  await http.start();
  await commands.start();
  control.interfaces.push(http);
  await sleep(200);
  const child = spawn(
    process.execPath,
    [
      fileURLToPath(import.meta.url),
      "--burst",
      String(count),
      "--http",
      `http://127.0.0.1:${http.address.port}/metrics`,
      "--mqtt",
      broker.url,
    ],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  const marks = new Map<string, NodeJS.CpuUsage>();
  let out = "";
  child.stdout.on("data", (chunk: Buffer) => {
    out += chunk.toString("utf8");
    for (const mark of ["ready", "scrapes-done", "commands-done"]) {
      if (!marks.has(mark) && out.includes(`${mark}\n`)) marks.set(mark, process.cpuUsage());
    }
  });
  await once(child, "exit");
  await commands.stop();
  await http.stop();
  await publisher.stop();
  const ms = (from: string, to: string) => {
    const a = marks.get(from)!;
    const b = marks.get(to)!;
    return (b.user - a.user + b.system - a.system) / 1000;
  };
  // each window also holds one 200 ms pause of the child, idle here
  return {
    requests: count,
    cpu_ms_per_scrape: ms("ready", "scrapes-done") / count,
    cpu_ms_per_status_command: ms("scrapes-done", "commands-done") / count,
  };
}

interface Run {
  variant: "baseline" | "with";
  run: number;
  results: number;
  cpu_ms_per_s: number;
  client?: unknown;
}

async function startClient(httpUrl: string, mqttUrl: string, seconds: number): Promise<ChildProcess> {
  const self = fileURLToPath(import.meta.url);
  const child = spawn(
    process.execPath,
    [self, "--client", "--http", httpUrl, "--mqtt", mqttUrl, "--seconds", String(seconds)],
    {
      stdio: ["ignore", "pipe", "inherit"],
    },
  );
  let out = "";
  child.stdout!.on("data", (chunk: Buffer) => {
    out += chunk.toString("utf8");
  });
  while (!out.includes("ready\n")) {
    if (child.exitCode !== null) throw new Error(`bench client exited with ${child.exitCode}`);
    await sleep(20);
  }
  (child as ChildProcess & { output: () => string }).output = () => out;
  return child;
}

async function measure(
  variant: Run["variant"],
  run: number,
  broker: MosquittoBroker,
  work: string,
  rate: number,
  seconds: number,
): Promise<Run> {
  const config = completeConfig({
    model: { bundle: "/nonexistent" },
    cameras: [{ id: "cam1", source: "videotestsrc" }],
    mqtt: {
      url: broker.url,
      client_id: `bench-${variant}-${run}`,
      outbox: { dir: path.join(work, `outbox-${variant}-${run}`) },
    },
  });
  const publisher = new Publisher(config.mqtt, logger);
  await publisher.start();
  while (!publisher.isConnected) await sleep(10);
  const control = new TestLineControl(["cam1", "cam2"], 0.5);
  let http: HttpInterface | undefined;
  let commands: MqttCommands | undefined;
  let child: ChildProcess | undefined;
  if (variant === "with") {
    http = new HttpInterface({
      config: { enabled: true, bind: "127.0.0.1", port: await freeLoopbackPort(), console: NO_CONSOLE },
      control,
      logger,
    });
    commands = new MqttCommands({ session: publisher, topics: new Topics("stpmd"), control, logger });
    await http.start();
    await commands.start();
    control.interfaces.push(http);
    await sleep(200); // the SUBACK, before the client's first command
    child = await startClient(
      `http://127.0.0.1:${http.address.port}/metrics`,
      broker.url,
      seconds + WARMUP_S,
    );
  }
  let emitted = 0;
  const paced = await pacedResults(rate, seconds, WARMUP_S, (due) => {
    for (let i = 0; i < due; i++) {
      // all normal frames: defects would add the outbox's disk writes, the same in both variants but noisy
      const result = control.emit(emitted % 2 === 0 ? "cam1" : "cam2", 0.1);
      publisher.publishResult(result);
      emitted += 1;
    }
    for (const i of control.interfaces) i.onBatch?.(due, 20);
  });
  let clientReport: unknown;
  if (child !== undefined) {
    await once(child, "exit");
    const lines = (child as ChildProcess & { output: () => string }).output().trim().split("\n");
    clientReport = JSON.parse(lines.at(-1)!);
  }
  await commands?.stop();
  await http?.stop();
  await publisher.stop();
  return {
    variant,
    run,
    results: paced.results,
    cpu_ms_per_s: paced.cpuMsPerS,
    ...(clientReport !== undefined ? { client: clientReport } : {}),
  };
}

/** The result path's own cost (µs per onResult) and one scrape's render time, measured in a loop. */
async function microbenchmarks(): Promise<Record<string, number>> {
  const control = new TestLineControl(["cam1", "cam2"], 0.5);
  const http = new HttpInterface({
    config: { enabled: true, bind: "127.0.0.1", port: 1, console: NO_CONSOLE },
    control,
    logger,
  });
  const result = control.emit("cam1", 0.9);
  const n = 1_000_000;
  for (let i = 0; i < 10_000; i++) http.onResult(result);
  let t = performance.now();
  for (let i = 0; i < n; i++) http.onResult(result);
  const onResultNs = ((performance.now() - t) * 1e6) / n;
  t = performance.now();
  for (let i = 0; i < n; i++) http.onBatch(8, 20);
  const onBatchNs = ((performance.now() - t) * 1e6) / n;
  const renders: number[] = [];
  for (let i = 0; i < 20; i++) await http.metrics.render();
  for (let i = 0; i < 200; i++) {
    t = performance.now();
    await http.metrics.render();
    renders.push(performance.now() - t);
  }
  return { on_result_ns: onResultNs, on_batch_ns: onBatchNs, render_ms_median: median(renders) };
}

const { values } = parseArgs({
  options: {
    client: { type: "boolean" },
    burst: { type: "string" },
    http: { type: "string" },
    mqtt: { type: "string" },
    runs: { type: "string", default: "5" },
    seconds: { type: "string", default: "10" },
    rate: { type: "string", default: "90" },
  },
});
const seconds = Number(values.seconds);
if (values.client) {
  await client(values.http!, values.mqtt!, seconds);
  process.exit(0);
}
if (values.burst !== undefined) {
  await burstClient(values.http!, values.mqtt!, Number(values.burst));
  process.exit(0);
}
const runs = Number(values.runs);
const rate = Number(values.rate);
const before = await machineState();
const micro = await microbenchmarks();
const broker = await MosquittoBroker.start({ extraConfig: ["set_tcp_nodelay true"] }); // as deploy/mosquitto
const work = await mkdtemp(path.join(os.tmpdir(), "stpmd-line-bench-"));
const rows: Run[] = [];
let perRequest: Record<string, number> = {};
try {
  // an unrecorded pair first: JIT and the broker's first connections would land on whichever ran first
  for (const variant of ["baseline", "with"] as const) await measure(variant, -1, broker, work, rate, 2);
  perRequest = await perRequestCpu(broker, work, 300);
  for (let run = 0; run < runs; run++) {
    const order: Run["variant"][] = run % 2 === 0 ? ["baseline", "with"] : ["with", "baseline"];
    for (const variant of order) {
      const row = await measure(variant, run, broker, work, rate, seconds);
      console.error(JSON.stringify(row));
      rows.push(row);
    }
  }
} finally {
  await broker.close();
  await rm(work, { recursive: true, force: true });
}
const after = await machineState();
const cpuOf = (variant: Run["variant"]) =>
  rows.filter((r) => r.variant === variant).map((r) => r.cpu_ms_per_s);
const baseline = median(cpuOf("baseline"));
const withInterfaces = median(cpuOf("with"));
// each run's pair measured back to back, so machine drift cancels in the difference
const pairDiffs = [...Array(runs).keys()].map((run) => {
  const pick = (v: Run["variant"]) => rows.find((r) => r.run === run && r.variant === v)!.cpu_ms_per_s;
  return pick("with") - pick("baseline");
});
const clients = rows.flatMap((r) =>
  r.client
    ? [r.client as { scrape_ms_median: number; command_rtt_ms_median: number; metrics_bytes: number }]
    : [],
);
// what the interfaces add each second at this rate, from the per-call figures: results, batches, one of each request
const accounted =
  (rate * micro.on_result_ns! + (1000 / PACE_TICK_MS) * micro.on_batch_ns!) / 1e6 +
  perRequest.cpu_ms_per_scrape! +
  perRequest.cpu_ms_per_status_command!;
const report = {
  machine: machineInfo(),
  before,
  after,
  rate,
  seconds,
  warmup_s: WARMUP_S,
  runs,
  rows,
  median_cpu_ms_per_s: { baseline, with: withInterfaces, difference_of_pairs: median(pairDiffs) },
  microbenchmarks: micro,
  per_request: perRequest,
  accounted_cpu_ms_per_s: accounted,
};
const f = (x: number, d = 1) => x.toFixed(d);
const md = [
  "# Line interfaces: CPU of HTTP metrics and MQTT commands",
  "",
  `${rate} results/s over two cameras (normal frames, one onBatch per 10 ms tick) published by a real Publisher to a local mosquitto (\`set_tcp_nodelay true\`, as deploy/mosquitto ships); "with" adds the HttpInterface (prom-client, process metrics on) and MqttCommands, scraped once a second and sent one \`status\` command a second (waiting for the response) by a separate process. CPU of the daemon-side process only (process.cpuUsage), ${seconds} s per run after ${WARMUP_S} s warm-up, ${runs} runs per variant in alternating order; medians.`,
  "",
  `Load before: \`${String(before.uptime)}\`; after: \`${String(after.uptime)}\`.`,
  "",
  ...cpuPairsTable(
    [
      ["baseline (publisher only)", cpuOf("baseline")],
      ["with metrics + commands", cpuOf("with")],
    ],
    pairDiffs,
  ),
  "",
  `Accounted from the per-call costs below (${rate} onResult + ${1000 / PACE_TICK_MS} onBatch + one scrape + one \`status\` command per second): **${f(accounted, 2)} ms per s** (${f(accounted / 10, 3)} % of one core).`,
  "",
  `Daemon-side CPU per request (${perRequest.requests} sent back to back by another process): /metrics scrape ${f(perRequest.cpu_ms_per_scrape!, 2)} ms, \`status\` command (receive, validate, snapshot, respond) ${f(perRequest.cpu_ms_per_status_command!, 2)} ms.`,
  "",
  `Per call, in a loop: onResult ${f(micro.on_result_ns!, 0)} ns, onBatch ${f(micro.on_batch_ns!, 0)} ns; one /metrics render ${f(micro.render_ms_median!, 2)} ms (median of 200). Seen by the scraping process: /metrics ${f(median(clients.map((c) => c.scrape_ms_median)), 2)} ms, ${clients[0]?.metrics_bytes ?? 0} bytes; a \`status\` command's round trip ${f(median(clients.map((c) => c.command_rtt_ms_median)), 2)} ms (medians).`,
  "",
].join("\n");
await writeResults("line-interfaces", report, md);
console.log(md);
process.exit(0);
