/**
 * Frames and anomaly maps as PNG files, the one way the daemon keeps an image on disk (collected frames, the part
 * record's images). Encoded in memory, then written by Node through {@link writeFileAtomic}: sharp's `toFile` leaves
 * a partial file on a full disk and its error has no errno (measured: a 64 KiB tmpfs kept 64 KiB of a 192 KiB PNG,
 * "write error … No space left on device"); temp + fsync + rename never leaves half a PNG.
 */
import path from "node:path";
import sharp from "sharp";
import { writeFileAtomic } from "../core/durable-fs.js";
import type { FrameOriginal } from "../core/frame.js";

/** A frame's pixels: packed RGB (as inspected, or at native resolution) or RGBA, as an original is held. */
export type FramePixels = FrameOriginal;

/**
 * The PNG of a frame's pixels, at zlib `compressionLevel` (0–9; libpng's default, 6, unless given): the level trades
 * the CPU of encoding for bytes on disk (docs/records.md, Measured).
 */
export function framePng(pixels: FramePixels, compressionLevel = 6): Promise<Buffer> {
  const image =
    "rgba" in pixels
      ? sharp(pixels.rgba, { raw: { width: pixels.width, height: pixels.height, channels: 4 } }).removeAlpha()
      : sharp(pixels.rgb, { raw: { width: pixels.width, height: pixels.height, channels: 3 } });
  return image.png({ compressionLevel }).toBuffer();
}

/**
 * An anomaly map as an 8-bit grey PNG scaled so that 128 is `threshold` (255: twice it or more; 0: a score of 0),
 * so a viewer can tell at a glance which pixels are above the threshold and overlay it as a heatmap. A value that
 * is not finite is 0.
 */
export function mapPng(map: Float32Array, width: number, height: number, threshold: number): Promise<Buffer> {
  const grey = new Uint8Array(width * height);
  const scale = threshold > 0 && Number.isFinite(threshold) ? 128 / threshold : 0;
  for (let i = 0; i < grey.length; i++) {
    const v = map[i]! * scale;
    grey[i] = v > 255 ? 255 : v > 0 ? Math.round(v) : 0;
  }
  // without b-w, sharp writes a one-channel raw image as an RGB PNG (measured: 3 channels), three times the bytes
  return sharp(grey, { raw: { width, height, channels: 1 } })
    .toColourspace("b-w")
    .png()
    .toBuffer();
}

/** A PNG's name while it is being written: hidden from readers and from start-up scans. */
export function tempPngName(name: string): string {
  return `.${name}.tmp`;
}

export function isTempPngName(name: string): boolean {
  return name.startsWith(".") && name.endsWith(".png.tmp");
}

/** Writes `png` as `file` whole or not at all (see the module's comment), with the given permission bits. */
export async function writePng(file: string, png: Uint8Array, mode: number): Promise<void> {
  await writeFileAtomic(file, path.join(path.dirname(file), tempPngName(path.basename(file))), png, { mode });
}
