import assert from "node:assert/strict";
import path from "node:path";
import { test } from "node:test";
import { pino } from "pino";
import sharp from "sharp";
import { type Manifest, scoreStats } from "../../src/bundle/bundle.js";
import { createLogger } from "../../src/core/log.js";
import { loadBinaryImage } from "../../src/data/images.js";
import { roiWarnings, Station } from "../../src/stations/station.js";
import { resizeGeometry, tiledGeometry } from "../../src/stpm/geometry.js";
import { cameraConfig } from "../helpers/config.js";
import { capturingLogger } from "../helpers/logs.js";
import { tempDir } from "../helpers/tiny-data.js";

const logger = createLogger((process.env.TEST_LOG as "info") ?? "silent");

test("an ignore mask image and polygons are combined on the model's grid, and the source transform follows the ROI", async () => {
  const dir = await tempDir("stpmd-mask-");
  // a 40×20 mask (the ROI's aspect, twice its size): its left quarter is white, i.e. ignored
  const mask = new Uint8Array(40 * 20);
  for (let y = 0; y < 20; y++) for (let x = 0; x < 10; x++) mask[y * 40 + x] = 255;
  const file = path.join(dir, "mask.png");
  await sharp(mask, { raw: { width: 40, height: 20, channels: 1 } })
    .png()
    .toFile(file);
  const camera = cameraConfig({
    id: "cam",
    source: "videotestsrc",
    roi: { x: 100, y: 50, width: 80, height: 40 },
    ignore: {
      polygons: [
        [
          [60, 20],
          [80, 20],
          [80, 40],
          [60, 40],
        ],
      ],
      mask: file,
    },
    threshold: { value: 0.5 },
  });
  const station = new Station(camera, "/models/x", logger);
  station.maskImage = await loadBinaryImage(file);
  const manifest = {
    model_version: "m1",
    threshold: 0.9,
    validation_scores: [0.1],
    score_stats: { mean: 0.1, std: 0 },
    input: { width: 32, height: 16 },
    geometry: resizeGeometry({ width: 32, height: 16 }, { width: 80, height: 40 }),
  } as unknown as Manifest;
  const view = station.view(manifest);
  assert.equal(view.threshold, 0.5);
  assert.deepEqual(view.source, { x: 100, y: 50, scaleX: 2.5, scaleY: 2.5 });
  const ignored = (x: number, y: number) => view.ignore![y * 32 + x];
  assert.equal(ignored(0, 0), 1, "mask image: left quarter");
  assert.equal(ignored(7, 15), 1);
  assert.equal(ignored(8, 0), 0);
  assert.equal(ignored(31, 15), 1, "polygon: bottom-right corner, ROI pixels scaled to the grid");
  assert.equal(ignored(23, 7), 0);
  assert.equal(ignored(24, 8), 1);
  assert.equal(
    [...view.ignore!].reduce((a, b) => a + b, 0),
    8 * 16 + 8 * 8,
  );
});

test("a camera's ROI that differs in aspect (or, for tiles, in size) from its bundle's gets a warning naming both", () => {
  const camera = (roi?: { x: number; y: number; width: number; height: number }) =>
    cameraConfig({ id: "cam1", source: "videotestsrc", ...(roi ? { roi } : {}) });
  const trained = { x: 0, y: 0, width: 800, height: 400 };
  const resize = resizeGeometry({ width: 256, height: 128 }, { width: 800, height: 400 }, trained);
  assert.deepEqual(roiWarnings(camera(), resize), [], "no ROI, nothing to compare");
  assert.deepEqual(roiWarnings(camera({ x: 10, y: 10, width: 400, height: 200 }), resize), [], "same aspect");
  assert.match(
    roiWarnings(camera({ x: 0, y: 0, width: 400, height: 400 }), resize)[0] ?? "",
    /camera cam1: its ROI 400×400 has another aspect than the 800×400 its bundle was trained on/,
  );
  const tiled = tiledGeometry({ width: 800, height: 400 }, trained, 128, 16, 0.5);
  assert.match(
    roiWarnings(camera({ x: 0, y: 0, width: 400, height: 200 }), tiled)[0] ?? "",
    /ROI 400×200 differs in size from the 800×400 its tiled bundle was trained on/,
  );
});

test("a camera's score_aggregation gets a threshold from the bundle's scores in it; an old bundle refuses it unless the threshold is a value", () => {
  const { logger: log, lines } = capturingLogger("warn");
  const own = Array.from({ length: 30 }, (_, i) => 0.1 + i / 1000); // 0.100 … 0.129
  const smoothed = Array.from({ length: 30 }, (_, i) => 0.05 + i / 1000); // 0.050 … 0.079
  const stats = scoreStats(own);
  const base = {
    model_version: "m1",
    // retrain's rule, mean + 3·std of its own scores
    threshold: stats.mean + 3 * stats.std,
    validation_scores: own,
    score_stats: stats,
    input: { width: 32, height: 32 },
  };
  const withScores = {
    ...base,
    score: { aggregation: "max" },
    validation_scores_by_aggregation: { max: own, smoothed_max: smoothed, top_k_mean: own },
  } as unknown as Manifest;
  const smoothedCamera = new Station(
    cameraConfig({ id: "cam", source: "videotestsrc", score_aggregation: "smoothed_max" }),
    "/models/x",
    log,
  );
  const view = smoothedCamera.view(withScores);
  assert.deepEqual(view.score, { aggregation: "smoothed_max", sigma: 4 });
  // the same σ multiple over the smoothed scores: their spread equals the max scores', 0.05 lower
  assert.ok(Math.abs(view.threshold - (base.threshold - 0.05)) < 1e-12);
  assert.deepEqual(view.falseAlarms, {
    false_alarms: 0,
    normals: 30,
    rate: 0,
    upper95: 1 - 0.05 ** (1 / 30),
  });
  assert.equal(lines.length, 0);

  // a bundle from before issue 19: no smoothed scores, so no threshold fits
  const old = { ...base, model_version: "m0" } as unknown as Manifest;
  const refused = smoothedCamera.view(old);
  assert.deepEqual(refused.score, { aggregation: "max" });
  assert.equal(refused.threshold, base.threshold);
  assert.equal(lines.length, 1);
  assert.match(
    String(lines[0]!.msg),
    /^camera cam: score_aggregation smoothed_max refused for model m0: the bundle stores no validation scores in it, so no threshold fits \(retrain the bundle, or give threshold: \{value\}\); scoring by the bundle's max$/,
  );
  const fixed = new Station(
    cameraConfig({
      id: "cam",
      source: "videotestsrc",
      score_aggregation: "top_k_mean",
      threshold: { value: 0.2 },
    }),
    "/models/x",
    log,
  ).view(old);
  assert.deepEqual(fixed.score, { aggregation: "top_k_mean", k: 0.01 });
  assert.equal(fixed.threshold, 0.2);
  assert.equal(lines.length, 1);
});

test("a false_alarm_rate the validation set is too small for is said once, with the normals it needs", () => {
  const { logger: log, lines } = capturingLogger("warn");
  const scores = Array.from({ length: 30 }, (_, i) => i / 100);
  const manifest = {
    model_version: "m1",
    threshold: 0.5,
    validation_scores: scores,
    score_stats: scoreStats(scores),
    input: { width: 32, height: 32 },
  } as unknown as Manifest;
  const station = new Station(
    cameraConfig({ id: "cam", source: "videotestsrc", threshold: { false_alarm_rate: 0.01 } }),
    "/models/x",
    log,
  );
  const view = station.view(manifest);
  station.view(manifest);
  assert.equal(view.threshold, 0.29);
  assert.equal(lines.length, 1);
  assert.match(String(lines[0]!.msg), /needs at least 523 held-out normals/);
});

test("a station's log lines carry its camera once: the logger is bound to it, the lines add no second camera key", () => {
  const raw: string[] = [];
  const bound = pino({ level: "info" }, { write: (line: string) => raw.push(line) }).child({
    camera: "cam7",
  });
  const station = new Station(cameraConfig({ id: "cam7", source: "videotestsrc" }), "/models/x", bound);
  station.pendingParts.push({ partId: "B1764-10", expiresAt: 0 });
  assert.equal(station.takePartId(1000), undefined, "the expired trigger is dropped");
  assert.equal(raw.length, 1);
  assert.equal(raw[0]!.match(/"camera":/g)?.length, 1, raw[0]);
  assert.match(raw[0]!, /trigger for part \\"B1764-10\\" expired/);
});

test("a recipe switch falls between frames: a frame captured under the recipe left is judged as it was, the next under the new one; a run-time threshold stays unless the switch changes it", () => {
  const scores = Array.from({ length: 30 }, (_, i) => i / 100);
  const manifest = {
    model_version: "m1",
    threshold: 0.5,
    validation_scores: scores,
    score_stats: scoreStats(scores),
    input: { width: 32, height: 32 },
  } as unknown as Manifest;
  const own = cameraConfig({ id: "cam", source: "videotestsrc", threshold: { value: 0.3 } });
  const station = new Station(own, "/models/x", logger, "A");
  // recipe A has never judged a frame when B is selected: its view is made from A's settings at the switch
  station.switchRecipe("B", { ...own, threshold: { value: 0.9 } }, undefined, manifest);
  assert.equal(station.view(manifest, "A").threshold, 0.3, "a frame captured under A, still queued");
  assert.equal(station.view(manifest, "B").threshold, 0.9);
  assert.equal(station.view(manifest).threshold, 0.9, "the recipe in force by default");
  assert.equal(station.recipe, "B");

  // an operator's threshold under B survives a switch that leaves the threshold as it is; one that changes it wins
  station.setThresholdRule({ value: 0.7 });
  station.switchRecipe("C", { ...own, threshold: { value: 0.9 } }, undefined, manifest);
  assert.equal(station.view(manifest, "C").threshold, 0.7);
  assert.equal(station.view(manifest, "B").threshold, 0.7, "B's frames: as B judged its last ones");
  station.switchRecipe("A", own, undefined, manifest);
  assert.equal(station.view(manifest, "A").threshold, 0.3);
  assert.equal(station.enabled, true);
  station.switchRecipe("off", { ...own, enabled: false }, undefined, manifest);
  assert.equal(station.enabled, false, "a recipe that disables the camera");
});
