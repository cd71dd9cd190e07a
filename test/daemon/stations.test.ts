import assert from "node:assert/strict";
import { existsSync, readdirSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import mqtt from "mqtt";
import sharp from "sharp";
import { stringify } from "yaml";
import { bundleGeometry, loadBundle } from "../../src/bundle/bundle.js";
import { randomTeacher } from "../../src/bundle/random-teacher.js";
import { createLogger } from "../../src/core/log.js";
import type { InspectionResult } from "../../src/core/result.js";
import { Daemon } from "../../src/daemon/daemon.js";
import { MosquittoBroker } from "../../src/demo/broker.js";
import { synthesizePart } from "../../src/demo/synthetic.js";
import { encodeModel } from "../../src/onnx/onnx-graph.js";
import { applyIgnoreMask, rasterisePolygons } from "../../src/stpm/ignore.js";
import { Scorer } from "../../src/stpm/scorer.js";
import { RETRAIN_DEFAULTS, retrain } from "../../src/train/retrain.js";
import { replaySource, trainTinyBundle } from "../helpers/daemon-process.js";
import { normalFrames, tempDir } from "../helpers/tiny-data.js";
import { waitFor } from "../helpers/wait.js";

const logger = createLogger((process.env.TEST_LOG as "info") ?? "silent");
const SOURCE = 96;
const ROI = { x: 16, y: 16, width: 64, height: 64 };
/** The ignored corner, in ROI pixels; the defect lies inside it. */
const IGNORED: [number, number][] = [
  [0, 0],
  [30, 0],
  [30, 30],
  [0, 30],
];

async function train(
  work: string,
  frames: string,
  out: string,
  seed: number,
  roi?: typeof ROI,
): Promise<void> {
  await retrain({
    ...RETRAIN_DEFAULTS,
    framesDir: frames,
    teacherFile: path.join(work, "teacher.onnx"),
    outDir: out,
    epochs: 4,
    batchSize: 4,
    lr: 0.1,
    imageSize: 64,
    ...(roi ? { roi } : {}),
    seed,
    logger,
    progress: false,
  });
}

/**
 * A 96×96 frame of the ROI station's product: a flat surface with fine grain; with `defect`, a red 14×14 spot at ROI
 * pixels (6..20, 6..20). (A flat product, because the random teacher these tests use is no ImageNet network: on
 * structured parts its maps peak on their edges whatever else is in the frame.)
 */
function surface(seed: number, defect: boolean): Uint8Array {
  const rgb = new Uint8Array(SOURCE * SOURCE * 3);
  let state = seed * 7919 + 1;
  for (let i = 0; i < rgb.length; i++) {
    state = (state * 1103515245 + 12345) & 0x7fffffff;
    rgb[i] = 110 + (state % 21);
  }
  if (defect) {
    for (let y = ROI.y + 6; y < ROI.y + 20; y++) {
      for (let x = ROI.x + 6; x < ROI.x + 20; x++) rgb.set([250, 20, 20], (y * SOURCE + x) * 3);
    }
  }
  return rgb;
}

async function writeReplay(dir: string, frames: Uint8Array[], size: number): Promise<void> {
  await mkdir(dir, { recursive: true });
  for (const [i, rgb] of frames.entries()) {
    await sharp(rgb, { raw: { width: size, height: size, channels: 3 } })
      .png()
      .toFile(path.join(dir, `${String(i).padStart(3, "0")}.png`));
  }
}

/** Scores of the defect frames cropped to the ROI, without and with the ignore mask, as the daemon computes them. */
async function offlineScores(
  bundleDir: string,
  frames: Uint8Array[],
): Promise<{ full: number; masked: number }> {
  const bundle = await loadBundle(bundleDir);
  const { width, height, mean, std } = bundle.manifest.input;
  const scorer = await Scorer.create(bundle.teacher, bundle.student, { width, height, mean, std });
  const crops = await Promise.all(
    frames.map(async (rgb) => {
      const buf = await sharp(rgb, { raw: { width: SOURCE, height: SOURCE, channels: 3 } })
        .extract({ left: ROI.x, top: ROI.y, width: ROI.width, height: ROI.height })
        .raw()
        .toBuffer();
      return new Uint8Array(buf);
    }),
  );
  const { maps } = await scorer.scoreAll(crops, 4);
  await scorer.release();
  const mask = rasterisePolygons([IGNORED], width, height);
  let full = 0;
  let masked = 0;
  for (const map of maps) {
    full = Math.max(full, ...map);
    masked = Math.max(masked, applyIgnoreMask(map.slice(), mask));
  }
  return { full, masked };
}

test("stations: two cameras with two bundles, one with an ROI and an ignore mask; batches never mix bundles; SIGHUP changes thresholds and masks without a restart; a broken bundle leaves the other camera untouched", async () => {
  const work = await tempDir("stpmd-stations-");
  await writeFile(path.join(work, "teacher.onnx"), encodeModel(randomTeacher(3, 8)));
  // station "plain": whole 64×64 frames; station "roi": 96×96 frames of which the ROI is learnt and inspected
  const plainTrain = await normalFrames(8, 64, path.join(work, "plain-train"));
  const roiTrain = path.join(work, "roi-train");
  await writeReplay(
    roiTrain,
    [0, 1, 2, 3, 4, 5, 6, 7].map((i) => surface(i, false)),
    SOURCE,
  );
  const plainBundle = path.join(work, "models", "plain");
  const roiBundle = path.join(work, "models", "roi");
  await train(work, plainTrain, plainBundle, 1);
  await train(work, roiTrain, roiBundle, 2, ROI);
  const roiManifest = (await loadBundle(roiBundle)).manifest;
  assert.deepEqual(bundleGeometry(roiManifest).roi, ROI, "the bundle records the ROI it was trained on");

  const defects = [1, 2, 3].map((seed) => surface(300 + seed, true));
  const { full, masked } = await offlineScores(roiBundle, defects);
  assert.ok(
    full > 1.2 * masked,
    `the defect must dominate its frame's score (full ${full}, masked ${masked})`,
  );
  const between = Math.sqrt(full * masked);

  await writeReplay(
    path.join(work, "plain-replay"),
    [0, 1, 2].map((i) => synthesizePart(64, 500 + i, "none").rgb),
    64,
  );
  await writeReplay(path.join(work, "roi-replay"), defects, SOURCE);
  const replay = (dir: string): string =>
    `multifilesrc location=${path.join(work, dir)}/%03d.png index=0 loop=true caps=image/png,framerate=15/1 ! pngdec ! identity sync=true`;

  const broker = await MosquittoBroker.start();
  interface Event {
    camera: string;
    score: number;
    regions: { bbox: number[]; bbox_source?: number[] }[];
  }
  const events: Event[] = [];
  const subscriber = mqtt.connect(broker.url, { clientId: "stations-sub" });
  await new Promise<void>((resolve) => subscriber.on("connect", () => resolve()));
  await subscriber.subscribeAsync("st/+/defect", { qos: 1 });
  subscriber.on("message", (_topic, payload) => {
    events.push(JSON.parse(payload.toString()) as Event);
  });

  const configFile = path.join(work, "stpmd.yaml");
  const roiCamera = (threshold: unknown, ignore: boolean) => ({
    id: "roi",
    source: replay("roi-replay"),
    model: "models/roi",
    roi: ROI,
    ...(ignore ? { ignore: { polygons: [IGNORED] } } : {}),
    threshold,
  });
  const writeConfig = (cameras: unknown[]) =>
    writeFile(
      configFile,
      stringify({
        model: { bundle: "models/plain", watch: false },
        inference: { max_batch: 4, max_wait_ms: 20, queue_size: 16 },
        cameras,
        mqtt: {
          url: broker.url,
          client_id: "stations-test",
          prefix: "st",
          snapshot: "none",
          status_interval_s: 1,
          outbox: { dir: "outbox" },
        },
        collection: { dir: "frames" },
        health: { watchdog: false },
      }),
    );
  const plainCamera = { id: "plain", source: replay("plain-replay"), threshold: { value: 1e9 } };
  await writeConfig([plainCamera, roiCamera({ value: between }, true)]);
  const { loadConfig } = await import("../../src/config/index.js");
  const batches: InspectionResult[][] = [];
  const results: InspectionResult[] = [];
  const daemon = new Daemon(loadConfig(configFile), logger, {
    configPath: configFile,
    hooks: { onBatch: (b) => batches.push(b), onResult: (r) => results.push(r) },
  });
  const count = (camera: string, since = 0) =>
    results.slice(since).filter((r) => r.frame.cameraId === camera);
  try {
    await daemon.start();
    await waitFor(
      "both cameras inspected",
      () => count("plain").length >= 10 && count("roi").length >= 10,
      30_000,
    );

    // a defect inside the ignore mask raises no event, and the map there is zero
    const roiResults = count("roi");
    assert.ok(
      roiResults.every((r) => r.verdict === "ok"),
      "no ROI frame is defective while its defect is ignored",
    );
    const map = roiResults[0]!.map;
    assert.equal(
      roiResults[0]!.frame.width,
      64,
      "the ROI is cropped in GStreamer to the bundle's capture size",
    );
    assert.equal(map[10 * 64 + 10], 0, "an ignored pixel's anomaly is zeroed");
    assert.deepEqual(
      events.filter((e) => e.camera === "roi"),
      [],
    );

    // batches never mix bundles
    for (const b of batches) {
      assert.equal(new Set(b.map((r) => r.frame.cameraId)).size, 1, "one batch, one station's bundle");
      assert.equal(new Set(b.map((r) => r.modelVersion)).size, 1);
    }

    // SIGHUP without the ignore mask: the same frames become defective, with no camera restart
    const startsBefore = daemon.captureStarts("roi");
    await writeConfig([plainCamera, roiCamera({ value: between }, false)]);
    let mark = results.length;
    let outcome = await daemon.reload({ via: "sighup" });
    assert.equal(outcome.configApplied, true, outcome.problems.join("; "));
    await waitFor(
      "defect events once the mask is gone",
      () => events.some((e) => e.camera === "roi"),
      20_000,
    );
    assert.ok(count("roi", mark).some((r) => r.verdict === "defect"));
    // regions are reported in the inspected image and, offset by the ROI, in the source frame
    const region = events.find((e) => e.camera === "roi")!.regions[0]!;
    assert.deepEqual(region.bbox_source, [
      region.bbox[0]! + ROI.x,
      region.bbox[1]! + ROI.y,
      region.bbox[2],
      region.bbox[3],
    ]);
    assert.equal(daemon.captureStarts("roi"), startsBefore, "a mask change needs no camera restart");

    // SIGHUP with a changed threshold changes verdicts, again without a restart
    await writeConfig([plainCamera, roiCamera({ value: 1e9 }, false)]);
    outcome = await daemon.reload({ via: "sighup" });
    assert.equal(outcome.configApplied, true);
    mark = results.length;
    await waitFor("verdicts at the new threshold", () => count("roi", mark).length >= 6, 20_000);
    assert.ok(
      count("roi", mark)
        .slice(2)
        .every((r) => r.verdict === "ok" && r.threshold === 1e9),
    );
    assert.equal(daemon.captureStarts("roi"), startsBefore, "a threshold change needs no camera restart");
    assert.equal(daemon.snapshot().cameras.find((c) => c.id === "roi")?.threshold, 1e9);

    // an invalid file is rejected and the running configuration kept
    await writeFile(configFile, "cameras: [ {id: roi, source: 12\n");
    outcome = await daemon.reload({ via: "sighup" });
    assert.equal(outcome.configApplied, false);
    assert.ok(outcome.problems.length > 0);
    assert.equal(daemon.snapshot().cameras.length, 2);

    // a broken bundle for one camera leaves the other untouched: the plain station keeps its model, the ROI
    // station goes on without a restart
    const plainVersion = daemon.snapshot().cameras.find((c) => c.id === "plain")!.model_version;
    await writeFile(path.join(plainBundle, "student.onnx"), "not an onnx model");
    await writeConfig([plainCamera, roiCamera({ value: 1e9 }, false)]);
    outcome = await daemon.reload({ via: "sighup" });
    assert.deepEqual(outcome.failed, [path.resolve(plainBundle)]);
    mark = results.length;
    await waitFor(
      "both stations still inspect",
      () => count("plain", mark).length >= 5 && count("roi", mark).length >= 5,
      20_000,
    );
    assert.ok(
      count("plain", mark).every((r) => r.modelVersion === plainVersion),
      "the old plain model is kept",
    );
    assert.equal(daemon.captureStarts("roi"), startsBefore);
  } finally {
    await daemon.stop();
    subscriber.end(true);
    await broker.stop();
  }
});

test("collection keeps each station's frames at its ROI's resolution, capped by max_long_side, not at model size", async () => {
  const work = await tempDir("stpmd-collect-");
  const bundle = path.join(work, "model");
  await trainTinyBundle(work, bundle, 3, 64); // a 64×64 bundle, trained on work/train-64
  const parts = [0, 1, 2].map((i) => synthesizePart(64, 100 + i, "none"));
  const upscaled = (rgb: Uint8Array, size: number) =>
    sharp(rgb, { raw: { width: 64, height: 64, channels: 3 } }).resize(size, size, { kernel: "linear" });
  // station "roi": the part at 128×128 inside a 160×144 frame, its ROI around the part; station "whole": the part
  // at 96×96, the whole frame inspected
  const roi = { x: 16, y: 8, width: 128, height: 128 };
  for (const [i, part] of parts.entries()) {
    const name = `${String(i).padStart(3, "0")}.png`;
    await mkdir(path.join(work, "roi-replay"), { recursive: true });
    await mkdir(path.join(work, "whole-replay"), { recursive: true });
    const big = await upscaled(part.rgb, 128).raw().toBuffer();
    await sharp({ create: { width: 160, height: 144, channels: 3, background: { r: 40, g: 40, b: 40 } } })
      .composite([{ input: big, raw: { width: 128, height: 128, channels: 3 }, left: roi.x, top: roi.y }])
      .png()
      .toFile(path.join(work, "roi-replay", name));
    await upscaled(part.rgb, 96)
      .png()
      .toFile(path.join(work, "whole-replay", name));
  }
  const broker = await MosquittoBroker.start();
  const config = {
    model: { bundle, watch: false },
    inference: { max_batch: 4, max_wait_ms: 20, queue_size: 16 },
    cameras: [
      { id: "roi", source: replaySource(path.join(work, "roi-replay"), 15), roi },
      { id: "whole", source: replaySource(path.join(work, "whole-replay"), 15) },
    ],
    mqtt: {
      url: broker.url,
      client_id: "collect-test",
      prefix: "co",
      outbox: { dir: path.join(work, "outbox") },
    },
    collection: {
      enabled: true,
      dir: path.join(work, "frames"),
      score_quantile: 1,
      min_interval_s: 0.2,
      max_long_side: 112,
    },
    health: { watchdog: false },
  };
  const configFile = path.join(work, "stpmd.yaml");
  await writeFile(configFile, stringify(config));
  const { loadConfig } = await import("../../src/config/index.js");
  const results: InspectionResult[] = [];
  const daemon = new Daemon(loadConfig(configFile), logger, { hooks: { onResult: (r) => results.push(r) } });
  const saved = (camera: string) => {
    const dir = path.join(work, "frames", camera);
    return existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith(".png")) : [];
  };
  try {
    await daemon.start();
    await waitFor(
      "two frames kept per station",
      () => saved("roi").length >= 2 && saved("whole").length >= 2,
    );
  } finally {
    await daemon.stop();
    await broker.stop();
  }
  // the model saw every frame at its own 64×64 size, the full-size ones included
  assert.ok(results.every((r) => r.frame.width === 64 && r.frame.height === 64));
  assert.ok(results.some((r) => r.frame.original !== undefined));
  for (const [camera, size] of [
    ["roi", 112], // the 128×128 ROI, capped at a long side of 112
    ["whole", 96], // below the cap: as the camera delivers it
  ] as const) {
    for (const file of saved(camera)) {
      const { data, info } = await sharp(path.join(work, "frames", camera, file))
        .raw()
        .toBuffer({ resolveWithObject: true });
      assert.deepEqual([info.width, info.height, info.channels], [size, size, 3], `${camera}/${file}`);
      // it shows the part (the ROI's content, not the frame around it): near one of the parts at that size
      const differences = await Promise.all(
        parts.map(async (p) => {
          const expected = await upscaled(p.rgb, size).raw().toBuffer();
          let sum = 0;
          for (let i = 0; i < expected.length; i++) sum += Math.abs(expected[i]! - data[i]!);
          return sum / expected.length;
        }),
      );
      assert.ok(Math.min(...differences) < 8, `${camera}/${file}: mean difference ${differences.join(", ")}`);
    }
  }
  // and a station's folder is a retrain's input as it is, at any geometry
  const again = await retrain({
    ...RETRAIN_DEFAULTS,
    framesDir: path.join(work, "frames", "roi"),
    teacherFile: path.join(work, "teacher.onnx"),
    outDir: path.join(work, "retrained"),
    epochs: 1,
    batchSize: 2,
    imageSize: { width: 96, height: 96 },
    logger,
    progress: false,
  });
  assert.equal(again.trainImages + again.valImages, saved("roi").length);
  assert.deepEqual([again.manifest.input.width, again.manifest.input.height], [96, 96]);
});
