import { readFileSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import sharp from "sharp";
import { bundlePartScore, loadBundle } from "../src/bundle/bundle.js";
import { completeConfig } from "../src/config/index.js";
import { createLogger } from "../src/core/log.js";
import { Daemon } from "../src/daemon/daemon.js";
import { listImages, loadRgb, resizeRgb } from "../src/data/images.js";
import { MosquittoBroker } from "../src/demo/broker.js";
import { synthesizePart } from "../src/demo/synthetic.js";
import { partScore } from "../src/stpm/part-score.js";
import { Random } from "../src/stpm/random.js";
import { Scorer } from "../src/stpm/scorer.js";
import { trainTinyBundle } from "../test/helpers/daemon-process.js";
import {
  captureProcessPids,
  fmt,
  machineInfo,
  machineState,
  mainThreadCpuMs,
  median,
  procStat,
  resultLatencies,
  writeResults,
} from "./common.js";

/**
 * What the part record costs the daemon: sustained frames/s and capture→publish latency with `records.enabled` on
 * and off, at 1 %, 10 % and 100 % defects. A small bundle (random teacher, trained on synthetic parts, `--size`²)
 * judges replay cameras of synthetic good parts with noise frames mixed in at the defect rate (the bundle finds
 * every noise frame defective); the cameras are offered more than the daemon can inspect, so frames/s is what it
 * sustains. On and off alternate, `--runs` times each, so a change of the machine's load hits both.
 *
 * Frames/s on a shared box moves by up to 25 % between identical runs, more than the 5 % the record may cost; the
 * process's CPU time per inspected frame (every thread of the daemon: capture, inference, the records thread) moves
 * far less with other load, and on a box whose cores inference saturates it is what the record takes from
 * throughput: so both are reported, CPU ms per frame on and off and their ratio, and the main thread's share of it
 * (the frame path, where the record's rows are built and handed over).
 *
 * With `--source WxH` the replay frames are that size (the parts upscaled), larger than the model's input, and
 * `--modes off,on,scaled` compares the record with native frames (`on`: `records.images.native`, the default: each
 * capture process also takes the frames at that size, through a second GStreamer branch, and holds the newest)
 * against the record without them (`scaled`: `records.images.native: false`) and no record (`off`). The capture processes' CPU
 * is counted beside the daemon's (they are children of this process; /proc/<pid>/stat).
 *
 * With `--bundle DIR --good DIR` a real bundle (its input size replaces `--size`) judges real good parts (that
 * folder's images, at the source's size) with the noise frames mixed in, still at a threshold between the two; and
 * `--frames raw` replays raw RGB files as a camera delivers them (no PNG decoding in the pipeline, whose CPU would
 * otherwise be counted in every mode and shrink the ratios).
 *
 * Run: node dist/benchmarks/records-cost.js [--runs 3] [--seconds 8] [--size 128] [--fps 250] [--cameras 2]
 *   [--rates 0.01,0.1,1] [--source WxH] [--modes off,on] [--bundle DIR --good DIR] [--frames png|raw]
 *   [--png-compression 6] [--name records-cost]
 * Writes results/<name>.{json,md}.
 */

const { values } = parseArgs({
  options: {
    runs: { type: "string", default: "3" },
    seconds: { type: "string", default: "8" },
    size: { type: "string", default: "128" },
    fps: { type: "string", default: "250" },
    cameras: { type: "string", default: "2" },
    rates: { type: "string", default: "0.01,0.1,1" },
    source: { type: "string" },
    modes: { type: "string", default: "off,on" },
    bundle: { type: "string" },
    good: { type: "string" },
    frames: { type: "string", default: "png" },
    "png-compression": { type: "string", default: "6" },
    /** The results' file stem, so a run of one rate does not overwrite the run of all three. */
    name: { type: "string", default: "records-cost" },
  },
});
const RUNS = Number(values.runs);
const SECONDS = Number(values.seconds);
const BUNDLE = values.bundle === undefined ? undefined : path.resolve(values.bundle);
const GOOD = values.good === undefined ? undefined : path.resolve(values.good);
if ((BUNDLE === undefined) !== (GOOD === undefined)) throw new Error("--bundle and --good go together");
const RAW = values.frames === "raw";
if (!["png", "raw"].includes(values.frames)) throw new Error(`--frames: png or raw (got ${values.frames})`);
/** The model's input side: the bundle's (square) input with --bundle, else --size. */
const SIZE = BUNDLE === undefined ? Number(values.size) : squareInput(BUNDLE);
const FPS = Number(values.fps);
/** records.images.png_compression of the runs with the record on. */
const PNG_COMPRESSION = Number(values["png-compression"]);
const CAMERAS = Number(values.cameras);
const WARMUP_S = 3;
const RATES = values.rates.split(",").map(Number);
/** The replay frames' size: `--source WxH`, or the model's. */
const [SOURCE_W, SOURCE_H] = (values.source ?? `${SIZE}x${SIZE}`).split("x").map(Number) as [number, number];
type Mode = "off" | "on" | "scaled";
const MODES = values.modes.split(",") as Mode[];
if (!MODES.includes("off") || MODES.some((m) => !["off", "on", "scaled"].includes(m)))
  throw new Error(`--modes: off and any of on, scaled (got ${values.modes})`);
/** Files per replay folder: 1 % defects is one noise frame in 100. */
const FILES = 100;

function squareInput(bundle: string): number {
  const { input } = JSON.parse(readFileSync(path.join(bundle, "manifest.json"), "utf8")) as {
    input: { width: number; height: number };
  };
  if (input.width !== input.height)
    throw new Error(`--bundle ${bundle}: input ${input.width}×${input.height} is not square`);
  return input.width;
}

async function png(file: string, rgb: Uint8Array): Promise<void> {
  await sharp(rgb, { raw: { width: SIZE, height: SIZE, channels: 3 } })
    .png()
    .toFile(file);
}

/** A replay file `<stem>.png` (or `.rgb` with --frames raw) of `big`, a frame at the source's size. */
async function writeSourceFrame(stem: string, big: Uint8Array): Promise<void> {
  if (RAW) await writeFile(`${stem}.rgb`, big);
  else
    await sharp(big, { raw: { width: SOURCE_W, height: SOURCE_H, channels: 3 } })
      .png()
      .toFile(`${stem}.png`);
}

/** A replay file: the frame at the source's size (upscaled from the model's); returns it back at the model's. */
async function sourceFrame(stem: string, rgb: Uint8Array): Promise<Uint8Array> {
  if (SOURCE_W === SIZE && SOURCE_H === SIZE) {
    if (RAW) await writeSourceFrame(stem, rgb);
    else await png(`${stem}.png`, rgb);
    return rgb;
  }
  const big = await resizeRgb(rgb, SIZE, SIZE, SOURCE_W, SOURCE_H);
  await writeSourceFrame(stem, big);
  return resizeRgb(big, SOURCE_W, SOURCE_H, SIZE, SIZE);
}

/** A good frame of the `--good` folder (cycled) as a replay file at the source's size; returns it at the model's. */
async function goodFrame(stem: string, files: readonly string[], i: number): Promise<Uint8Array> {
  const big = (await loadRgb(files[i % files.length]!, SOURCE_W, SOURCE_H)).rgb;
  await writeSourceFrame(stem, big);
  return resizeRgb(big, SOURCE_W, SOURCE_H, SIZE, SIZE);
}

/**
 * A replay folder of FILES frames, `rate` of them noise (spread evenly), the rest good parts: synthetic ones, or
 * the `--good` folder's images.
 */
async function frames(dir: string, rate: number): Promise<{ good: Uint8Array[]; noise: Uint8Array[] }> {
  const made = { good: [] as Uint8Array[], noise: [] as Uint8Array[] };
  await mkdir(dir, { recursive: true });
  const goodFiles = GOOD === undefined ? [] : await listImages(GOOD, "--good folder");
  const random = new Random(5);
  const defects = Math.round(rate * FILES);
  for (let i = 0; i < FILES; i++) {
    const isDefect =
      defects > 0 && Math.floor((i * defects) / FILES) !== Math.floor(((i + 1) * defects) / FILES);
    const stem = path.join(dir, String(i).padStart(3, "0"));
    const seen =
      isDefect || GOOD === undefined
        ? await sourceFrame(
            stem,
            isDefect
              ? new Uint8Array(SIZE * SIZE * 3).map(() => Math.floor(random.next() * 256))
              : synthesizePart(SIZE, 500 + i, "none").rgb,
          )
        : await goodFrame(stem, goodFiles, i);
    (isDefect ? made.noise : made.good).push(seen);
  }
  return made;
}

/**
 * A fixed threshold between the good frames' scores and the noise frames' (their midpoint), so the defect rate is
 * exactly the share of noise frames: a small model's own threshold would flag some good parts too.
 */
async function calibrate(bundleDir: string, good: Uint8Array[], noise: Uint8Array[]): Promise<number> {
  const bundle = await loadBundle(bundleDir);
  const { mean, std } = bundle.manifest.input;
  const scorer = await Scorer.create(bundle.teacher, bundle.student, {
    height: SIZE,
    width: SIZE,
    mean,
    std,
  });
  const scores = async (frames: Uint8Array[]) => {
    const out: number[] = [];
    // the daemon judges by the bundle's part score (retrain's default is the top-1 % mean), not the graph's maximum
    const spec = bundlePartScore(bundle.manifest);
    for (const rgb of frames)
      out.push(partScore((await scorer.score(rgb.slice(), 1)).maps, SIZE, SIZE, spec));
    return out;
  };
  const maxGood = Math.max(...(await scores(good)));
  const minNoise = Math.min(...(await scores(noise)));
  if (!(maxGood < minNoise))
    throw new Error(`good frames score up to ${maxGood}, noise from ${minNoise}: no threshold between`);
  return (maxGood + minNoise) / 2;
}

/** CPU ms so far of this process's capture processes. */
function captureCpuMs(): number {
  return captureProcessPids().reduce((ms, pid) => ms + (procStat(`/proc/${pid}/stat`)?.cpuMs ?? 0), 0);
}

async function run(
  work: string,
  bundle: string,
  threshold: number,
  broker: MosquittoBroker,
  rate: number,
  mode: Mode,
  n: number,
) {
  const records = mode !== "off";
  const name = `r${rate}-${mode}-${n}`;
  const dir = path.join(work, `frames-${rate}`);
  const config = completeConfig({
    model: { bundle, watch: false },
    cameras: Array.from({ length: CAMERAS }, (_, i) => ({
      id: `cam${i}`,
      source: RAW
        ? `multifilesrc location=${dir}/%03d.rgb index=${(i * 37) % FILES} loop=true ` +
          `caps=video/x-raw,format=RGB,width=${SOURCE_W},height=${SOURCE_H},framerate=${FPS}/1 ` +
          "! rawvideoparse use-sink-caps=true ! identity sync=true"
        : `multifilesrc location=${dir}/%03d.png index=${(i * 37) % FILES} loop=true ` +
          `caps=image/png,framerate=${FPS}/1 ! pngdec ! identity sync=true`,
      threshold: { value: threshold },
    })),
    mqtt: {
      url: broker.url,
      client_id: `cost-${name}`,
      prefix: "cost",
      snapshot: "none",
      outbox: { dir: path.join(work, `outbox-${name}`), max_messages: 1_000_000, max_bytes: 2 ** 31 },
    },
    records: {
      enabled: records,
      dir: path.join(work, `records-${name}`),
      images: { native: mode === "on", png_compression: PNG_COMPRESSION },
    },
    log: { level: "error" },
    health: { watchdog: false },
  });
  const latency = await resultLatencies(broker.url, "cost", `cost-sub-${name}`);
  const daemon = new Daemon(config, createLogger("error"));
  await daemon.start();
  await new Promise((r) => setTimeout(r, WARMUP_S * 1000));
  // the records thread's start (its modules, opening and checking the database: ~1 s of CPU, profiled) is a
  // once-per-start cost: under load it outlasts the warm-up, so wait for its first rows before measuring
  const started = Date.now();
  const written = () => daemon.sinkStatus("records")?.counts?.written ?? 0;
  while ((records && written() === 0) || Date.now() - started < 1000)
    await new Promise((r) => setTimeout(r, 100));
  const inspected0 = daemon.inspectedFrames;
  latency.start();
  const t0 = Date.now();
  const cpu0 = process.cpuUsage();
  const main0 = mainThreadCpuMs();
  const capture0 = captureCpuMs();
  await new Promise((r) => setTimeout(r, SECONDS * 1000));
  const cpu = process.cpuUsage(cpu0);
  const captureMs = captureCpuMs() - capture0;
  const mainMs = mainThreadCpuMs() - main0;
  latency.stop();
  const frames = daemon.inspectedFrames - inspected0;
  const fps = frames / ((Date.now() - t0) / 1000);
  const cpuMsPerFrame = (cpu.user + cpu.system) / 1000 / Math.max(1, frames);
  const cams = daemon.snapshot().cameras;
  const defectShare =
    cams.reduce((a, c) => a + c.defects, 0) /
    Math.max(
      1,
      cams.reduce((a, c) => a + c.inspected, 0),
    );
  const counts = daemon.sinkStatus("records")?.counts ?? {};
  await daemon.stop();
  const { p50, p99 } = await latency.end();
  const row = {
    defect_rate: rate,
    records,
    mode,
    run: n,
    inspected_fps: fps,
    cpu_ms_per_frame: cpuMsPerFrame,
    capture_cpu_ms_per_frame: captureMs / Math.max(1, frames),
    main_cpu_ms_per_frame: mainMs / Math.max(1, frames),
    defect_share: defectShare,
    latency_ms_p50: p50,
    latency_ms_p99: p99,
    rows_written: counts.written ?? 0,
    rows_dropped: counts.dropped ?? 0,
    images_saved: counts.images_saved ?? 0,
    images_dropped: counts.images_dropped ?? 0,
    images_native_missed: counts.images_native_missed ?? 0,
  };
  process.stderr.write(`[bench] ${JSON.stringify(row)}\n`);
  return row;
}

async function main(): Promise<void> {
  const before = await machineState();
  const work = await mkdtemp(path.join(os.tmpdir(), "stpmd-records-cost-"));
  const bundle = BUNDLE ?? path.join(work, "model");
  if (BUNDLE === undefined) await trainTinyBundle(work, bundle, 1, SIZE);
  const made = [];
  for (const rate of RATES) made.push(await frames(path.join(work, `frames-${rate}`), rate));
  // the threshold lies between good and noise frames: a run of 100 % defects alone replays no good ones
  if (made.every((m) => m.good.length === 0)) made.push(await frames(path.join(work, "frames-good"), 0));
  const threshold = await calibrate(
    bundle,
    made.flatMap((m) => m.good),
    made.flatMap((m) => m.noise),
  );
  process.stderr.write(`[bench] threshold ${threshold}\n`);
  const broker = await MosquittoBroker.start();
  const rows: Awaited<ReturnType<typeof run>>[] = [];
  for (const rate of RATES) {
    for (let n = 0; n < RUNS; n++) {
      // alternate the order, so a drift in the machine's load does not favour one
      for (const mode of n % 2 === 0 ? MODES : [...MODES].reverse())
        rows.push(await run(work, bundle, threshold, broker, rate, mode, n));
    }
  }
  await broker.close();
  // each run's outbox and record: hundreds of MB at 100 % defects
  await rm(work, { recursive: true, force: true });
  const of = (rate: number, mode: Mode) => rows.filter((r) => r.defect_rate === rate && r.mode === mode);
  const total = (r: (typeof rows)[number]) => r.cpu_ms_per_frame + r.capture_cpu_ms_per_frame;
  const summary = RATES.flatMap((rate) => {
    const off = of(rate, "off");
    const fpsOff = median(off.map((r) => r.inspected_fps));
    return MODES.filter((m) => m !== "off").map((mode) => {
      const on = of(rate, mode);
      const fpsOn = median(on.map((r) => r.inspected_fps));
      return {
        defect_rate: rate,
        mode,
        defect_share_measured: median(rows.filter((r) => r.defect_rate === rate).map((r) => r.defect_share)),
        fps_off: fpsOff,
        fps_on: fpsOn,
        throughput_on_over_off: fpsOn / fpsOff,
        cpu_ms_off: median(off.map((r) => r.cpu_ms_per_frame)),
        cpu_ms_on: median(on.map((r) => r.cpu_ms_per_frame)),
        capture_cpu_ms_off: median(off.map((r) => r.capture_cpu_ms_per_frame)),
        capture_cpu_ms_on: median(on.map((r) => r.capture_cpu_ms_per_frame)),
        total_cpu_ms_off: median(off.map(total)),
        total_cpu_ms_on: median(on.map(total)),
        main_cpu_ms_off: median(off.map((r) => r.main_cpu_ms_per_frame)),
        main_cpu_ms_on: median(on.map((r) => r.main_cpu_ms_per_frame)),
        p50_off: median(off.map((r) => r.latency_ms_p50)),
        p50_on: median(on.map((r) => r.latency_ms_p50)),
        p99_off: median(off.map((r) => r.latency_ms_p99)),
        p99_on: median(on.map((r) => r.latency_ms_p99)),
        images_dropped_on: on.reduce((sum, r) => sum + r.images_dropped, 0),
        images_native_missed_on: on.reduce((sum, r) => sum + r.images_native_missed, 0),
        images_saved_on: on.reduce((sum, r) => sum + r.images_saved, 0),
        rows_dropped_on: on.reduce((sum, r) => sum + r.rows_dropped, 0),
      };
    });
  });
  const after = await machineState();
  const report = {
    machine: machineInfo(),
    before,
    after,
    size: SIZE,
    bundle: BUNDLE ?? "a small bundle trained in the run",
    good: GOOD ?? "synthetic parts",
    frames: values.frames,
    png_compression: PNG_COMPRESSION,
    source: { width: SOURCE_W, height: SOURCE_H },
    modes: MODES,
    offered_fps: FPS * CAMERAS,
    cameras: CAMERAS,
    seconds: SECONDS,
    runs: RUNS,
    summary,
    rows,
  };
  const options = [
    values.rates === "0.01,0.1,1" ? "" : ` --rates ${values.rates}`,
    values.source === undefined ? "" : ` --source ${values.source}`,
    values.modes === "off,on" ? "" : ` --modes ${values.modes}`,
    BUNDLE === undefined ? "" : ` --bundle ${values.bundle} --good ${values.good}`,
    RAW ? " --frames raw" : "",
    PNG_COMPRESSION === 6 ? "" : ` --png-compression ${PNG_COMPRESSION}`,
    values.name === "records-cost" ? "" : ` --name ${values.name}`,
  ].join("");
  const md = [
    "# The part record's cost on the daemon",
    "",
    `\`node dist/benchmarks/records-cost.js --runs ${RUNS} --seconds ${SECONDS} --size ${SIZE} --fps ${FPS} --cameras ${CAMERAS}${options}\` on ${String(report.machine.cpu)} (${String(report.machine.logical_cpus)} cores, shared): ${CAMERAS} replay cameras of ${SOURCE_W}×${SOURCE_H} ${RAW ? "raw RGB frames" : "PNGs"} offered ${FPS} frames/s each, ${BUNDLE === undefined ? `a small bundle at ${SIZE}² judging synthetic parts` : `the bundle ${path.basename(BUNDLE)} at ${SIZE}² judging the images of ${values.good}`} and noise frames (the defects) at a threshold between the two, local mosquitto; records off and each mode alternating (on: native frames, scaled: records.images.native false), ${RUNS} runs each of ${SECONDS} s after ${WARMUP_S} s of warm-up, medians; CPU: user + system time per inspected frame, of the daemon's process and of its capture processes. Load before ${JSON.stringify(before.loadavg)}, after ${JSON.stringify(after.loadavg)}.`,
    "",
    "| defects (measured) | mode | frames/s off | frames/s on | on / off | CPU ms/frame daemon off / on | capture off / on | total on / off | main thread ms/frame off / on | capture→publish p50 off / on ms | p99 off / on ms | rows dropped | images saved / left out / native missed |",
    "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ...summary.map(
      (s) =>
        `| ${s.defect_rate * 100} % (${fmt(s.defect_share_measured * 100, 1)} %) | ${s.mode} | ${fmt(s.fps_off)} | ${fmt(s.fps_on)} | ${fmt(s.throughput_on_over_off, 3)} | ${fmt(s.cpu_ms_off, 3)} / ${fmt(s.cpu_ms_on, 3)} | ${fmt(s.capture_cpu_ms_off, 3)} / ${fmt(s.capture_cpu_ms_on, 3)} | ${fmt(s.total_cpu_ms_on / s.total_cpu_ms_off, 3)} | ${fmt(s.main_cpu_ms_off, 3)} / ${fmt(s.main_cpu_ms_on, 3)} | ${fmt(s.p50_off, 0)} / ${fmt(s.p50_on, 0)} | ${fmt(s.p99_off, 0)} / ${fmt(s.p99_on, 0)} | ${s.rows_dropped_on} | ${s.images_saved_on} / ${s.images_dropped_on} / ${s.images_native_missed_on} |`,
    ),
  ].join("\n");
  const file = await writeResults(values.name, report, md);
  process.stderr.write(`[bench] wrote ${file}\n${md}\n`);
}

await main();
