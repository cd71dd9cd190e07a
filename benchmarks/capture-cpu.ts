import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { Camera } from "../src/capture/camera.js";
import { framesAwaitingVerdict } from "../src/capture/frame-source.js";
import { completeConfig } from "../src/config/index.js";
import { createLogger } from "../src/core/log.js";
import { machineInfo, machineState, median, runJsonChild, writeResults } from "./common.js";

/**
 * CPU per frame of capture alone, the camera's pipeline in the daemon's process vs in a capture process: one
 * camera over a paced source (live videotestsrc, 900×900 RGB scaled to 256×256 in GStreamer, as a model-size camera),
 * CPU time of this process and of its capture processes (utime + stime from /proc) over the measured window, divided
 * by the frames delivered. The difference is what the process boundary costs: the frame's copies through the
 * socket, a second event loop, the kernel's work.
 *
 * With `--native`, the capture process with the part record's native frames (records.images.native: a second
 * GStreamer branch at 900×900 into a second appsink, pulled with the model's, the newest held as the daemon's defaults hold them)
 * against without, both in capture processes: what keeping native frames costs capture.
 *
 *   node dist/benchmarks/capture-cpu.js [--runs 5] [--seconds 6] [--fps 100] [--native]
 * One measurement: node dist/benchmarks/capture-cpu.js --one child|in-process|native [--seconds 6] [--fps 100]
 */

const TICK_MS = 10; // USER_HZ = 100 on Linux

type Capture = "child" | "in-process" | "native";

interface Measurement {
  capture: Capture;
  fps: number;
  cpu_ms_per_frame: number;
  daemon_cpu_ms_per_frame: number;
  capture_process_cpu_ms_per_frame: number;
}

function ticksOf(pid: number | "self"): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return Number(fields[11]) + Number(fields[12]);
}

function children(): number[] {
  return readdirSync("/proc/self/task").flatMap((task) =>
    readFileSync(`/proc/self/task/${task}/children`, "utf8").split(" ").filter(Boolean).map(Number),
  );
}

async function measureOne(capture: Capture, seconds: number, fps: number): Promise<Measurement> {
  process.env.STPMD_CAPTURE = capture === "in-process" ? "in-process" : "";
  const config = completeConfig({
    model: { bundle: "unused" },
    mqtt: { url: "mqtt://unused" },
    cameras: [
      {
        id: "cpu",
        source: `videotestsrc is-live=true pattern=ball ! video/x-raw,width=900,height=900,format=RGB,framerate=${fps}/1`,
        stall_timeout_s: 0,
      },
    ],
  });
  // the daemon's defaults: records.images.native_mb, as many frames as can wait for a verdict
  const nativeSpec = {
    maxBytes: config.records.images.native_mb * 2 ** 20,
    maxFrames: framesAwaitingVerdict(config.inference),
    maxLongSide: config.collection.max_long_side,
  };
  const native = capture === "native" ? { native: nativeSpec } : {};
  const camera = new Camera(config.cameras[0]!, {
    width: 256,
    height: 256,
    logger: createLogger("error"),
    ...native,
  });
  let frames = 0;
  camera.on("frame", () => frames++);
  camera.start();
  await new Promise((resolve) => setTimeout(resolve, 2000)); // start-up and warm-up
  const pids = children();
  const self0 = ticksOf("self");
  const kids0 = pids.reduce((sum, pid) => sum + ticksOf(pid), 0);
  const frames0 = frames;
  await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
  const self1 = ticksOf("self");
  const kids1 = pids.reduce((sum, pid) => sum + ticksOf(pid), 0);
  const n = frames - frames0;
  camera.stop();
  return {
    capture,
    fps: n / seconds,
    cpu_ms_per_frame: ((self1 - self0 + kids1 - kids0) * TICK_MS) / n,
    daemon_cpu_ms_per_frame: ((self1 - self0) * TICK_MS) / n,
    capture_process_cpu_ms_per_frame: ((kids1 - kids0) * TICK_MS) / n,
  };
}

const { values } = parseArgs({
  options: {
    one: { type: "string" },
    runs: { type: "string" },
    seconds: { type: "string" },
    fps: { type: "string" },
    native: { type: "boolean", default: false },
  },
});
const seconds = Number(values.seconds ?? "6");
const fps = Number(values.fps ?? "100");
if (values.one === "child" || values.one === "in-process" || values.one === "native") {
  process.stdout.write(`${JSON.stringify(await measureOne(values.one, seconds, fps))}\n`);
  process.exit(0);
}
const runs = Number(values.runs ?? "5");
/** What is compared: the capture process against in-process capture, or native frames against none. */
const [base, other]: [Capture, Capture] = values.native ? ["child", "native"] : ["in-process", "child"];
const self = fileURLToPath(import.meta.url);
const before = await machineState();
const rows: Measurement[] = [];
for (let run = 0; run < runs; run++) {
  for (const capture of run % 2 === 0 ? [base, other] : [other, base]) {
    const args = [self, "--one", capture, "--seconds", String(seconds), "--fps", String(fps)];
    const row = (await runJsonChild(process.execPath, args)) as Measurement;
    process.stderr.write(`${JSON.stringify(row)}\n`);
    rows.push(row);
  }
}
const after = await machineState();
const med = (capture: Capture, key: keyof Omit<Measurement, "capture">) =>
  median(rows.filter((r) => r.capture === capture).map((r) => r[key]));
const summaryOf = (capture: Capture) => ({
  fps: med(capture, "fps"),
  cpu_ms_per_frame: med(capture, "cpu_ms_per_frame"),
  daemon_cpu_ms_per_frame: med(capture, "daemon_cpu_ms_per_frame"),
  capture_process_cpu_ms_per_frame: med(capture, "capture_process_cpu_ms_per_frame"),
});
const summary = { [base]: summaryOf(base), [other]: summaryOf(other) };
const ratio = summary[other]!.cpu_ms_per_frame / summary[base]!.cpu_ms_per_frame;
const what = values.native
  ? "a capture process with native frames (records.images.native) vs without"
  : "in the daemon's process vs a capture process";
const command = `node dist/benchmarks/capture-cpu.js --runs ${runs} --seconds ${seconds} --fps ${fps}${values.native ? " --native" : ""}`;
const row = (capture: Capture) => {
  const s = summary[capture]!;
  const captureProcess = capture === "in-process" ? "–" : s.capture_process_cpu_ms_per_frame.toFixed(2);
  return `| ${capture} | ${s.fps.toFixed(1)} | ${s.cpu_ms_per_frame.toFixed(2)} | ${s.daemon_cpu_ms_per_frame.toFixed(2)} | ${captureProcess} |`;
};
const md = [
  `# Capture CPU per frame: ${what}`,
  "",
  `One camera, live videotestsrc 900×900 RGB at ${fps} frames/s scaled to 256×256 in GStreamer; ${runs} runs of ${seconds} s each way, alternating, each in a fresh process (\`${command}\`); medians. CPU: utime + stime of the process and its capture processes, 10 ms ticks.`,
  "",
  `Load before: \`${before.uptime}\`; after: \`${after.uptime}\`.`,
  "",
  "| capture | frames/s | CPU ms per frame, all told | of it, the daemon's process | of it, the capture process |",
  "|---|---:|---:|---:|---:|",
  row(base),
  row(other),
  "",
  `${other} / ${base}, CPU per frame: **${ratio.toFixed(3)}**.`,
  "",
].join("\n");
await writeResults(
  values.native ? "capture-cpu-native" : "capture-cpu",
  { machine: machineInfo(), before, after, fps, seconds, runs, summary, ratio, rows },
  md,
);
process.stdout.write(md);
process.exit(0);
