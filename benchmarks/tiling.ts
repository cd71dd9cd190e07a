import { readFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { scoreStats, writeBundle } from "../src/bundle/bundle.js";
import { loadTeacher } from "../src/bundle/teacher.js";
import type { Frame } from "../src/core/frame.js";
import { createLogger } from "../src/core/log.js";
import { Inspector } from "../src/pipeline/inspector.js";
import { ScorerThread } from "../src/pipeline/scorer-thread.js";
import { type Geometry, planTiles, tiledGeometry } from "../src/stpm/geometry.js";
import { fmt, machineInfo, machineState, median, writeResults } from "./common.js";

/**
 * Tiled inspection of a 1920×1080 camera frame: frames/s through the daemon's inspection stage (cut into 256-pixel
 * tiles → batches of `--batch` tiles through the inference thread → stitched map → image score and regions), at
 * native resolution (scale 1: 45 tiles) and at scale 0.5 (960×540: 15 tiles), and the tiling overhead: tiles/s of
 * that whole path against the plain batch-of-8 scoring throughput of the same bundle (tiles already packed,
 * nothing cut or stitched), measured in the same run, alternating, so both see the same machine load.
 *
 * The bundle is the real teacher with itself as the student: the arithmetic per tile is a real model's (the
 * scores are zero, which changes nothing about the time). GStreamer capture and MQTT are not part of it (see
 * benchmarks/daemon.ts for the whole daemon).
 *
 * Run: node dist/benchmarks/tiling.js [--teacher FILE] [--rounds 5] [--frames 4] [--batch 8] [--quick]
 * Writes benchmarks/results/tiling.{json,md}.
 */

const FRAME = { width: 1920, height: 1080 };
const TILE = 256;
const OVERLAP = 32;

async function tiledBundle(teacherFile: string, dir: string, geometry: Geometry): Promise<void> {
  const teacher = await loadTeacher(teacherFile);
  const bytes = new Uint8Array(await readFile(teacherFile));
  const scores = [0.1, 0.2, 0.3];
  await writeBundle(dir, bytes, bytes, {
    model_version: `tiling-bench-${geometry.scale}`,
    created_at: new Date().toISOString(),
    input: {
      name: "frames",
      width: TILE,
      height: TILE,
      mean: teacher.normalisation.mean,
      std: teacher.normalisation.std,
      normalisation_source: teacher.normalisation.source,
    },
    geometry,
    outputs: teacher.graph.outputs.map((o) => o.name),
    teacher_source_path: teacherFile,
    threshold: 1,
    threshold_rule: "benchmark",
    validation_scores: scores,
    score_stats: scoreStats(scores),
    training: {},
  });
}

function frameOf(width: number, height: number, seq: number): Frame {
  const rgb = new Uint8Array(width * height * 3);
  for (let i = 0; i < rgb.length; i++) rgb[i] = (i * 31 + seq * 7) & 0xff;
  return { cameraId: "cam", seq, captureTs: Date.now(), width, height, rgb };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      teacher: { type: "string", default: path.resolve("../shared/weights/mobilenet_v2_coral_pyramid.onnx") },
      rounds: { type: "string", default: "5" },
      frames: { type: "string", default: "4" },
      batch: { type: "string", default: "8" },
      quick: { type: "boolean", default: false },
    },
  });
  const rounds = values.quick ? 2 : Number(values.rounds);
  const framesPerRound = values.quick ? 1 : Number(values.frames);
  const batch = Number(values.batch);
  const work = path.join(os.tmpdir(), `stpmd-tiling-${process.pid}`);
  const logger = createLogger("error");
  const before = await machineState();
  const cases: Record<string, unknown>[] = [];
  for (const scale of [1, 0.5]) {
    const geometry = tiledGeometry(FRAME, null, TILE, OVERLAP, scale);
    const dir = path.join(work, `scale-${scale}`);
    await tiledBundle(values.teacher!, dir, geometry);
    const plan = planTiles(geometry.capture, TILE, OVERLAP);
    const inspector = new Inspector(dir, { providers: ["cpu"] }, logger, batch);
    await inspector.load();
    const plain = await ScorerThread.load(dir, { providers: ["cpu"], intraOpThreads: 0 });
    const { width, height } = geometry.capture;
    const frames = Array.from({ length: framesPerRound }, (_, i) => frameOf(width, height, i));
    const view = () => ({ threshold: 1 });
    // warm-up: first runs allocate ORT's arenas
    await inspector.inspect(frames.slice(0, 1), view);
    await plain.score(new Uint8Array(8 * TILE * TILE * 3), 8);
    const pathTilesPerS: number[] = [];
    const plainTilesPerS: number[] = [];
    const framesPerS: number[] = [];
    const tiles = framesPerRound * plan.count;
    for (let r = 0; r < rounds; r++) {
      let t = performance.now();
      await inspector.inspect(frames, view);
      const s = (performance.now() - t) / 1000;
      framesPerS.push(framesPerRound / s);
      pathTilesPerS.push(tiles / s);
      t = performance.now();
      for (let done = 0; done < tiles; done += 8) {
        await plain.score(new Uint8Array(8 * TILE * TILE * 3), 8);
      }
      plainTilesPerS.push((Math.ceil(tiles / 8) * 8) / ((performance.now() - t) / 1000));
    }
    await inspector.close();
    await plain.release();
    const ratio = median(pathTilesPerS) / median(plainTilesPerS);
    cases.push({
      scale,
      capture: geometry.capture,
      tiles_per_frame: plan.count,
      tile_batch: batch,
      frames_per_s: median(framesPerS),
      whole_path_tiles_per_s: median(pathTilesPerS),
      plain_batch8_tiles_per_s: median(plainTilesPerS),
      ratio_whole_path_to_plain: ratio,
      rounds,
      frames_per_round: framesPerRound,
    });
    process.stderr.write(
      `[tiling] scale ${scale}: ${plan.count} tiles/frame, ${fmt(median(framesPerS), 2)} frames/s, ${fmt(median(pathTilesPerS))} tiles/s vs plain ${fmt(median(plainTilesPerS))} (${fmt(ratio, 3)}×)\n`,
    );
  }
  const report = {
    benchmark: "tiling",
    frame: FRAME,
    tile: TILE,
    overlap: OVERLAP,
    teacher: values.teacher,
    machine: machineInfo(),
    load_before: before,
    load_after: await machineState(),
    cases,
  };
  const rows = cases.map((c) => {
    const cap = c.capture as { width: number; height: number };
    return `| ${c.scale} | ${cap.width}×${cap.height} | ${c.tiles_per_frame} | ${fmt(c.frames_per_s as number, 2)} | ${fmt(c.whole_path_tiles_per_s as number)} | ${fmt(c.plain_batch8_tiles_per_s as number)} | **${fmt(c.ratio_whole_path_to_plain as number, 3)}×** |`;
  });
  const md = [
    `# Tiled inspection of a ${FRAME.width}×${FRAME.height} frame (${TILE}-pixel tiles, overlap ${OVERLAP}, batches of ${batch} tiles)`,
    "",
    "| scale | image | tiles/frame | frames/s | tiles/s, whole path | tiles/s, plain batch-8 scoring | ratio |",
    "|---:|---|---:|---:|---:|---:|---:|",
    ...rows,
    "",
    `Medians of ${rounds} rounds of ${framesPerRound} frames; CPU, ${os.cpus().length} cores. Command: \`node dist/benchmarks/tiling.js\`.`,
  ].join("\n");
  await writeResults(values.quick ? "tiling-quick" : "tiling", report, md);
  console.log(md);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
