import { mkdir, mkdtemp } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import sharp from "sharp";
import { type SyntheticPart, synthesizePart } from "../../src/demo/synthetic.js";

export async function tempDir(prefix = "stpmd-test-"): Promise<string> {
  return mkdtemp(path.join(os.tmpdir(), prefix));
}

export async function writePart(file: string, part: SyntheticPart): Promise<void> {
  await sharp(part.rgb, { raw: { width: part.width, height: part.height, channels: 3 } })
    .png()
    .toFile(file);
}

/** A folder of `count` normal synthetic parts of `size`×`size` pixels. */
export async function normalFrames(count: number, size = 64, dir?: string): Promise<string> {
  const out = dir ?? (await tempDir());
  await mkdir(out, { recursive: true });
  for (let i = 0; i < count; i++) {
    await writePart(
      path.join(out, `part_${String(i).padStart(3, "0")}.png`),
      synthesizePart(size, 100 + i, "none"),
    );
  }
  return out;
}

/**
 * A replay camera's folder: `normals` normal synthetic parts of a tiny bundle's 64², then two noise frames it flags,
 * numbered `000.png`… as a replay reads them.
 */
export async function replayFrames(dir: string, normals: number): Promise<string> {
  const size = 64;
  await mkdir(dir, { recursive: true });
  const name = (i: number) => path.join(dir, `${String(i).padStart(3, "0")}.png`);
  for (let i = 0; i < normals; i++) await writePart(name(i), synthesizePart(size, 500 + i, "none"));
  for (let i = normals; i < normals + 2; i++) {
    const rgb = new Uint8Array(size * size * 3).map((_, k) => (k * 2654435761 + i * 97) % 251);
    await sharp(rgb, { raw: { width: size, height: size, channels: 3 } })
      .png()
      .toFile(name(i));
  }
  return dir;
}

export const SHARED = process.env.STPMD_SHARED ?? path.resolve("../shared");
export const SHARED_TEACHER =
  process.env.STPMD_TEACHER ?? path.join(SHARED, "weights/mobilenet_v2_coral_pyramid.onnx");
export const SHARED_BOTTLE = path.join(SHARED, "data/mvtec_ad/bottle");
