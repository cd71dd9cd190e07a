import { readdir, stat } from "node:fs/promises";
import path from "node:path";
import sharp from "sharp";
import { errorMessage, StpmdError } from "../core/errors.js";

export const IMAGE_EXTENSIONS = new Set([".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp"]);

/** A decoded image at model size: packed 8-bit RGB, row-major (H × W × 3). */
export interface RgbImage {
  file: string;
  width: number;
  height: number;
  rgb: Uint8Array;
  /** Size of the image on disk before resizing (masks must match it). */
  originalSize: [width: number, height: number];
}

/** Image files directly inside `dir`, sorted by name. Missing or empty folders are user errors. */
export async function listImages(dir: string, what = "image folder"): Promise<string[]> {
  let entries: string[];
  try {
    const st = await stat(dir);
    if (!st.isDirectory()) throw new StpmdError("ERR_INPUT_MISSING", `${dir}: ${what} is not a directory`);
    entries = await readdir(dir);
  } catch (err) {
    if (err instanceof StpmdError) throw err;
    throw new StpmdError("ERR_INPUT_MISSING", `${dir}: ${what} cannot be read (${errorMessage(err)})`);
  }
  const files = entries
    .filter((f) => IMAGE_EXTENSIONS.has(path.extname(f).toLowerCase()))
    .sort()
    .map((f) => path.join(dir, f));
  if (files.length === 0) {
    throw new StpmdError(
      "ERR_INPUT_EMPTY",
      `${dir}: ${what} holds no images (looked for ${[...IMAGE_EXTENSIONS].join(", ")})`,
    );
  }
  return files;
}

/**
 * The one resize to model size, for training, evaluation and inference alike: bilinear and antialiased (as
 * torchvision's Resize on PIL images does), aspect ratio not kept. A different filter at inference time than in
 * training shows up as false alarms (benchmarks/videoscale.ts).
 */
const MODEL_RESIZE = { fit: "fill", kernel: "linear" } as const;

/**
 * Resizes packed 8-bit RGB (width × height × 3), or RGBA with `channels` 4 (its alpha dropped), to packed RGB at
 * the model size with {@link MODEL_RESIZE}.
 */
export async function resizeRgb(
  rgb: Uint8Array,
  width: number,
  height: number,
  toWidth: number,
  toHeight: number,
  channels: 3 | 4 = 3,
): Promise<Uint8Array> {
  const buf = await sharp(rgb, { raw: { width, height, channels } })
    .removeAlpha()
    .resize(toWidth, toHeight, MODEL_RESIZE)
    .raw()
    .toBuffer();
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}

/** A rectangle in an image's pixels (an ROI). */
export interface Region {
  x: number;
  y: number;
  width: number;
  height: number;
}

function checkRegion(file: string, roi: Region | undefined, width: number, height: number): void {
  if (roi && (roi.x + roi.width > width || roi.y + roi.height > height)) {
    throw new StpmdError(
      "ERR_OPTION_INVALID",
      `${file}: ROI ${roi.x},${roi.y},${roi.width},${roi.height} lies outside the ${width}×${height} image`,
    );
  }
}

function cropped(img: ReturnType<typeof sharp>, roi: Region | undefined): ReturnType<typeof sharp> {
  return roi ? img.extract({ left: roi.x, top: roi.y, width: roi.width, height: roi.height }) : img;
}

/** Width and height of an image file, from its header. */
export async function readImageSize(file: string): Promise<{ width: number; height: number }> {
  try {
    const meta = await sharp(file).metadata();
    if (!meta.width || !meta.height) throw new Error("no size in its header");
    return { width: meta.width, height: meta.height };
  } catch (err) {
    throw new StpmdError("ERR_IMAGE_DECODE", `${file}: not a readable image (${errorMessage(err)})`);
  }
}

/**
 * Decodes any image sharp reads — grayscale, RGBA, palette, 16-bit — into 8-bit sRGB and resizes it (its `roi`, when given) to
 * width × height with {@link MODEL_RESIZE}.
 */
export async function loadRgb(file: string, width: number, height: number, roi?: Region): Promise<RgbImage> {
  let meta: Awaited<ReturnType<ReturnType<typeof sharp>["metadata"]>>;
  let img: ReturnType<typeof sharp>;
  try {
    img = sharp(file, { failOn: "error" });
    meta = await img.metadata();
  } catch (err) {
    throw new StpmdError("ERR_IMAGE_DECODE", `${file}: not a readable image (${errorMessage(err)})`);
  }
  checkRegion(file, roi, meta.width ?? 0, meta.height ?? 0);
  try {
    const { data, info } = await cropped(img.toColourspace("srgb").removeAlpha(), roi)
      .resize(width, height, MODEL_RESIZE)
      .raw({ depth: "uchar" })
      .toBuffer({ resolveWithObject: true });
    if (info.channels !== 3) throw new Error(`decoded to ${info.channels} channels`);
    return {
      file,
      width,
      height,
      rgb: new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
      originalSize: [meta.width ?? 0, meta.height ?? 0],
    };
  } catch (err) {
    throw new StpmdError("ERR_IMAGE_DECODE", `${file}: not a readable image (${errorMessage(err)})`);
  }
}

/**
 * Loads a ground-truth mask (non-zero = defect), checks it matches its image's size, crops it to `roi` when given
 * and resizes it nearest-neighbour.
 */
export async function loadMask(
  file: string,
  imageSize: [number, number],
  width: number,
  height: number,
  roi?: Region,
): Promise<Uint8Array> {
  let data: Buffer;
  let meta: Awaited<ReturnType<ReturnType<typeof sharp>["metadata"]>>;
  try {
    const img = sharp(file, { failOn: "error" });
    meta = await img.metadata();
    checkRegion(file, roi, meta.width ?? 0, meta.height ?? 0);
    data = await cropped(img.toColourspace("b-w").extractChannel(0), roi)
      .resize(width, height, { fit: "fill", kernel: "nearest" })
      .raw({ depth: "uchar" })
      .toBuffer();
  } catch (err) {
    if (err instanceof StpmdError) throw err;
    throw new StpmdError("ERR_IMAGE_DECODE", `${file}: not a readable mask image (${errorMessage(err)})`);
  }
  if (meta.width !== imageSize[0] || meta.height !== imageSize[1]) {
    throw new StpmdError(
      "ERR_MASK_SIZE",
      `${file}: mask is ${meta.width}×${meta.height} but its image is ${imageSize[0]}×${imageSize[1]}`,
    );
  }
  const mask = new Uint8Array(width * height);
  for (let i = 0; i < mask.length; i++) mask[i] = data[i]! > 127 ? 1 : 0;
  return mask;
}

/** A black-and-white image file as a 0/1 mask at its own size: 1 where a pixel is brighter than half. */
export async function loadBinaryImage(
  file: string,
): Promise<{ width: number; height: number; mask: Uint8Array }> {
  try {
    const { data, info } = await sharp(file, { failOn: "error" })
      .toColourspace("b-w")
      .extractChannel(0)
      .raw({ depth: "uchar" })
      .toBuffer({ resolveWithObject: true });
    const mask = new Uint8Array(info.width * info.height);
    for (let i = 0; i < mask.length; i++) mask[i] = data[i]! > 127 ? 1 : 0;
    return { width: info.width, height: info.height, mask };
  } catch (err) {
    throw new StpmdError("ERR_IMAGE_DECODE", `${file}: not a readable mask image (${errorMessage(err)})`);
  }
}

/** Packs HWC uint8 RGB into normalised NCHW float32 at `offset` images into `out`. */
export function rgbToChw(
  rgb: Uint8Array,
  width: number,
  height: number,
  mean: readonly number[],
  std: readonly number[],
  out: Float32Array,
  offset = 0,
): void {
  const hw = width * height;
  const base = offset * 3 * hw;
  for (let c = 0; c < 3; c++) {
    const scale = 1 / (255 * std[c]!);
    const shift = mean[c]! / std[c]!;
    const dst = base + c * hw;
    for (let p = 0; p < hw; p++) out[dst + p] = rgb[p * 3 + c]! * scale - shift;
  }
}
