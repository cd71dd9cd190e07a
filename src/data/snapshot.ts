import sharp from "sharp";
import { StpmdError } from "../core/errors.js";
import type { Frame } from "../core/frame.js";
import type { Region } from "../core/result.js";

export interface SnapshotOptions {
  /** JPEG quality, 1–100. */
  quality: number;
  /** Downscale so that the longer side is at most this many pixels (never upscales). */
  maxSide?: number;
  /** Regions to outline; their bboxes are in frame pixels. */
  regions?: readonly Region[];
}

/**
 * Heatmap ramp, as a function of `ratio = map / threshold`:
 * - `ratio <= 0.5`: pixel left exactly as captured (normal texture stays readable);
 * - from 0.5 to 1.5 the colour runs azure (0,128,255) → yellow (255,255,0) at the threshold → red (255,0,0),
 *   blended over the frame with alpha `0.7 · sqrt(t)`, `t = (ratio − 0.5) / 1.0`, so alpha rises with the score
 *   (0.49 at the threshold, 0.7 from 1.5× the threshold up).
 */
const RAMP_START_RATIO = 0.5;
const RAMP_SPAN_RATIO = 1.0;
const MAX_ALPHA = 0.7;
const RAMP_STOPS: readonly [number, number, number][] = [
  [0, 128, 255],
  [255, 255, 0],
  [255, 0, 0],
];
const LUT_SIZE = 256;
/** Outline colour: magenta is absent from both the ramp and most industrial scenes. */
const BOX_COLOUR: readonly [number, number, number] = [255, 0, 255];
/** Outline width in output pixels. */
const BOX_OUTPUT_THICKNESS = 2;

interface RampLut {
  rgb: Float32Array;
  alpha: Float32Array;
}

const RAMP_LUT: RampLut = buildRampLut();

function buildRampLut(): RampLut {
  const rgb = new Float32Array(LUT_SIZE * 3);
  const alpha = new Float32Array(LUT_SIZE);
  const segments = RAMP_STOPS.length - 1;
  for (let k = 0; k < LUT_SIZE; k++) {
    const t = k / (LUT_SIZE - 1);
    const position = t * segments;
    const segment = Math.min(segments - 1, Math.floor(position));
    const within = position - segment;
    const from = RAMP_STOPS[segment]!;
    const to = RAMP_STOPS[segment + 1]!;
    for (let c = 0; c < 3; c++) rgb[k * 3 + c] = from[c]! + (to[c]! - from[c]!) * within;
    alpha[k] = MAX_ALPHA * Math.sqrt(t);
  }
  return { rgb, alpha };
}

/**
 * A JPEG of `frame` with the anomaly map drawn over it as a heatmap (see the ramp above) and each region's bbox
 * outlined. The colour mapping is one pass into one RGB buffer, then a single sharp pipeline encodes it (sharp
 * runs on libuv's pool, so the event loop is not blocked by the JPEG encoder).
 */
export async function renderSnapshot(
  frame: Frame,
  map: Float32Array,
  threshold: number,
  opts: SnapshotOptions,
): Promise<Buffer> {
  const { width, height } = frame;
  checkInputs(frame, map, threshold, opts);
  const rgb = Buffer.allocUnsafe(width * height * 3);
  blendHeatmap(frame.rgb, map, 1 / threshold, rgb);

  const longSide = Math.max(width, height);
  const scale = opts.maxSide !== undefined && longSide > opts.maxSide ? opts.maxSide / longSide : 1;
  const thickness = Math.max(1, Math.round(BOX_OUTPUT_THICKNESS / scale));
  for (const region of opts.regions ?? []) drawBoxOutline(rgb, width, height, region.bbox, thickness);

  let image = sharp(rgb, { raw: { width, height, channels: 3 } });
  if (scale < 1) {
    image = image.resize({ width: opts.maxSide, height: opts.maxSide, fit: "inside" });
  }
  // 4:4:4 keeps the thin outlines and small heat spots from bleeding into their neighbours.
  return image.jpeg({ quality: opts.quality, chromaSubsampling: "4:4:4" }).toBuffer();
}

function checkInputs(frame: Frame, map: Float32Array, threshold: number, opts: SnapshotOptions): void {
  const { width, height } = frame;
  const where = `camera ${frame.cameraId} frame ${frame.seq}`;
  if (!Number.isInteger(width) || !Number.isInteger(height) || width <= 0 || height <= 0) {
    throw new StpmdError("ERR_IMAGE_DECODE", `${where}: invalid frame size ${width}×${height}`);
  }
  if (frame.rgb.length !== width * height * 3) {
    throw new StpmdError(
      "ERR_IMAGE_DECODE",
      `${where}: frame has ${frame.rgb.length} RGB bytes, expected ${width}×${height}×3 = ${width * height * 3}`,
    );
  }
  if (map.length !== width * height) {
    throw new StpmdError(
      "ERR_MASK_SIZE",
      `${where}: anomaly map has ${map.length} values, expected ${width}×${height} = ${width * height}`,
    );
  }
  if (!(threshold > 0) || !Number.isFinite(threshold)) {
    throw new StpmdError("ERR_OPTION_INVALID", `${where}: snapshot threshold must be > 0, got ${threshold}`);
  }
  if (!Number.isInteger(opts.quality) || opts.quality < 1 || opts.quality > 100) {
    throw new StpmdError(
      "ERR_OPTION_INVALID",
      `snapshot quality must be an integer 1–100, got ${opts.quality}`,
    );
  }
  if (opts.maxSide !== undefined && (!Number.isInteger(opts.maxSide) || opts.maxSide < 1)) {
    throw new StpmdError(
      "ERR_OPTION_INVALID",
      `snapshot maxSide must be a positive integer, got ${opts.maxSide}`,
    );
  }
}

function blendHeatmap(src: Uint8Array, map: Float32Array, inverseThreshold: number, out: Buffer): void {
  const { rgb: rampRgb, alpha: rampAlpha } = RAMP_LUT;
  const lutScale = (LUT_SIZE - 1) / RAMP_SPAN_RATIO;
  out.set(src); // most pixels stay exactly as captured; only the hot ones are blended below
  for (let i = 0, o = 0; i < map.length; i++, o += 3) {
    const excess = map[i]! * inverseThreshold - RAMP_START_RATIO;
    // `!(excess > 0)` also leaves NaN pixels untouched.
    if (!(excess > 0)) continue;
    const k = Math.min(LUT_SIZE - 1, Math.round(excess * lutScale));
    const alpha = rampAlpha[k]!;
    const keep = 1 - alpha;
    // Uint8 stores round-toward-zero; +0.5 makes it round-to-nearest (values stay within 0..255.5).
    out[o] = src[o]! * keep + rampRgb[k * 3]! * alpha + 0.5;
    out[o + 1] = src[o + 1]! * keep + rampRgb[k * 3 + 1]! * alpha + 0.5;
    out[o + 2] = src[o + 2]! * keep + rampRgb[k * 3 + 2]! * alpha + 0.5;
  }
}

/** Outlines `bbox` (inclusive pixel extent) with a ring `thickness` pixels wide just outside it, clipped. */
function drawBoxOutline(
  rgb: Buffer,
  width: number,
  height: number,
  bbox: Region["bbox"],
  thickness: number,
): void {
  const [x, y, w, h] = bbox;
  const left = Math.round(x) - thickness;
  const top = Math.round(y) - thickness;
  const right = Math.round(x + w - 1) + thickness;
  const bottom = Math.round(y + h - 1) + thickness;
  fillRect(rgb, width, height, left, top, right, top + thickness - 1);
  fillRect(rgb, width, height, left, bottom - thickness + 1, right, bottom);
  fillRect(rgb, width, height, left, top, left + thickness - 1, bottom);
  fillRect(rgb, width, height, right - thickness + 1, top, right, bottom);
}

function fillRect(
  rgb: Buffer,
  width: number,
  height: number,
  x0: number,
  y0: number,
  x1: number,
  y1: number,
): void {
  const xStart = Math.max(0, x0);
  const xEnd = Math.min(width - 1, x1);
  const yStart = Math.max(0, y0);
  const yEnd = Math.min(height - 1, y1);
  for (let y = yStart; y <= yEnd; y++) {
    for (let x = xStart; x <= xEnd; x++) {
      const o = (y * width + x) * 3;
      rgb[o] = BOX_COLOUR[0];
      rgb[o + 1] = BOX_COLOUR[1];
      rgb[o + 2] = BOX_COLOUR[2];
    }
  }
}
