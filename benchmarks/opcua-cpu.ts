/**
 * The CPU the OPC UA server (OpcuaInterface) adds to a daemon inspecting 90 results/s.
 *
 * The measured process plays the daemon's result path: a TestLineControl emits `--rate` results/s over two
 * cameras (1 % defective), paced in 5 ms ticks, and hands each to its interfaces, as the daemon's onResult calls
 * do. Three variants, alternating order, `--runs` times each, CPU of this process only (process.cpuUsage; the
 * main thread's from /proc too), `--seconds` per run after 1 s of warm-up:
 *
 * - baseline: no interface.
 * - free: a started OpcuaInterface and a PLC session connected (a real node-opcua client in a child process)
 *   that sends no triggers, the common case: untriggered frames bypass the handshake.
 * - handshake: the PLC child triggers every frame it can and acknowledges each result, per camera in parallel,
 *   with the tests' Plc (PartId, Trigger up and down; polls ResultsReady every 5 ms, reads the result's ten
 *   variables, ResultsAck up, ResultsReady checked, ResultsAck down). Frames keep coming at the rate; a trigger
 *   tags the camera's next frame, so the share of results triggered is reported.
 *
 * The PLC child's own CPU is reported separately (a PLC is another machine; if the client ran in this process it
 * would add about that). Per-call figures: onResult of an untriggered frame in a loop, and the server's CPU per
 * handshake from `--burst` handshakes back to back (the control inspecting a frame as soon as a trigger is in).
 * Security: the shipped default, Basic256Sha256 SignAndEncrypt, or `--security none` (a None channel; the server
 * offers Basic256Sha256 too, for the password).
 *
 *   node dist/benchmarks/opcua-cpu.js [--runs 3] [--seconds 10] [--rate 90] [--burst 300] [--security sign-and-encrypt|none]
 *
 * Writes results/opcua-cpu.{json,md} (other rates, lengths or security: opcua-cpu-<rate>-<seconds>s[-none]).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { createLogger } from "../src/core/log.js";
import { OpcuaInterface } from "../src/publish/opcua/opcua.js";
import { testConfig } from "../test/helpers/config.js";
import { TestLineControl } from "../test/helpers/line-control.js";
import { freePort, PLC_PASSWORD, PLC_USER, Plc } from "../test/helpers/opcua.js";
import { fmt, machineInfo, machineState, mainThreadCpuMs, median, writeResults } from "./common.js";

const TICK_MS = 5;
const WARMUP_S = 1;
const logger = createLogger("silent");
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const { values } = parseArgs({
  options: {
    plc: { type: "string" },
    endpoint: { type: "string" },
    dir: { type: "string" },
    cameras: { type: "string", default: "2" },
    runs: { type: "string", default: "3" },
    seconds: { type: "string", default: "10" },
    rate: { type: "string", default: "90" },
    burst: { type: "string", default: "300" },
    security: { type: "string", default: "sign-and-encrypt" },
    "defect-rate": { type: "string", default: "0.01" },
  },
});
const cameraIds = Array.from({ length: Number(values.cameras) }, (_, i) => `cam${i + 1}`);
const secure = values.security !== "none";

const cpuMs = (u: NodeJS.CpuUsage) => (u.user + u.system) / 1000;

/** Child mode: the PLC. idle: a connected session; handshake: trigger + take the result per camera until "stop"; burst: N handshakes on cam1. */
async function plcChild(mode: string, endpoint: string, dir: string): Promise<void> {
  const plc = await Plc.connect({ endpoint, dir }, { secure });
  let stopping = false;
  process.stdin.on("data", (d: Buffer) => {
    if (d.toString().includes("stop")) stopping = true;
  });
  process.stdout.write("ready\n");
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const rtts: number[] = [];
  let handshakes = 0;
  if (mode === "idle") {
    while (!stopping) await sleep(20);
  } else if (mode === "handshake") {
    await Promise.all(
      cameraIds.map(async (camera) => {
        for (let i = 0; !stopping; i++) {
          const t = performance.now();
          const status = await plc.trigger(camera, `${camera}-P${i}`);
          if (!status.isGood()) throw new Error(`trigger ${camera} ${i}: ${status.toString()}`);
          const result = await plc.takeResult(camera);
          if (result.partId !== `${camera}-P${i}`) throw new Error(`${camera}: got part ${result.partId}`);
          rtts.push(performance.now() - t);
          handshakes += 1;
        }
      }),
    );
  } else {
    const count = Number(mode.slice("burst:".length));
    await sleep(200); // the parent reads its CPU clock on "ready"
    process.stdout.write("burst-start\n");
    for (let i = 0; i < count; i++) {
      await plc.trigger("cam1", `B${i}`);
      await plc.takeResult("cam1");
      handshakes += 1;
    }
    process.stdout.write("burst-done\n");
  }
  const wall = (performance.now() - t0) / 1000;
  const report = {
    handshakes,
    handshake_ms_median: rtts.length > 0 ? median(rtts) : undefined,
    plc_cpu_ms_per_s: cpuMs(process.cpuUsage(cpu0)) / wall,
  };
  await plc.close();
  process.stdout.write(`${JSON.stringify(report)}\n`);
}

if (values.plc !== undefined) {
  await plcChild(values.plc, values.endpoint!, values.dir!);
  process.exit(0);
}

const runs = Number(values.runs);
const seconds = Number(values.seconds);
const rate = Number(values.rate);
const burstCount = Number(values.burst);
const defectRate = Number(values["defect-rate"]);

type Variant = "baseline" | "free" | "handshake";
interface Run {
  variant: Variant;
  run: number;
  results: number;
  triggered: number;
  cpu_ms_per_s: number;
  main_thread_cpu_ms_per_s: number;
  plc?: { handshakes: number; handshake_ms_median?: number; plc_cpu_ms_per_s: number };
}

interface Child {
  process: ChildProcess;
  output: () => string;
}

function startPlc(mode: string, endpoint: string, dir: string, onLine?: (line: string) => void): Child {
  const child = spawn(
    process.execPath,
    [
      fileURLToPath(import.meta.url),
      "--plc",
      mode,
      "--endpoint",
      endpoint,
      "--dir",
      dir,
      "--cameras",
      String(cameraIds.length),
      "--security",
      String(values.security),
    ],
    { stdio: ["pipe", "pipe", "inherit"] },
  );
  let out = "";
  child.stdout!.on("data", (chunk: Buffer) => {
    const text = chunk.toString("utf8");
    out += text;
    if (onLine) for (const line of text.split("\n")) if (line) onLine(line);
  });
  return { process: child, output: () => out };
}

async function waitReady(child: Child): Promise<void> {
  while (!child.output().includes("ready\n")) {
    if (child.process.exitCode !== null) throw new Error(`PLC child exited with ${child.process.exitCode}`);
    await sleep(20);
  }
}

async function startServer(work: string, control: TestLineControl): Promise<OpcuaInterface> {
  const config = testConfig({
    opcua: {
      enabled: true,
      port: await freePort(),
      bind: "127.0.0.1",
      hostname: "localhost",
      users: [{ username: PLC_USER, password_file: path.join(work, "plc_password") }],
      pki_dir: path.join(work, "pki"), // one store for all runs: the certificate is made once
      // the PLC's self-signed certificate is accepted, as an operator would trust it once
      security: secure
        ? { accept_unknown_certificates: true }
        : {
            // None for the channel; Basic256Sha256 offered too, which the password token is encrypted with
            policies: ["None", "Basic256Sha256"],
            modes: ["None", "SignAndEncrypt"],
            accept_unknown_certificates: true,
          },
    },
  }).opcua;
  const server = new OpcuaInterface(config, control, logger);
  await server.start();
  control.interfaces.push(server);
  return server;
}

async function measure(variant: Variant, run: number, work: string, secondsNow: number): Promise<Run> {
  const control = new TestLineControl(cameraIds, 0.5);
  let server: OpcuaInterface | undefined;
  let child: Child | undefined;
  if (variant !== "baseline") {
    server = await startServer(work, control);
    child = startPlc(variant === "free" ? "idle" : "handshake", server.endpointUrl, work);
    await waitReady(child);
  }
  const t0 = performance.now();
  let emitted = 0;
  let triggered = 0;
  let defectsDue = 0;
  let cpuStart: NodeJS.CpuUsage | undefined;
  let mainStart = 0;
  let measuredFrom = 0;
  let triggeredFrom = 0;
  let cpu: NodeJS.CpuUsage | undefined;
  let mainMs = 0;
  let elapsedS = 0;
  const measureFrom = t0 + WARMUP_S * 1000;
  const end = measureFrom + secondsNow * 1000;
  let childExited = child === undefined;
  child?.process.on("exit", () => {
    childExited = true;
  });
  // frames keep coming after the window until the PLC child has finished its last handshake and left
  while (cpu === undefined || !childExited) {
    const now = performance.now();
    if (cpuStart === undefined && now >= measureFrom) {
      cpuStart = process.cpuUsage();
      mainStart = mainThreadCpuMs();
      measuredFrom = emitted;
      triggeredFrom = triggered;
    }
    if (cpu === undefined && now >= end) {
      cpu = process.cpuUsage(cpuStart);
      mainMs = mainThreadCpuMs() - mainStart;
      elapsedS = (now - measureFrom) / 1000;
      measuredFrom = emitted - measuredFrom;
      triggeredFrom = triggered - triggeredFrom;
      child?.process.stdin?.write("stop\n");
    }
    const due = Math.floor(((now - t0) / 1000) * rate) - emitted;
    for (let i = 0; i < due; i++) {
      defectsDue += defectRate;
      const defective = defectsDue >= 1;
      if (defective) defectsDue -= 1;
      const result = control.emit(cameraIds[emitted % cameraIds.length]!, defective ? 0.9 : 0.1);
      if (result.frame.partId !== undefined) triggered += 1;
      emitted += 1;
    }
    await sleep(TICK_MS);
  }
  let plc: Run["plc"];
  if (child !== undefined) {
    if (child.process.exitCode !== 0) throw new Error(`PLC child exited with ${child.process.exitCode}`);
    plc = JSON.parse(child.output().trim().split("\n").at(-1)!);
  }
  await server?.stop();
  return {
    variant,
    run,
    results: measuredFrom,
    triggered: triggeredFrom,
    cpu_ms_per_s: cpuMs(cpu!) / elapsedS,
    main_thread_cpu_ms_per_s: mainMs / elapsedS,
    ...(plc !== undefined ? { plc } : {}),
  };
}

/** The server's CPU per handshake: `count` back to back from the PLC child, the frame inspected on trigger. */
async function perHandshake(work: string, count: number): Promise<Record<string, number>> {
  const control = new TestLineControl(cameraIds, 0.5);
  const trigger = control.trigger.bind(control);
  control.trigger = (camera, partId, by) => {
    trigger(camera, partId, by);
    setImmediate(() => control.emit(camera, 0.1));
  };
  const server = await startServer(work, control);
  const marks = new Map<string, { cpu: NodeJS.CpuUsage; t: number }>();
  const child = startPlc(`burst:${count}`, server.endpointUrl, work, (line) => {
    if (line === "burst-start" || line === "burst-done")
      marks.set(line, { cpu: process.cpuUsage(), t: performance.now() });
  });
  await once(child.process, "exit");
  await server.stop();
  const a = marks.get("burst-start")!;
  const b = marks.get("burst-done")!;
  const plc = JSON.parse(child.output().trim().split("\n").at(-1)!) as { plc_cpu_ms_per_s: number };
  return {
    handshakes: count,
    server_cpu_ms_per_handshake: (b.cpu.user - a.cpu.user + b.cpu.system - a.cpu.system) / 1000 / count,
    wall_ms_per_handshake: (b.t - a.t) / count,
    plc_cpu_ms_per_s: plc.plc_cpu_ms_per_s,
  };
}

/** onResult of an untriggered frame (returns at once) on a started server, ns per call. */
async function onResultNs(work: string): Promise<number> {
  const control = new TestLineControl(cameraIds, 0.5);
  const server = await startServer(work, control);
  control.interfaces.length = 0;
  const result = control.emit("cam1", 0.1);
  const n = 1_000_000;
  for (let i = 0; i < 10_000; i++) server.onResult(result);
  const t = performance.now();
  for (let i = 0; i < n; i++) server.onResult(result);
  const ns = ((performance.now() - t) * 1e6) / n;
  await server.stop();
  return ns;
}

const before = await machineState();
const work = await mkdtemp(path.join(os.tmpdir(), "stpmd-opcua-cpu-"));
await writeFile(path.join(work, "plc_password"), `${PLC_PASSWORD}\n`);
const rows: Run[] = [];
let handshake: Record<string, number> = {};
let untriggeredNs = 0;
try {
  // an unrecorded round first: the certificates, JIT, the first connections
  for (const variant of ["baseline", "free", "handshake"] as const) await measure(variant, -1, work, 2);
  untriggeredNs = await onResultNs(work);
  handshake = await perHandshake(work, burstCount);
  console.error(JSON.stringify({ on_result_untriggered_ns: untriggeredNs, ...handshake }));
  const variants: Variant[] = ["baseline", "free", "handshake"];
  for (let run = 0; run < runs; run++) {
    // rotated order, so a drift in the machine's load hits every variant alike
    for (let k = 0; k < variants.length; k++) {
      const row = await measure(variants[(k + run) % variants.length]!, run, work, seconds);
      console.error(JSON.stringify(row));
      rows.push(row);
    }
  }
} finally {
  await rm(work, { recursive: true, force: true });
}
const after = await machineState();

const of = (v: Variant, key: "cpu_ms_per_s" | "main_thread_cpu_ms_per_s" = "cpu_ms_per_s") =>
  rows.filter((r) => r.variant === v).map((r) => r[key]);
const pick = (run: number, v: Variant) => rows.find((r) => r.run === run && r.variant === v)!;
const diffs = (v: Variant, key: "cpu_ms_per_s" | "main_thread_cpu_ms_per_s" = "cpu_ms_per_s") =>
  [...Array(runs).keys()].map((run) => pick(run, v)[key] - pick(run, "baseline")[key]);
const handshakeRows = rows.filter((r) => r.variant === "handshake");
const triggeredShare = median(handshakeRows.map((r) => r.triggered / r.results));
const handshakesPerS = median(handshakeRows.map((r) => r.triggered / seconds));
const plcFree = median(rows.filter((r) => r.variant === "free").map((r) => r.plc!.plc_cpu_ms_per_s));
const plcHandshake = median(handshakeRows.map((r) => r.plc!.plc_cpu_ms_per_s));
const extraFree = median(diffs("free"));
const extraHandshake = median(diffs("handshake"));
const accountedHandshake = handshakesPerS * handshake.server_cpu_ms_per_handshake!;
const securityName = secure ? "Basic256Sha256 SignAndEncrypt" : "None";
const report = {
  machine: machineInfo(),
  before,
  after,
  rate,
  seconds,
  warmup_s: WARMUP_S,
  runs,
  cameras: cameraIds.length,
  defect_rate: defectRate,
  security: securityName,
  rows,
  median_cpu_ms_per_s: {
    baseline: median(of("baseline")),
    free: median(of("free")),
    handshake: median(of("handshake")),
  },
  extra_cpu_ms_per_s: { free: extraFree, handshake: extraHandshake },
  extra_main_thread_cpu_ms_per_s: {
    free: median(diffs("free", "main_thread_cpu_ms_per_s")),
    handshake: median(diffs("handshake", "main_thread_cpu_ms_per_s")),
  },
  handshake_triggered_share: triggeredShare,
  handshakes_per_s: handshakesPerS,
  plc_cpu_ms_per_s: { free: plcFree, handshake: plcHandshake },
  on_result_untriggered_ns: untriggeredNs,
  per_handshake: handshake,
  accounted_handshake_cpu_ms_per_s: accountedHandshake,
};
const list = (xs: number[]) => xs.map((x) => fmt(x)).join(", ");
const md = [
  "# OPC UA server CPU",
  "",
  `${rate} results/s over ${cameraIds.length} cameras (${defectRate * 100} % defective) from the in-process TestLineControl, paced in ${TICK_MS} ms ticks. "free": a started OpcuaInterface (${securityName}) with a PLC session connected and no triggers; "handshake": the PLC (a real node-opcua client in a child process, the tests' \`Plc\`, polling ResultsReady every 5 ms) triggers each camera's next frame and acknowledges each result, both cameras in parallel. CPU of the daemon-side process only (process.cpuUsage), ${seconds} s per run after ${WARMUP_S} s warm-up, ${runs} runs per variant in rotated order; medians, differences taken within each run.`,
  "",
  `Load before: \`${String(before.uptime)}\`; after: \`${String(after.uptime)}\`.`,
  "",
  "| variant | CPU ms per s (median) | extra vs baseline (median of runs) | runs (ms per s) | PLC child's CPU ms per s |",
  "|---|---:|---:|---|---:|",
  `| baseline (no interface) | ${fmt(median(of("baseline")))} | – | ${list(of("baseline"))} | – |`,
  `| free-running, PLC connected, no triggers | ${fmt(median(of("free")))} | **${fmt(extraFree)}** (${fmt(extraFree / 10, 2)} % of one core) | ${list(of("free"))} | ${fmt(plcFree)} |`,
  `| every frame triggered and acknowledged | ${fmt(median(of("handshake")))} | **${fmt(extraHandshake)}** (${fmt(extraHandshake / 10, 2)} % of one core) | ${list(of("handshake"))} | ${fmt(plcHandshake)} |`,
  "",
  `Handshake runs: ${fmt(triggeredShare * 100)} % of the results were triggered (${fmt(handshakesPerS)} handshakes/s; a trigger tags the camera's next frame, and one comes every ${fmt((1000 * cameraIds.length) / rate)} ms), PLC's trigger → result acknowledged ${fmt(median(handshakeRows.map((r) => r.plc!.handshake_ms_median ?? Number.NaN)))} ms (median).`,
  "",
  `Per call: onResult of an untriggered frame ${fmt(untriggeredNs, 0)} ns (in a loop). Server CPU per handshake, ${handshake.handshakes} back to back (8 requests or more each: PartId, Trigger up and down, ResultsReady polled, the result's 10 variables in one read, ResultsAck up, ResultsReady, ResultsAck down): **${fmt(handshake.server_cpu_ms_per_handshake, 2)} ms** (includes the stand-in's frame, a few µs), ${fmt(handshake.wall_ms_per_handshake, 2)} ms wall each; × ${fmt(handshakesPerS)} handshakes/s = ${fmt(accountedHandshake)} ms per s accounted.`,
  "",
  `The PLC's CPU (its own process.cpuUsage) is not in the figures above: were the client in the daemon's process, it would add about the PLC column (${fmt(plcHandshake)} ms/s when handshaking), and the burst's PLC ran at ${fmt(handshake.plc_cpu_ms_per_s)} ms/s.`,
  "",
].join("\n");
const stem =
  rate === 90 && seconds === 10 && secure
    ? "opcua-cpu"
    : `opcua-cpu-${rate}-${seconds}s${secure ? "" : "-none"}`;
await writeResults(stem, report, md);
console.log(md);
process.exit(0);
