import { cp, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { completeConfig } from "../src/config/index.js";
import { createLogger } from "../src/core/log.js";
import { Daemon } from "../src/daemon/daemon.js";
import { MosquittoBroker } from "../src/demo/broker.js";
import type { Requester } from "../src/publish/control.js";
import { candidatePaths } from "../src/stations/candidates/store.js";
import { trainTinyBundle } from "../test/helpers/daemon-process.js";
import { normalFrames } from "../test/helpers/tiny-data.js";
import {
  captureProcessPids,
  fmt,
  machineInfo,
  machineState,
  median,
  procStat,
  resultLatencies,
  writeResults,
} from "./common.js";

/**
 * What a retrain job and a candidate in shadow cost live inspection (issue 22's benchmark): the real Daemon with
 * `--cameras` replay cameras of `--size`² synthetic good parts, each offered `--fps` frames/s (by default more than
 * the daemon inspects, so frames/s is what it sustains; an `--fps` below saturation measures latency at a line's
 * pace instead), each judged by its own copy of a small bundle (a candidate replaces one camera's bundle only, so
 * no two cameras share a bundle folder here, in any mode), results over a local mosquitto. Modes:
 *
 * - `none`: live inspection alone;
 * - `retrain`: a real retrain job for the first camera through `daemon.control.startRetrain`, on its collected
 *   frames (`--train-frames` synthetic parts written into `<collection.dir>/cam0/`), in its niced child process
 *   with one ORT thread (the defaults). The window opens once the child reports its first epoch (it is training,
 *   not loading) and `job.json` must say `running` at both ends of it, else the row is marked;
 * - `shadow-0.1`, `shadow-0.5`, `shadow-1`: every camera's candidate in shadow through
 *   `daemon.control.setShadow` with `candidates.shadow.share` at that share and `max_frames` out of reach; the
 *   candidate is the live weights under another version (`--candidate copy`, agreeing on every frame) or another
 *   small bundle (`other`, disagreeing on many: each of the first 200 disagreements writes three PNGs).
 *
 * Modes alternate (the order reversed every other run), `--runs` times each, so a change of the machine's load
 * hits all of them; each run is a fresh Daemon with its own candidates folder (a shadow left running would resume
 * in the next). Reported per mode, medians: live frames/s and its ratio to `none`, capture→publish latency p50/p99
 * (from the MQTT results' `capture_ts`), the daemon process's CPU ms per inspected frame (all its threads, the
 * shadow's included; not the capture processes', reported apart, nor the retrain child's), the shadow's frames
 * judged and dropped, and for `retrain` the child's CPU seconds in the window and its niceness from /proc.
 *
 * Run: node dist/benchmarks/candidates.js [--runs 3] [--seconds 10] [--size 128] [--fps 250] [--cameras 2]
 *   [--train-frames 1000] [--modes none,retrain,shadow-0.1,shadow-0.5,shadow-1] [--records] [--candidate copy|other]
 *   [--name candidates]
 * Writes results/<name>.{json,md}.
 */

const { values } = parseArgs({
  options: {
    runs: { type: "string", default: "3" },
    seconds: { type: "string", default: "10" },
    size: { type: "string", default: "128" },
    fps: { type: "string", default: "250" },
    cameras: { type: "string", default: "2" },
    "train-frames": { type: "string", default: "1000" },
    modes: { type: "string", default: "none,retrain,shadow-0.1,shadow-0.5,shadow-1" },
    records: { type: "boolean", default: false },
    candidate: { type: "string", default: "copy" },
    /** The results' file stem, so a run at line pace (`--fps 30`) does not overwrite the saturated one. */
    name: { type: "string", default: "candidates" },
  },
});
const RUNS = Number(values.runs);
const SECONDS = Number(values.seconds);
const SIZE = Number(values.size);
const FPS = Number(values.fps);
const CAMERAS = Number(values.cameras);
const TRAIN_FRAMES = Number(values["train-frames"]);
const RECORDS = values.records;
const MODES = values.modes.split(",");
const CANDIDATE = values.candidate;
if (CANDIDATE !== "copy" && CANDIDATE !== "other")
  throw new Error(`--candidate: copy (the live weights) or other (another small bundle), not ${CANDIDATE}`);
for (const mode of MODES) {
  if (mode !== "none" && mode !== "retrain" && !/^shadow-(0?\.\d+|1)$/.test(mode))
    throw new Error(`--modes: unknown mode ${mode} (none, retrain, shadow-<share>)`);
}
const WARMUP_S = 3;
/** The longest a retrain run waits for the child's first epoch before its window opens anyway (marked). */
const FIRST_EPOCH_WAIT_S = 180;
/** Files per replay folder. */
const FILES = 100;
const RETRAIN_CAMERA = "cam0";
const BENCH: Requester = { via: "http", user: "bench" };

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** CPU seconds (user + system, all threads) and niceness of a process; undefined once gone. */
function procSeconds(pid: number): { cpu_s: number; nice: number } | undefined {
  const s = procStat(`/proc/${pid}/stat`);
  return s && { cpu_s: s.cpuMs / 1000, nice: s.nice };
}

/** CPU seconds of the cameras' capture processes now (by pid, since one may restart within the window). */
function captureCpu(): Map<number, number> {
  const out = new Map<number, number>();
  for (const pid of captureProcessPids()) {
    const s = procSeconds(pid);
    if (s) out.set(pid, s.cpu_s);
  }
  return out;
}

interface Row {
  mode: string;
  run: number;
  inspected_fps: number;
  cpu_ms_per_frame: number;
  capture_cpu_ms_per_frame: number;
  latency_ms_p50: number;
  latency_ms_p99: number;
  live_dropped: number;
  shadow_frames: number;
  shadow_dropped: number;
  /** Shadowed frames where the two models disagreed (the first `disagreement_images` of a run keep 3 PNGs each). */
  shadow_disagreements: number;
  retrain?: {
    state_at_start: string;
    state_at_end: string;
    /** Epochs the job had finished when the window opened, and during it. */
    epoch_at_start: number;
    epochs_in_window: number;
    child_cpu_s: number;
    child_nice: number;
    /** Seconds from the daemon's start to the job's first epoch (its loading: the teacher's features). */
    first_epoch_s: number;
    /** The window opened before the child's first epoch (it waited FIRST_EPOCH_WAIT_S), or the job had ended. */
    first_epoch_missed: boolean;
  };
}

async function run(
  work: string,
  live: string,
  candidate: string,
  broker: MosquittoBroker,
  mode: string,
  n: number,
) {
  const name = `${mode}-${n}`;
  const candidatesDir = path.join(work, `candidates-${name}`);
  const share = mode.startsWith("shadow-") ? Number(mode.slice("shadow-".length)) : 0;
  const cameras = Array.from({ length: CAMERAS }, (_, i) => `cam${i}`);
  if (share > 0) {
    for (const cam of cameras)
      await cp(candidate, candidatePaths(candidatesDir, cam).candidate, { recursive: true });
  }
  const config = completeConfig({
    model: { bundle: live, watch: false },
    cameras: cameras.map((id, i) => ({
      id,
      // each camera its own bundle folder (the same model): a candidate replaces one camera's bundle only
      model: path.join(work, `live-${id}`),
      source:
        `multifilesrc location=${work}/frames/part_%03d.png index=${(i * 37) % FILES} loop=true ` +
        `caps=image/png,framerate=${FPS}/1 ! pngdec ! identity sync=true`,
    })),
    mqtt: {
      url: broker.url,
      client_id: `cand-${name}`,
      prefix: "cand",
      snapshot: "none",
      outbox: { dir: path.join(work, `outbox-${name}`), max_messages: 1_000_000, max_bytes: 2 ** 31 },
    },
    records: { enabled: RECORDS, dir: path.join(work, `records-${name}`) },
    collection: { dir: path.join(work, "collection") },
    audit: { file: path.join(work, `audit-${name}.jsonl`) },
    candidates: {
      dir: candidatesDir,
      // a ceiling out of reach: the stopping rule (6 epochs at least) and the daemon's stop end the job
      retrain: { epochs: 10_000, min_frames: 4 },
      shadow: { share: share || 1, max_frames: 100_000_000 },
    },
    log: { level: "error" },
    health: { watchdog: false },
  });
  const latency = await resultLatencies(broker.url, "cand", `cand-sub-${name}`);
  const daemon = new Daemon(config, createLogger("error"));
  await daemon.start();
  const started = Date.now();
  const job = () => daemon.candidates.store.readJob(RETRAIN_CAMERA);
  let firstEpochMissed = false;
  let firstEpochS = Number.NaN;
  if (mode === "retrain") {
    await daemon.control.startRetrain(RETRAIN_CAMERA, BENCH);
    // loading (the teacher's features of every frame) is not training: the window opens at the first epoch
    const firstEpoch = () => (job()?.epoch ?? 0) >= 1 || job()?.state !== "running";
    while (!firstEpoch() && Date.now() - started < FIRST_EPOCH_WAIT_S * 1000) await sleep(200);
    firstEpochMissed = (job()?.epoch ?? 0) < 1;
    firstEpochS = (Date.now() - started) / 1000;
  }
  for (const cam of share > 0 ? cameras : []) await daemon.control.setShadow(cam, true, BENCH);
  // a shadow's start (the candidate's inference thread and session, its database thread) is a once-per-start cost
  // that outlasts a warm-up on a loaded box: the window opens once every camera's shadow has recorded a frame
  const shadowing = () => cameras.every((cam) => (daemon.candidates.view(cam).shadow?.frames ?? 0) > 0);
  const shadowSince = Date.now();
  while (share > 0 && !shadowing() && Date.now() - shadowSince < FIRST_EPOCH_WAIT_S * 1000) await sleep(100);
  // the warm-up counts from the daemon's start: a job's loading already was part of it (its epochs are few)
  await sleep(Math.max(share > 0 ? 1000 : 0, started + WARMUP_S * 1000 - Date.now()));

  const shadowCounts = () =>
    cameras.reduce(
      (sum, cam) => {
        const v = daemon.candidates.view(cam).shadow;
        return {
          frames: sum.frames + (v?.frames ?? 0),
          dropped: sum.dropped + (v?.dropped ?? 0),
          disagreements: sum.disagreements + (v?.disagreements ?? 0),
        };
      },
      { frames: 0, dropped: 0, disagreements: 0 },
    );
  const job0 = job();
  const child0 = job0?.pid !== undefined ? procSeconds(job0.pid) : undefined;
  const shadow0 = shadowCounts();
  const capture0 = captureCpu();
  const inspected0 = daemon.inspectedFrames;
  const dropped0 = daemon.droppedFrames;
  latency.start();
  const t0 = Date.now();
  const cpu0 = process.cpuUsage();
  await sleep(SECONDS * 1000);
  const cpu = process.cpuUsage(cpu0);
  const elapsed = (Date.now() - t0) / 1000;
  latency.stop();
  const frames = daemon.inspectedFrames - inspected0;
  const capture1 = captureCpu();
  const job1 = job();
  const child1 = job0?.pid !== undefined ? procSeconds(job0.pid) : undefined;
  const shadow1 = shadowCounts();
  const liveDropped = daemon.droppedFrames - dropped0;
  await daemon.stop();
  const { p50, p99 } = await latency.end();
  const captureS = [...capture1].reduce((s, [pid, t]) => s + t - (capture0.get(pid) ?? 0), 0);
  const row: Row = {
    mode,
    run: n,
    inspected_fps: frames / elapsed,
    cpu_ms_per_frame: (cpu.user + cpu.system) / 1000 / Math.max(1, frames),
    capture_cpu_ms_per_frame: (captureS * 1000) / Math.max(1, frames),
    latency_ms_p50: p50,
    latency_ms_p99: p99,
    live_dropped: liveDropped,
    shadow_frames: shadow1.frames - shadow0.frames,
    shadow_dropped: shadow1.dropped - shadow0.dropped,
    shadow_disagreements: shadow1.disagreements - shadow0.disagreements,
    ...(mode === "retrain"
      ? {
          retrain: {
            state_at_start: job0?.state ?? "none",
            state_at_end: job1?.state ?? "none",
            epoch_at_start: job0?.epoch ?? 0,
            epochs_in_window: (job1?.epoch ?? 0) - (job0?.epoch ?? 0),
            child_cpu_s: child0 && child1 ? child1.cpu_s - child0.cpu_s : Number.NaN,
            child_nice: child0?.nice ?? Number.NaN,
            first_epoch_s: firstEpochS,
            first_epoch_missed: firstEpochMissed,
          },
        }
      : {}),
  };
  process.stderr.write(`[bench] ${JSON.stringify(row)}\n`);
  if (row.retrain && (row.retrain.state_at_start !== "running" || row.retrain.state_at_end !== "running"))
    process.stderr.write(
      `[bench] ${name}: the job was ${row.retrain.state_at_start} → ${row.retrain.state_at_end} over the window, not running throughout (more --train-frames?)\n`,
    );
  return row;
}

async function main(): Promise<void> {
  const work = await mkdtemp(path.join(os.tmpdir(), "stpmd-bench-candidates-"));
  const live = path.join(work, "live");
  const candidate = path.join(work, "candidate");
  await trainTinyBundle(work, live, 1, SIZE);
  if (CANDIDATE === "other") await trainTinyBundle(work, candidate, 2, SIZE);
  else {
    // the live model's own weights under another model version (a shadow refuses an equal one): it agrees with
    // live on every frame, so the window measures the shadow's steady cost (inference and its record), not the
    // disagreement images a poor tiny candidate makes on most frames until the run's `disagreement_images` are kept
    await cp(live, candidate, { recursive: true });
    const file = path.join(candidate, "manifest.json");
    const manifest = JSON.parse(await readFile(file, "utf8")) as { model_version: string };
    manifest.model_version += "-candidate";
    await writeFile(file, JSON.stringify(manifest));
  }
  for (let i = 0; i < CAMERAS; i++) await cp(live, path.join(work, `live-cam${i}`), { recursive: true });
  // the replay frames (part_000.png …) and the first camera's collected frames
  await normalFrames(FILES, SIZE, path.join(work, "frames"));
  await normalFrames(TRAIN_FRAMES, SIZE, path.join(work, "collection", RETRAIN_CAMERA));

  const before = await machineState();
  const broker = await MosquittoBroker.start();
  const rows: Row[] = [];
  try {
    for (let n = 0; n < RUNS; n++) {
      // the order reversed every other run, so a drift in the machine's load does not favour one mode
      for (const mode of n % 2 === 0 ? MODES : [...MODES].reverse())
        rows.push(await run(work, live, candidate, broker, mode, n));
    }
  } finally {
    await broker.close();
    await rm(work, { recursive: true, force: true });
  }
  const after = await machineState();
  const of = (mode: string) => rows.filter((r) => r.mode === mode);
  const base = median(of("none").map((r) => r.inspected_fps));
  const summary = MODES.map((mode) => {
    const rs = of(mode);
    const fps = median(rs.map((r) => r.inspected_fps));
    const retrains = rs.flatMap((r) => (r.retrain ? [r.retrain] : []));
    return {
      mode,
      fps,
      fps_over_none: fps / base,
      p50: median(rs.map((r) => r.latency_ms_p50)),
      p99: median(rs.map((r) => r.latency_ms_p99)),
      cpu_ms_per_frame: median(rs.map((r) => r.cpu_ms_per_frame)),
      capture_cpu_ms_per_frame: median(rs.map((r) => r.capture_cpu_ms_per_frame)),
      live_dropped: rs.reduce((s, r) => s + r.live_dropped, 0),
      shadow_frames_per_s: median(rs.map((r) => r.shadow_frames / SECONDS)),
      shadow_dropped: rs.reduce((s, r) => s + r.shadow_dropped, 0),
      ...(retrains.length > 0
        ? {
            retrain_runs_running_throughout: retrains.filter(
              (r) => r.state_at_start === "running" && r.state_at_end === "running" && !r.first_epoch_missed,
            ).length,
            retrain_epochs_in_window: median(retrains.map((r) => r.epochs_in_window)),
            retrain_child_cpu_s: median(retrains.map((r) => r.child_cpu_s)),
            retrain_child_nice: retrains[0]?.child_nice,
          }
        : {}),
    };
  });
  const report = {
    machine: machineInfo(),
    before,
    after,
    size: SIZE,
    offered_fps_per_camera: FPS,
    cameras: CAMERAS,
    train_frames: TRAIN_FRAMES,
    records: RECORDS,
    candidate: CANDIDATE,
    seconds: SECONDS,
    warmup_s: WARMUP_S,
    runs: RUNS,
    summary,
    rows,
  };
  const modeName = (mode: string) =>
    mode.startsWith("shadow-") ? `shadow ${Number(mode.slice(7)) * 100} %` : mode;
  const retrainRow = summary.find((s) => s.mode === "retrain");
  const md = [
    "# Live inspection during a retrain job and during shadow",
    "",
    `\`node dist/benchmarks/candidates.js --runs ${RUNS} --seconds ${SECONDS} --size ${SIZE} --fps ${FPS} --cameras ${CAMERAS} --train-frames ${TRAIN_FRAMES}${RECORDS ? " --records" : ""} --candidate ${CANDIDATE}${values.name === "candidates" ? "" : ` --name ${values.name}`}\` on ${String(report.machine.cpu)} (${String(report.machine.logical_cpus)} cores): the real Daemon, ${CAMERAS} replay camera(s) of ${SIZE}² synthetic parts offered ${FPS} frames/s each, a small bundle live, local mosquitto, part record ${RECORDS ? "on" : "off"}. Modes alternate (order reversed every other run), ${RUNS} run(s) of ${SECONDS} s each after ${WARMUP_S} s of warm-up (for \`retrain\`: from the job's first epoch on, at least ${WARMUP_S} s after the daemon's start), medians. Load (1/5/15 min) before ${JSON.stringify(before.loadavg)}, after ${JSON.stringify(after.loadavg)} (the benchmark's own threads raise the load while it runs: the load before it is the sign of other work).`,
    "",
    "- **frames/s**: frames the daemon inspected per second (when the cameras offer more than it inspects, what it sustains); **vs none**: the ratio to live inspection alone (issue 22's target: ≥ 0.9 during a retrain on 2 cores).",
    "- **p50 / p99**: capture → MQTT result latency (the result's `capture_ts` to its arrival at a subscriber).",
    "- **daemon CPU ms/frame**: the daemon process's user + system time (every thread: inference, the shadow's candidate, publishing) per inspected frame; **capture**: the capture processes' likewise. The retrain child is neither: its CPU seconds over the window are in the last columns.",
    `- **retrain**: a real job for ${RETRAIN_CAMERA} (${TRAIN_FRAMES} collected frames, the default nice 19 and one ORT thread); the window opens at its first epoch. **running**: runs whose job.json said \`running\` at both ends of the window.`,
    `- **shadow**: every camera's candidate (${CANDIDATE === "copy" ? "the live weights under another version: it agrees on every frame, so no disagreement images are written" : "another small bundle: the first 200 disagreements of each camera write three PNGs each, in the daemon"}) judging that share of its frames; frames judged per second and frames dropped (offered while its queue was full). A shadow batch starts only while the camera's live model has no frame queued: when the cameras offer more than the daemon inspects, the candidate judges what the gaps allow, whatever the share (the frames/s is then the cost of that, the dropped count what it could not judge); below saturation it judges its share.`,
    "",
    "| mode | frames/s | vs none | p50 / p99 ms | daemon CPU ms/frame | capture CPU ms/frame | live dropped | shadow judged/s | shadow dropped | retrain: running / epochs in window / child CPU s / nice |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ...summary.map(
      (s) =>
        `| ${modeName(s.mode)} | ${fmt(s.fps)} | ${fmt(s.fps_over_none, 3)} | ${fmt(s.p50, 0)} / ${fmt(s.p99, 0)} | ${fmt(s.cpu_ms_per_frame, 2)} | ${fmt(s.capture_cpu_ms_per_frame, 2)} | ${s.live_dropped} | ${fmt(s.shadow_frames_per_s)} | ${s.shadow_dropped} | ${
          "retrain_runs_running_throughout" in s
            ? `${s.retrain_runs_running_throughout}/${RUNS} / ${fmt(s.retrain_epochs_in_window, 1)} / ${fmt(s.retrain_child_cpu_s, 1)} / ${s.retrain_child_nice}`
            : ""
        } |`,
    ),
    ...(retrainRow
      ? [
          "",
          `During the retrain the child used ${fmt(retrainRow.retrain_child_cpu_s, 1)} CPU s of the ${SECONDS} s window (of ${String(report.machine.logical_cpus)} cores' ${Number(report.machine.logical_cpus) * SECONDS}); live inspection kept ${fmt(retrainRow.fps_over_none, 3)} of its frames/s.`,
        ]
      : []),
  ].join("\n");
  const file = await writeResults(values.name, report, md);
  process.stderr.write(`[bench] wrote ${file}\n${md}\n`);
}

await main();
