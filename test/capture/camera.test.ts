import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import sharp from "sharp";
import {
  Camera,
  type CameraRuntime,
  type CameraState,
  type CameraWarning,
} from "../../src/capture/camera.js";
import type { CameraConfig } from "../../src/config/index.js";
import { isStpmdError } from "../../src/core/errors.js";
import type { Frame } from "../../src/core/frame.js";
import { createLogger } from "../../src/core/log.js";
import { resizeRgb } from "../../src/data/images.js";
import { cameraConfig } from "../helpers/config.js";
import { capturingLogger } from "../helpers/logs.js";
import { waitFor } from "../helpers/wait.js";

const thisFile = fileURLToPath(import.meta.url);
/** dist/test/capture/camera.test.js → the repository root. */
const repoRoot = path.resolve(path.dirname(thisFile), "../../..");
const sharedDir = process.env.STPMD_SHARED ?? path.resolve(repoRoot, "../shared");

const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), "stpmd-camera-test-"));
after(() => fs.rmSync(tmpRoot, { recursive: true, force: true }));

const logger = createLogger("silent");

type CameraPatch = Partial<Omit<CameraConfig, "restart_backoff">> &
  Pick<CameraConfig, "source"> & { restart_backoff?: Partial<CameraConfig["restart_backoff"]> };

/**
 * A camera from its config slice (defaults from the schema) with a short fixed backoff, at 64×48 unless the patch
 * names the runtime's width/height.
 */
function makeCamera(
  patch: CameraPatch &
    Partial<Pick<CameraRuntime, "width" | "height" | "resetAfterMs" | "originalMaxLongSide">>,
): Camera {
  const { width = 64, height = 48, resetAfterMs, originalMaxLongSide, ...keys } = patch;
  const config = cameraConfig({
    id: "cam",
    stall_timeout_s: 0,
    ...keys,
    restart_backoff: { initial_ms: 30, max_ms: 30, factor: 1, ...keys.restart_backoff },
  });
  return new Camera(config, {
    width,
    height,
    logger,
    ...(resetAfterMs ? { resetAfterMs } : {}),
    ...(originalMaxLongSide ? { originalMaxLongSide } : {}),
  });
}

/** Everything a camera emits, with the wall-clock time of each state change. */
class Recorder {
  readonly frames: Frame[] = [];
  readonly states: Array<{ state: CameraState; at: number }> = [];
  readonly warnings: CameraWarning[] = [];
  constructor(camera: Camera) {
    camera.on("frame", (frame) => this.frames.push(frame));
    camera.on("state", (state) => this.states.push({ state, at: Date.now() }));
    camera.on("warning", (warning) => this.warnings.push(warning));
  }
  stateNames(): CameraState[] {
    return this.states.map((s) => s.state);
  }
  /** Warnings about the camera's source. */
  sourceWarnings(): CameraWarning[] {
    return this.warnings;
  }
  /** Milliseconds from each "restarting" to the following "starting": the backoff delays actually waited. */
  restartDelays(): number[] {
    const delays: number[] = [];
    this.states.forEach((s, i) => {
      const next = this.states[i + 1];
      if (s.state === "restarting" && next?.state === "starting") delays.push(next.at - s.at);
    });
    return delays;
  }
}

const until = (condition: () => boolean, timeoutMs: number, what: string) =>
  waitFor(what, condition, timeoutMs, 5);

/** Starts the camera, waits for `count` frames (at most `timeoutMs`), and always stops it. */
async function recordFrames(camera: Camera, count: number, timeoutMs: number): Promise<Recorder> {
  const rec = new Recorder(camera);
  camera.start();
  try {
    await until(() => rec.frames.length >= count, timeoutMs, `${count} frames`);
  } finally {
    camera.stop();
  }
  return rec;
}

/** This process's capture processes that still run. */
function captureProcesses(): number[] {
  const pids: number[] = [];
  for (const task of fs.readdirSync("/proc/self/task")) {
    const children = fs.readFileSync(`/proc/self/task/${task}/children`, "utf8");
    for (const pid of children.split(" ").filter(Boolean)) {
      let stat = "";
      try {
        stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
      } catch {
        continue; // it just exited
      }
      if (!/\) Z/.test(stat)) pids.push(Number(pid));
    }
  }
  return pids;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function pixel(frame: Frame, x: number, y: number): [number, number, number] {
  const i = (y * frame.width + x) * 3;
  return [frame.rgb[i]!, frame.rgb[i + 1]!, frame.rgb[i + 2]!];
}

function assertNear(actual: readonly number[], expected: readonly number[], tolerance: number, what: string) {
  const ok = actual.every((v, i) => Math.abs(v - expected[i]!) <= tolerance);
  assert.ok(ok, `${what}: expected ≈ [${expected}] (±${tolerance}), got [${actual}]`);
}

function assertConsecutiveSeq(frames: readonly Frame[]): void {
  assert.deepEqual(
    frames.map((f) => f.seq),
    frames.map((_, i) => i),
  );
}

/** A live test source at `fps` frames per second; solid `argb` colour when given. */
function liveTestSource(fps: string, extra = ""): string {
  return `videotestsrc is-live=true ${extra} ! video/x-raw,framerate=${fps}`;
}

describe("Camera: frames", () => {
  test("a live 30 fps test source gives 64×48 RGB frames with increasing seq and plausible timestamps", async () => {
    const camera = makeCamera({ id: "line1", source: liveTestSource("30/1") });
    const rec = new Recorder(camera);
    const t0 = Date.now();
    camera.start();
    try {
      await until(() => rec.frames.length >= 15, 3000, "15 frames");
      const t1 = Date.now();
      const stats = camera.stats();
      const frames = rec.frames.slice(0, 15);
      for (const frame of frames) {
        assert.equal(frame.cameraId, "line1");
        assert.equal(frame.width, 64);
        assert.equal(frame.height, 48);
        assert.equal(frame.rgb.length, 64 * 48 * 3);
        assert.ok(
          frame.captureTs >= t0 && frame.captureTs <= t1,
          `captureTs ${frame.captureTs} in [${t0}, ${t1}]`,
        );
      }
      assertConsecutiveSeq(frames);
      for (let i = 1; i < frames.length; i++) assert.ok(frames[i]!.captureTs >= frames[i - 1]!.captureTs);
      // Frames 2..14 (after start-up): 12 intervals of 1/30 s.
      const meanInterval = (frames[14]!.captureTs - frames[2]!.captureTs) / 12;
      assert.ok(meanInterval > 20 && meanInterval < 60, `mean frame interval ${meanInterval} ms at 30 fps`);
      assert.ok(stats.fps > 18 && stats.fps < 40, `fps ${stats.fps}`);
      assert.ok(stats.frames >= 15);
      assert.equal(stats.state, "streaming");
      assert.equal(stats.lastFrameTs, rec.frames.at(-1)?.captureTs ?? null);
      assert.deepEqual(rec.stateNames(), ["starting", "streaming"]);
      assert.deepEqual(rec.sourceWarnings(), []);
    } finally {
      camera.stop();
    }
    assert.equal(camera.state, "stopped");
    assert.equal(rec.stateNames().at(-1), "stopped");
  });

  test("a solid-colour source comes out in R, G, B channel order", async () => {
    // foreground-color is ARGB: R = 0x20, G = 0xc0, B = 0x40.
    const camera = makeCamera({
      source: liveTestSource("30/1", "pattern=solid-color foreground-color=0xff20c040"),
    });
    const rec = await recordFrames(camera, 2, 3000);
    const frame = rec.frames[1]!;
    for (const [x, y] of [
      [0, 0],
      [63, 0],
      [31, 24],
      [0, 47],
      [63, 47],
    ] as const) {
      assertNear(pixel(frame, x, y), [0x20, 0xc0, 0x40], 2, `pixel (${x}, ${y})`);
    }
  });

  test("odd widths (250 px: 750 bytes per row, padded to 752 by GStreamer) come out packed", async () => {
    const camera = makeCamera({
      width: 250,
      height: 10,
      source: liveTestSource("30/1", "pattern=solid-color foreground-color=0xff20c040"),
    });
    const rec = await recordFrames(camera, 2, 3000);
    const frame = rec.frames[1]!;
    assert.equal(frame.rgb.length, 250 * 10 * 3);
    // Any leftover padding would shift later rows and put padding bytes (or the wrong channel) into pixels.
    for (let y = 0; y < 10; y++) {
      for (let x = 0; x < 250; x++)
        assertNear(pixel(frame, x, y), [0x20, 0xc0, 0x40], 2, `pixel (${x}, ${y})`);
    }
    assert.deepEqual(rec.sourceWarnings(), []);
  });

  test("a multifilesrc replay camera delivers the PNG files in order, scaled", async () => {
    const dir = path.join(tmpRoot, "replay");
    fs.mkdirSync(dir);
    // File 0: left half red, right half blue. File 1: solid green. 40×30, scaled by GStreamer to 16×8.
    const width = 40;
    const height = 30;
    const split = Buffer.alloc(width * height * 3);
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++)
        split.set(x < width / 2 ? [255, 0, 0] : [0, 0, 255], (y * width + x) * 3);
    }
    await sharp(split, { raw: { width, height, channels: 3 } })
      .png()
      .toFile(path.join(dir, "000.png"));
    await sharp({ create: { width, height, channels: 3, background: { r: 0, g: 255, b: 0 } } })
      .png()
      .toFile(path.join(dir, "001.png"));

    // loop=false: the two files, then end of stream, then a restart replays them, with seq continuing.
    const camera = makeCamera({
      width: 16,
      height: 8,
      source: `multifilesrc location=${dir}/%03d.png index=0 loop=false ! pngdec`,
    });
    const rec = await recordFrames(camera, 4, 3000);
    const frames = rec.frames.slice(0, 4);
    assertConsecutiveSeq(frames);
    for (const frame of [frames[0]!, frames[2]!]) {
      assertNear(pixel(frame, 2, 4), [255, 0, 0], 30, `file 0 (seq ${frame.seq}) left`);
      assertNear(pixel(frame, 13, 4), [0, 0, 255], 30, `file 0 (seq ${frame.seq}) right`);
    }
    for (const frame of [frames[1]!, frames[3]!]) {
      assertNear(pixel(frame, 2, 4), [0, 255, 0], 30, `file 1 (seq ${frame.seq}) left`);
      assertNear(pixel(frame, 13, 4), [0, 255, 0], 30, `file 1 (seq ${frame.seq}) right`);
    }
    assert.ok(camera.stats().restarts >= 1, "the replay restarted after its end of stream");
    assert.ok(rec.sourceWarnings().some((w) => w.kind === "end_of_stream"));
  });

  test("a replay camera over the shared MVTec bottle images delivers 256×256 frames", async (t) => {
    const dir = path.join(sharedDir, "data/mvtec_ad/bottle/test/broken_large");
    const first = path.join(dir, "000.png");
    if (!fs.existsSync(first)) {
      t.skip(`shared data not found at ${dir}`);
      return;
    }
    const camera = makeCamera({
      width: 256,
      height: 256,
      source: `multifilesrc location=${dir}/%03d.png index=0 stop-index=2 loop=false ! pngdec`,
    });
    const rec = await recordFrames(camera, 2, 5000);
    const frame = rec.frames[0]!;
    assert.equal(frame.rgb.length, 256 * 256 * 3);
    // The first frame is 000.png, scaled 900 → 256 by GStreamer; sharp's resize is an independent reference
    // (different filter, so only roughly equal).
    const reference = await sharp(first).resize(256, 256, { fit: "fill" }).removeAlpha().raw().toBuffer();
    let absDiff = 0;
    for (let i = 0; i < reference.length; i++) absDiff += Math.abs(reference[i]! - frame.rgb[i]!);
    const meanAbsDiff = absDiff / reference.length;
    assert.ok(meanAbsDiff < 4, `mean absolute difference to sharp's resize: ${meanAbsDiff.toFixed(2)}`);
  });
});

describe("Camera: frames at collection size", () => {
  /** A 640×480 PNG replay, red left of x = 320 and blue right of it, looping as fast as it decodes. */
  async function splitReplay(): Promise<string> {
    const dir = path.join(tmpRoot, "split-640");
    if (!fs.existsSync(dir)) {
      fs.mkdirSync(dir);
      const [width, height] = [640, 480];
      const rgb = Buffer.alloc(width * height * 3);
      for (let i = 0; i < width * height; i++) rgb.set(i % width < 320 ? [255, 0, 0] : [0, 0, 255], i * 3);
      await sharp(rgb, { raw: { width, height, channels: 3 } })
        .png()
        .toFile(path.join(dir, "000.png"));
    }
    return `multifilesrc location=${dir}/%03d.png index=0 loop=true ! pngdec`;
  }

  /**
   * Starts the camera, requests one frame at collection size after `before` frames, and records at least `total`
   * and until the requested one has come: the caps switch reaches the appsink behind whatever the pipeline's queues
   * already hold, which on a loaded CI machine was more than 9 frames.
   */
  async function requestOne(camera: Camera, before: number, total: number): Promise<Frame[]> {
    const frames: Frame[] = [];
    camera.on("frame", (f) => {
      frames.push(f);
      if (frames.length === before) assert.equal(camera.requestOriginal(), true);
    });
    camera.start();
    try {
      await until(
        () => frames.length >= total && frames.some((f) => f.original !== undefined),
        5000,
        `${total} frames and the one requested`,
      );
    } finally {
      camera.stop();
    }
    return frames;
  }

  /** A pixel of a frame delivered whole by a switched capsfilter: RGBA. */
  const rgbaPixel = (o: NonNullable<Frame["original"]>, x: number, y: number) => {
    assert.ok("rgba" in o, "RGBA, as the switched caps say");
    const i = (y * o.width + x) * 4;
    return [o.rgba[i]!, o.rgba[i + 1]!, o.rgba[i + 2]!];
  };

  test("one requested frame comes at the ROI's own resolution, the others at capture size, in order", async () => {
    // ROI 160×120 straddling the colour edge: its left half red, its right half blue
    const roi = { x: 240, y: 100, width: 160, height: 120 };
    const camera = makeCamera({
      source: await splitReplay(),
      roi,
      width: 32,
      height: 24,
      originalMaxLongSide: 2048,
    });
    const frames = await requestOne(camera, 3, 12);
    assertConsecutiveSeq(frames);
    const withOriginal = frames.filter((f) => f.original !== undefined);
    assert.equal(withOriginal.length, 1, "one request, one frame at full size");
    const f = withOriginal[0]!;
    assert.ok(f.seq >= 3, `asked for after frame 2, came as frame ${f.seq}`);
    const o = f.original!;
    assert.ok("rgba" in o);
    assert.deepEqual([o.width, o.height, o.rgba.byteLength], [160, 120, 160 * 120 * 4]);
    assertNear(rgbaPixel(o, 10, 60), [255, 0, 0], 10, "original, left of the edge");
    assertNear(rgbaPixel(o, 150, 60), [0, 0, 255], 10, "original, right of the edge");
    // the model still gets the capture size, resized from the very image that is kept
    for (const frame of frames)
      assert.deepEqual([frame.width, frame.height, frame.rgb.byteLength], [32, 24, 32 * 24 * 3]);
    assertNear(pixel(f, 2, 12), [255, 0, 0], 30, "inspected frame, left");
    assertNear(pixel(f, 29, 12), [0, 0, 255], 30, "inspected frame, right");
  });

  test("a frame larger than the long-side cap is scaled down with its aspect kept", async () => {
    const camera = makeCamera({
      source: await splitReplay(),
      width: 32,
      height: 24,
      originalMaxLongSide: 200,
    });
    const frames = await requestOne(camera, 2, 8);
    const o = frames.find((f) => f.original)?.original;
    assert.deepEqual([o?.width, o?.height], [200, 150], "640×480 capped at a long side of 200");
    assertNear(rgbaPixel(o!, 50, 75), [255, 0, 0], 10, "left half");
    assertNear(rgbaPixel(o!, 150, 75), [0, 0, 255], 10, "right half");
  });

  test("a camera without a long-side cap, or not playing, gives no full-size frames", async () => {
    const plain = makeCamera({ source: await splitReplay(), width: 32, height: 24 });
    plain.start();
    try {
      await until(() => plain.stats().frames > 0, 3000, "a frame");
      assert.equal(plain.requestOriginal(), false);
    } finally {
      plain.stop();
    }
    const stopped = makeCamera({
      source: await splitReplay(),
      width: 32,
      height: 24,
      originalMaxLongSide: 100,
    });
    assert.equal(stopped.requestOriginal(), false);
  });
});

describe("Camera: restarts", () => {
  test("a source that ends is restarted with growing, capped backoff and seq keeps increasing", async () => {
    const camera = makeCamera({
      source: liveTestSource("100/1", "num-buffers=3"),
      restart_backoff: { initial_ms: 40, max_ms: 160, factor: 2 },
    });
    const rec = new Recorder(camera);
    camera.start();
    try {
      await until(() => rec.restartDelays().length >= 4, 5000, "4 restarts");
    } finally {
      camera.stop();
    }
    const delays = rec.restartDelays().slice(0, 4);
    const expected = [40, 80, 160, 160];
    delays.forEach((delay, i) => {
      assert.ok(
        delay >= expected[i]! - 2 && delay < expected[i]! + 120,
        `delay ${i}: ${delay} ms, expected ≈ ${expected[i]}`,
      );
    });
    assertConsecutiveSeq(rec.frames);
    assert.ok(rec.frames.length >= 8, `frames from several runs (got ${rec.frames.length})`);
    const stats = camera.stats();
    assert.ok(stats.restarts >= 4);
    assert.equal(stats.startFailures, 0);
    assert.equal(stats.stalls, 0);
    const failures = rec.sourceWarnings();
    assert.ok(
      failures.length >= 4 && failures.every((w) => w.kind === "end_of_stream"),
      JSON.stringify(failures),
    );
  });

  test("a run that streamed long enough resets the backoff to its initial delay", async () => {
    // Each run streams 30 frames at 100 fps (~300 ms) > resetAfterMs, so every delay is the initial 40 ms; without
    // the reset they would be 40, 160, 640.
    const camera = makeCamera({
      source: liveTestSource("100/1", "num-buffers=30"),
      restart_backoff: { initial_ms: 40, max_ms: 1000, factor: 4 },
      resetAfterMs: 200,
    });
    const rec = new Recorder(camera);
    camera.start();
    try {
      await until(() => rec.restartDelays().length >= 3, 5000, "3 restarts");
    } finally {
      camera.stop();
    }
    for (const delay of rec.restartDelays()) assert.ok(delay >= 38 && delay < 150, `delay ${delay} ms`);
  });

  test("an unknown element is retried without throwing and does not disturb a healthy camera", async () => {
    const broken = makeCamera({
      id: "broken",
      source: "nosuchelement",
      restart_backoff: { initial_ms: 20, max_ms: 80, factor: 2 },
    });
    const healthy = makeCamera({ id: "healthy", width: 32, height: 24, source: liveTestSource("30/1") });
    const brokenRec = new Recorder(broken);
    const healthyRec = new Recorder(healthy);
    healthy.start();
    broken.start();
    try {
      await until(() => healthyRec.frames.length >= 1, 3000, "the healthy camera's first frame");
      const windowStart = Date.now();
      await sleep(1200);
      const inWindow = healthyRec.frames.filter((f) => f.captureTs >= windowStart);
      assert.ok(
        inWindow.length >= 20,
        `healthy camera delivered ${inWindow.length} frames in 1.2 s at 30 fps`,
      );
      const gaps = inWindow.slice(1).map((f, i) => f.captureTs - inWindow[i]!.captureTs);
      assert.ok(Math.max(...gaps) < 250, `largest gap between healthy frames: ${Math.max(...gaps)} ms`);
    } finally {
      broken.stop();
      healthy.stop();
    }
    const stats = broken.stats();
    // 20 + 40 + 80 + 80 + … ms: well over 5 attempts in 1.2 s.
    assert.ok(stats.startFailures >= 5, `start failures: ${stats.startFailures}`);
    assert.equal(stats.restarts, stats.startFailures);
    assert.equal(stats.frames, 0);
    assert.ok(brokenRec.stateNames().includes("restarting"));
    const failures = brokenRec.sourceWarnings();
    assert.equal(failures.length, stats.startFailures);
    assert.ok(failures.every((w) => w.kind === "pipeline_invalid" && w.message.includes('"nosuchelement"')));
    assert.deepEqual(healthyRec.sourceWarnings(), []);
    assertConsecutiveSeq(healthyRec.frames);
  });

  test("a source that fails to open is restarted and GStreamer's error text is reported", async () => {
    const missing = path.join(tmpRoot, "missing.png");
    const camera = makeCamera({
      source: `filesrc location=${missing} ! pngdec`,
      restart_backoff: { initial_ms: 20, max_ms: 40, factor: 2 },
    });
    const rec = new Recorder(camera);
    camera.start();
    try {
      await until(() => camera.stats().restarts >= 3, 3000, "3 restarts");
    } finally {
      camera.stop();
    }
    const failures = rec.sourceWarnings();
    assert.ok(failures.length >= 3);
    for (const warning of failures) {
      assert.equal(warning.kind, "pipeline_error");
      assert.match(warning.message, /GstFileSrc/);
      assert.ok(warning.message.includes(missing), warning.message);
    }
    assert.equal(camera.stats().startFailures, 0, "the description itself is fine");
    assert.equal(rec.frames.length, 0);
  });

  test("a V4L2 device that does not exist is restarted even though GStreamer gives no reason", async (t) => {
    // v4l2src fails while the pipeline is still in NULL, and the addon stops polling the bus at the first message it
    // sees in NULL, so the error text never arrives: the appsink's empty pull is what reports it.
    const camera = makeCamera({
      source: "v4l2src device=/dev/stpmd-no-such-camera",
      restart_backoff: { initial_ms: 20, max_ms: 20, factor: 1 },
    });
    const rec = new Recorder(camera);
    camera.start();
    try {
      await until(() => camera.stats().restarts >= 2, 3000, "2 restarts");
    } finally {
      camera.stop();
    }
    if (rec.sourceWarnings().some((w) => w.kind === "pipeline_invalid")) {
      t.skip("GStreamer's v4l2src (gst-plugins-good video4linux2) is not installed");
      return;
    }
    assert.ok(rec.sourceWarnings().every((w) => w.kind === "no_sample" || w.kind === "pipeline_error"));
    assert.equal(rec.frames.length, 0);
  });

  test("restarts replay the camera's one pipeline instead of building a new one each time", async () => {
    const camera = makeCamera({
      source: liveTestSource("200/1", "num-buffers=2"),
      restart_backoff: { initial_ms: 1, max_ms: 1, factor: 1 },
    });
    const rec = new Recorder(camera);
    camera.start();
    try {
      await until(() => camera.stats().restarts >= 10, 5000, "10 restarts");
    } finally {
      camera.stop();
    }
    assert.equal(camera.stats().pipelines, 1);
    // Each replay is a full run: both frames again, and only its own end of stream (no stale message of the
    // previous run ending it early).
    assert.ok(rec.frames.length >= 20, `frames: ${rec.frames.length}`);
    assertConsecutiveSeq(rec.frames);
    assert.ok(rec.sourceWarnings().every((w) => w.kind === "end_of_stream"));
  });

  test("a source with dynamic pads (decodebin) that fails to link on replay gets a new pipeline per restart", async () => {
    const file = path.join(tmpRoot, "decodebin.png");
    await sharp({ create: { width: 40, height: 30, channels: 3, background: { r: 0, g: 0, b: 255 } } })
      .png()
      .toFile(file);
    // One frame, then end of stream; the replay of decodebin finds its new pad unlinked.
    const camera = makeCamera({
      source: `filesrc location=${file} ! decodebin`,
      restart_backoff: { initial_ms: 5, max_ms: 5, factor: 1 },
    });
    const rec = await recordFrames(camera, 4, 5000);
    const stats = camera.stats();
    const notLinked = rec.sourceWarnings().filter((w) => w.message.includes("dynamic pads"));
    assert.equal(notLinked.length, 1, JSON.stringify(rec.sourceWarnings()));
    assert.match(notLinked[0]!.message, /not-linked/);
    // Frame 1 came from the first pipeline (whose replay then failed), every later one from a pipeline of its own.
    assert.ok(
      stats.pipelines >= rec.frames.length,
      `pipelines ${stats.pipelines}, frames ${rec.frames.length}`,
    );
    assertNear(pixel(rec.frames.at(-1)!, 5, 5), [0, 0, 255], 30, "last frame");
  });

  test("survives many restart cycles without a native crash or starving libuv's thread pool", async () => {
    const camera = makeCamera({
      width: 16,
      height: 12,
      source: liveTestSource("200/1", "num-buffers=2"),
      restart_backoff: { initial_ms: 1, max_ms: 1, factor: 1 },
    });
    const rec = new Recorder(camera);
    camera.start();
    try {
      await until(() => camera.stats().restarts >= 40, 10_000, "40 restarts");
    } finally {
      camera.stop();
    }
    assertConsecutiveSeq(rec.frames);
    assert.ok(rec.frames.length >= 40);
    // A bus poll or pull left blocked on a dead pipeline would hold a pool thread forever; with 4 threads, file
    // reads would then hang.
    const reads = Promise.all(Array.from({ length: 8 }, () => fs.promises.readFile(thisFile)));
    const timeout = sleep(2000).then(() => "timeout");
    assert.notEqual(await Promise.race([reads, timeout]), "timeout", "fs reads completed");

    const emittedAfterStop: string[] = [];
    camera.on("frame", () => emittedAfterStop.push("frame"));
    camera.on("state", (s) => emittedAfterStop.push(s));
    camera.on("warning", (w) => emittedAfterStop.push(w.kind));
    camera.stop(); // idempotent: no second "stopped"
    await sleep(200);
    assert.deepEqual(emittedAfterStop, []);
  });
});

describe("Camera: the capture process", () => {
  test("its stderr reaches the log tagged with the camera, a repeated GStreamer line once a minute", async () => {
    const { logger: capturing, lines } = capturingLogger("info");
    const missing = path.join(tmpRoot, "no-such-file.png");
    // GST_DEBUG makes filesrc print a WARN line to the capture process's stderr at each failed run
    process.env.GST_DEBUG = "filesrc:2";
    let camera: Camera;
    try {
      camera = new Camera(
        cameraConfig({
          id: "noisy",
          source: `filesrc location=${missing} ! pngdec`,
          stall_timeout_s: 0,
          restart_backoff: { initial_ms: 20, max_ms: 20, factor: 1 },
        }),
        { width: 64, height: 48, logger: capturing },
      );
      camera.start();
    } finally {
      delete process.env.GST_DEBUG;
    }
    try {
      await until(() => camera.stats().restarts >= 6, 5000, "6 restarts");
    } finally {
      camera.stop();
    }
    const gstLines = lines.filter((l) => l.kind === undefined && / WARN .*gst_file_src_start/.test(l.msg));
    assert.equal(gstLines.length, 1, JSON.stringify(gstLines));
    assert.equal(gstLines[0]!.camera, "noisy");
    assert.ok(gstLines[0]!.msg.includes(missing), gstLines[0]!.msg);
    assert.ok(!gstLines[0]!.msg.includes("\u001b"), "no colour codes");
    // the failures themselves are warnings of their own, one per run
    assert.ok(lines.filter((l) => l.kind === "pipeline_error").length >= 6);
  });

  test("stop() ends the capture process", async () => {
    const camera = makeCamera({ source: liveTestSource("30/1") });
    const rec = await recordFrames(camera, 2, 5000);
    assert.ok(rec.frames.length >= 2);
    await until(() => captureProcesses().length === 0, 3000, "no capture process left");
  });
});

describe("Camera: silence", () => {
  // One frame at start, the next only after 30 s: a source that goes quiet without end of stream or error.
  const quietSource = liveTestSource("1/30");

  test("free-run: a camera that goes quiet is reported stalled and restarted", async () => {
    const camera = makeCamera({ source: quietSource, stall_timeout_s: 0.15 });
    const rec = new Recorder(camera);
    camera.start();
    try {
      await until(() => camera.stats().stalls >= 3, 5000, "3 stalls");
    } finally {
      camera.stop();
    }
    const names = rec.stateNames();
    assert.deepEqual(names.slice(0, 5), ["starting", "streaming", "stalled", "restarting", "starting"]);
    assert.ok(rec.frames.length >= 3, "each restarted run delivered its first frame again");
    assertConsecutiveSeq(rec.frames);
    const stats = camera.stats();
    assert.ok(stats.restarts >= 3);
    assert.ok(rec.sourceWarnings().every((w) => w.kind === "stalled"));
  });

  test("hardware trigger: silence is reported as idle and never restarts the camera", async () => {
    const camera = makeCamera({ source: quietSource, stall_timeout_s: 0.15, trigger: "hardware" });
    const rec = new Recorder(camera);
    camera.start();
    try {
      await sleep(800);
      assert.equal(camera.state, "idle");
    } finally {
      camera.stop();
    }
    assert.deepEqual(rec.stateNames(), ["starting", "streaming", "idle", "stopped"]);
    const stats = camera.stats();
    assert.equal(stats.restarts, 0);
    assert.equal(stats.stalls, 0);
    assert.equal(rec.frames.length, 1);
    assert.deepEqual(rec.sourceWarnings(), []);
  });

  test("hardware trigger: the next frame after idle brings the camera back to streaming", async () => {
    // A frame every 250 ms and a 100 ms timeout: idle between "parts", streaming on each one.
    const camera = makeCamera({ source: liveTestSource("4/1"), stall_timeout_s: 0.1, trigger: "hardware" });
    const rec = await recordFrames(camera, 4, 3000);
    const names = rec.stateNames();
    assert.deepEqual(names.slice(0, 6), ["starting", "streaming", "idle", "streaming", "idle", "streaming"]);
    assert.equal(camera.stats().restarts, 0);
    assertConsecutiveSeq(rec.frames);
  });
});

describe("Camera: configuration", () => {
  test("an invalid source or backoff is a config error naming the key", () => {
    // the rules live in the config schema and loader, once; the camera takes the validated slice
    assert.throws(
      () => makeCamera({ source: "videotestsrc ! appsink" }),
      (err: unknown) =>
        isStpmdError(err) &&
        err.code === "ERR_CONFIG_INVALID" &&
        /cameras\[0\] \(id "cam"\)\.source: must describe only the source/.test(err.message),
    );
    assert.throws(
      () =>
        makeCamera({ source: "videotestsrc", restart_backoff: { initial_ms: 100, max_ms: 50, factor: 2 } }),
      (err: unknown) =>
        isStpmdError(err) &&
        /cameras\[0\] \(id "cam"\)\.restart_backoff\.max_ms: must be >= restart_backoff\.initial_ms \(100\)/.test(
          err.message,
        ),
    );
    assert.throws(
      () => makeCamera({ source: "videotestsrc", stall_timeout_s: -1 }),
      (err: unknown) =>
        isStpmdError(err) && /cameras\[0\] \(id "cam"\)\.stall_timeout_s: must be >= 0/.test(err.message),
    );
  });

  test("stop() from inside a frame listener ends all events at once", async () => {
    const camera = makeCamera({ source: liveTestSource("100/1") });
    const events: string[] = [];
    camera.on("state", (state) => events.push(state));
    camera.on("frame", (frame) => {
      events.push(`frame ${frame.seq}`);
      camera.stop();
    });
    camera.start();
    await until(() => events.includes("stopped"), 3000, "the stop");
    await sleep(200);
    assert.deepEqual(events, ["starting", "streaming", "frame 0", "stopped"]);
  });

  test("start and stop are idempotent", async () => {
    const camera = makeCamera({ source: liveTestSource("30/1") });
    const rec = new Recorder(camera);
    camera.start();
    camera.start();
    await until(() => rec.frames.length >= 1, 3000, "a frame");
    camera.stop();
    camera.stop();
    assert.deepEqual(rec.stateNames(), ["starting", "streaming", "stopped"]);
  });
});

describe("Camera: native frames (records.images.native)", () => {
  const [W, H] = [200, 150];
  /** Colours of replay file k: its left half and its right half, different for every file. */
  const colours = (k: number): [number[], number[]] => [
    [40 * k, 250 - 40 * k, 30],
    [200, 20 * k, 250 - 30 * k],
  ];

  /** Six 200×150 PNGs, each split into two colours of its own. */
  async function nativeReplay(): Promise<string> {
    const dir = path.join(tmpRoot, "native-200");
    if (!fs.existsSync(dir)) {
      fs.mkdirSync(dir);
      for (let k = 0; k < 6; k++) {
        const [left, right] = colours(k);
        const rgb = Buffer.alloc(W * H * 3);
        for (let i = 0; i < W * H; i++) rgb.set(i % W < W / 2 ? left : right, i * 3);
        await sharp(rgb, { raw: { width: W, height: H, channels: 3 } })
          .png()
          .toFile(path.join(dir, `${String(k).padStart(3, "0")}.png`));
      }
    }
    return dir;
  }

  const nativePixel = (f: { width: number; rgb: Uint8Array }, x: number, y: number) => {
    const i = (y * f.width + x) * 3;
    return [f.rgb[i]!, f.rgb[i + 1]!, f.rgb[i + 2]!];
  };

  function nativeCamera(
    source: string,
    maxBytes: number,
    size = { width: 40, height: 30 },
    maxFrames = 64,
  ): Camera {
    return new Camera(cameraConfig({ id: "cam", stall_timeout_s: 0, source }), {
      ...size,
      logger,
      originalMaxLongSide: 2048,
      native: { maxBytes, maxFrames, maxLongSide: 2048 },
    });
  }

  /**
   * Runs the camera until `count` frames came, fetching each frame's native frame as it arrives (while the
   * capture still runs), and checks the pair: the native frame is one of the replay's files, whole, and the frame
   * the model got is that same file scaled (a frame of the next file is 21 grey levels away on average).
   */
  async function checkPairs(camera: Camera, count: number): Promise<void> {
    const pairs: Promise<void>[] = [];
    const frames: Frame[] = [];
    camera.on("frame", (frame) => {
      frames.push(frame);
      pairs.push(
        camera.nativeFrame(frame.seq).then(async (native) => {
          assert.deepEqual(frame.native, { width: W, height: H }, `frame ${frame.seq} says its native size`);
          assert.ok(native, `frame ${frame.seq}: its native frame is held`);
          assert.deepEqual([native.width, native.height, native.rgb.byteLength], [W, H, W * H * 3]);
          const k = [0, 1, 2, 3, 4, 5].findIndex((n) => {
            const [left, right] = colours(n);
            return (
              nativePixel(native, 10, 75).every((v, c) => Math.abs(v - left[c]!) <= 2) &&
              nativePixel(native, 190, 75).every((v, c) => Math.abs(v - right[c]!) <= 2)
            );
          });
          assert.ok(k >= 0, `frame ${frame.seq}: its native frame is one of the replay's files`);
          const resized = await resizeRgb(native.rgb, W, H, 40, 30);
          let difference = 0;
          for (let i = 0; i < resized.length; i++) difference += Math.abs(resized[i]! - frame.rgb[i]!);
          difference /= resized.length;
          assert.ok(
            difference < 4,
            `frame ${frame.seq}: judged = kept, scaled (mean difference ${difference})`,
          );
        }),
      );
    });
    camera.start();
    try {
      await until(() => frames.length >= count, 10_000, `${count} frames`);
      await Promise.all(pairs);
    } finally {
      camera.stop();
    }
    assertConsecutiveSeq(frames);
    for (const frame of frames) assert.deepEqual([frame.width, frame.height], [40, 30]);
  }

  test("each frame is its native frame scaled, and the native frame is held for it", async () => {
    const dir = await nativeReplay();
    await checkPairs(nativeCamera(replaySourceOf(dir, 50), 48 * 2 ** 20), 18);
  });

  test("a camera in the daemon's process (STPMD_CAPTURE=in-process) keeps no native frames", async () => {
    const dir = await nativeReplay();
    process.env.STPMD_CAPTURE = "in-process";
    let camera: Camera;
    try {
      camera = nativeCamera(replaySourceOf(dir, 50), 48 * 2 ** 20);
    } finally {
      delete process.env.STPMD_CAPTURE;
    }
    const rec = await recordFrames(camera, 5, 10_000);
    for (const frame of rec.frames) assert.equal(frame.native, undefined);
  });

  for (const [bound, maxBytes, maxFrames] of [
    ["native.maxBytes", 3 * W * H * 3, 64],
    ["native.maxFrames", 48 * 2 ** 20, 3],
  ] as const)
    test(`only the newest frames within ${bound} are held; older ones answer null`, async () => {
      const dir = await nativeReplay();
      const camera = nativeCamera(replaySourceOf(dir, 25), maxBytes, undefined, maxFrames);
      const answers: Array<{ seq: number; newest: boolean; old: boolean }> = [];
      camera.on("frame", (frame) => {
        if (frame.seq < 8) return;
        void Promise.all([camera.nativeFrame(frame.seq), camera.nativeFrame(frame.seq - 8)]).then(
          ([newest, old]) => answers.push({ seq: frame.seq, newest: newest !== null, old: old !== null }),
        );
      });
      camera.start();
      try {
        await until(() => answers.length >= 6, 10_000, "6 answers");
      } finally {
        camera.stop();
      }
      assert.ok(
        answers.every((a) => !a.old),
        `frames 8 older are gone: ${JSON.stringify(answers)}`,
      );
      assert.ok(
        answers.filter((a) => a.newest).length >= 5,
        `the newest are held: ${JSON.stringify(answers)}`,
      );
      assert.equal(await camera.nativeFrame(answers[0]!.seq), null, "a stopped camera holds nothing");
    });

  test("an ROI larger than the long-side cap is held scaled down with its aspect kept, and cropped", async () => {
    const dir = await nativeReplay();
    // the ROI's left 60 columns are file k's left colour, the rest its right colour
    const roi = { x: 40, y: 10, width: 160, height: 120 };
    const camera = new Camera(
      cameraConfig({ id: "cam", stall_timeout_s: 0, source: replaySourceOf(dir, 50), roi }),
      {
        width: 40,
        height: 30,
        logger,
        originalMaxLongSide: 112,
        native: { maxBytes: 48 * 2 ** 20, maxFrames: 64, maxLongSide: 112 },
      },
    );
    const held: Array<{ width: number; height: number; rgb: Uint8Array } | null> = [];
    camera.on("frame", (frame) => void camera.nativeFrame(frame.seq).then((n) => held.push(n)));
    camera.start();
    try {
      await until(() => held.length >= 4, 10_000, "4 native frames");
    } finally {
      camera.stop();
    }
    // each held frame is one file's ROI scaled down: compared whole, not at a few pixels (a scrambled frame of
    // two flat colours can still show the right colours here and there)
    const expected = await Promise.all(
      [0, 1, 2, 3, 4, 5].map((k) =>
        sharp(path.join(dir, `00${k}.png`))
          .extract({ left: roi.x, top: roi.y, width: roi.width, height: roi.height })
          .resize(112, 84, { fit: "fill" })
          .raw()
          .toBuffer(),
      ),
    );
    for (const native of held) {
      assert.ok(native);
      assert.deepEqual([native.width, native.height], [112, 84], "160×120 capped at a long side of 112");
      const differences = expected.map((e) => {
        let sum = 0;
        for (let i = 0; i < e.length; i++) sum += Math.abs(e[i]! - native.rgb[i]!);
        return sum / e.length;
      });
      assert.ok(Math.min(...differences) < 3, `one file's ROI, scaled: mean differences ${differences}`);
    }
  });

  test("a capture process killed takes its native frames with it; the next one's are fetched by their own numbers", async () => {
    const dir = await nativeReplay();
    const camera = new Camera(
      cameraConfig({ id: "cam", stall_timeout_s: 0, source: replaySourceOf(dir, 50) }),
      {
        width: 40,
        height: 30,
        logger,
        originalMaxLongSide: 2048,
        native: { maxBytes: 48 * 2 ** 20, maxFrames: 64, maxLongSide: 2048 },
        resetAfterMs: 100,
      },
    );
    const rec = new Recorder(camera);
    camera.start();
    try {
      await until(() => rec.frames.length >= 5, 10_000, "5 frames");
      const before = rec.frames.at(-1)!.seq;
      assert.ok(await camera.nativeFrame(before), "held while its process lives");
      const [pid] = captureProcesses();
      assert.ok(pid, "a capture process");
      process.kill(pid, "SIGKILL");
      await until(() => rec.frames.some((f) => f.seq > before + 5), 10_000, "frames from a new process");
      assert.equal(await camera.nativeFrame(before), null, "gone with the process that held it");
      const after = rec.frames.at(-1)!;
      const native = await camera.nativeFrame(after.seq);
      assert.ok(native, "the new process's frame, by its own number");
      assert.deepEqual([native.width, native.height], [W, H]);
    } finally {
      camera.stop();
    }
    assert.ok(rec.warnings.some((w) => w.kind === "process_exited"));
  });

  test("a frame already at the capture size is its own native frame: nothing is held beside it", async () => {
    const dir = await nativeReplay();
    const camera = nativeCamera(replaySourceOf(dir, 50), 48 * 2 ** 20, { width: W, height: H });
    const rec = await recordFrames(camera, 5, 10_000);
    for (const frame of rec.frames) assert.equal(frame.native, undefined);
    assert.equal(await camera.nativeFrame(rec.frames[0]!.seq), null);
  });

  test("a frame the collector asks for comes whole, as without native frames", async () => {
    const dir = await nativeReplay();
    const camera = nativeCamera(replaySourceOf(dir, 50), 48 * 2 ** 20);
    const frames: Frame[] = [];
    camera.on("frame", (f) => {
      frames.push(f);
      if (frames.length === 3) assert.equal(camera.requestOriginal(), true);
    });
    camera.start();
    try {
      await until(() => frames.length >= 8, 10_000, "8 frames");
    } finally {
      camera.stop();
    }
    assertConsecutiveSeq(frames);
    const kept = frames.filter((f) => f.original !== undefined);
    assert.equal(kept.length, 1);
    const o = kept[0]!.original!;
    assert.ok("rgb" in o, "the native frame as it is held: RGB");
    assert.deepEqual([o.width, o.height, o.rgb.byteLength], [W, H, W * H * 3]);
    assert.deepEqual(Buffer.from(kept[0]!.rgb), Buffer.from(await resizeRgb(o.rgb, W, H, 40, 30)));
  });
});

/** A replay of `dir`'s PNGs at `fps`, paced like a live camera. */
function replaySourceOf(dir: string, fps: number): string {
  return `multifilesrc location=${dir}/%03d.png index=0 loop=true caps=image/png,framerate=${fps}/1 ! pngdec ! identity sync=true`;
}
