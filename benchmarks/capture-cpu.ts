import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { Camera } from "../src/capture/camera.js";
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
 *   node dist/benchmarks/capture-cpu.js [--runs 5] [--seconds 6] [--fps 100]
 * One measurement: node dist/benchmarks/capture-cpu.js --one child|in-process [--seconds 6] [--fps 100]
 */

const TICK_MS = 10; // USER_HZ = 100 on Linux

interface Measurement {
  capture: "child" | "in-process";
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

async function measureOne(
  capture: "child" | "in-process",
  seconds: number,
  fps: number,
): Promise<Measurement> {
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
  const camera = new Camera(config.cameras[0]!, { width: 256, height: 256, logger: createLogger("error") });
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
  },
});
const seconds = Number(values.seconds ?? "6");
const fps = Number(values.fps ?? "100");
if (values.one === "child" || values.one === "in-process") {
  process.stdout.write(`${JSON.stringify(await measureOne(values.one, seconds, fps))}\n`);
  process.exit(0);
}
const runs = Number(values.runs ?? "5");
const self = fileURLToPath(import.meta.url);
const before = await machineState();
const rows: Measurement[] = [];
for (let run = 0; run < runs; run++) {
  for (const capture of run % 2 === 0
    ? (["in-process", "child"] as const)
    : (["child", "in-process"] as const)) {
    const args = [self, "--one", capture, "--seconds", String(seconds), "--fps", String(fps)];
    const row = (await runJsonChild(process.execPath, args)) as Measurement;
    process.stderr.write(`${JSON.stringify(row)}\n`);
    rows.push(row);
  }
}
const after = await machineState();
const med = (capture: string, key: keyof Omit<Measurement, "capture">) =>
  median(rows.filter((r) => r.capture === capture).map((r) => r[key]));
const summary = {
  in_process_cpu_ms_per_frame: med("in-process", "cpu_ms_per_frame"),
  child_cpu_ms_per_frame: med("child", "cpu_ms_per_frame"),
  child_daemon_cpu_ms_per_frame: med("child", "daemon_cpu_ms_per_frame"),
  child_capture_process_cpu_ms_per_frame: med("child", "capture_process_cpu_ms_per_frame"),
  in_process_fps: med("in-process", "fps"),
  child_fps: med("child", "fps"),
};
const ratio = summary.child_cpu_ms_per_frame / summary.in_process_cpu_ms_per_frame;
const md = [
  "# Capture CPU per frame: in the daemon's process vs a capture process",
  "",
  `One camera, live videotestsrc 900×900 RGB at ${fps} frames/s scaled to 256×256 in GStreamer; ${runs} runs of ${seconds} s each way, alternating, each in a fresh process (\`node dist/benchmarks/capture-cpu.js --runs ${runs} --seconds ${seconds} --fps ${fps}\`); medians. CPU: utime + stime of the process and its capture processes, 10 ms ticks.`,
  "",
  `Load before: \`${before.uptime}\`; after: \`${after.uptime}\`.`,
  "",
  "| capture | frames/s | CPU ms per frame, all told | of it, the daemon's process | of it, the capture process |",
  "|---|---:|---:|---:|---:|",
  `| in-process | ${summary.in_process_fps.toFixed(1)} | ${summary.in_process_cpu_ms_per_frame.toFixed(2)} | ${summary.in_process_cpu_ms_per_frame.toFixed(2)} | – |`,
  `| child | ${summary.child_fps.toFixed(1)} | ${summary.child_cpu_ms_per_frame.toFixed(2)} | ${summary.child_daemon_cpu_ms_per_frame.toFixed(2)} | ${summary.child_capture_process_cpu_ms_per_frame.toFixed(2)} |`,
  "",
  `Child / in-process, CPU per frame: **${ratio.toFixed(3)}**.`,
  "",
].join("\n");
await writeResults(
  "capture-cpu",
  { machine: machineInfo(), before, after, fps, seconds, runs, summary, ratio, rows },
  md,
);
process.stdout.write(md);
process.exit(0);
