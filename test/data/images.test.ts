import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import sharp from "sharp";
import { listImages, loadMask, loadRgb, rgbToChw } from "../../src/data/images.js";
import { tempDir } from "../helpers/tiny-data.js";

test("grayscale, RGBA, palette and 16-bit images all decode to 8-bit RGB", async () => {
  const dir = await tempDir();
  const gray = path.join(dir, "gray.png");
  await sharp(new Uint8Array(16).fill(100), { raw: { width: 4, height: 4, channels: 1 } })
    .png()
    .toFile(gray);
  const rgba = path.join(dir, "rgba.png");
  const px = new Uint8Array(4 * 4 * 4);
  for (let i = 0; i < 16; i++) px.set([10, 20, 30, 128], i * 4);
  await sharp(px, { raw: { width: 4, height: 4, channels: 4 } })
    .png()
    .toFile(rgba);
  const palette = path.join(dir, "palette.png");
  const solid = new Uint8Array(4 * 4 * 3);
  for (let i = 0; i < 16; i++) solid.set([200, 40, 0], i * 3);
  await sharp(solid, { raw: { width: 4, height: 4, channels: 3 } })
    .png({ palette: true, colours: 4 })
    .toFile(palette);
  const deep = path.join(dir, "deep.png");
  const sixteen = new Uint16Array(4 * 4 * 3).fill(65535);
  await sharp(Buffer.from(sixteen.buffer), {
    raw: { width: 4, height: 4, channels: 3, premultiplied: false },
  })
    .toColourspace("rgb16")
    .png()
    .toFile(deep);
  const expect: [string, number[]][] = [
    [gray, [100, 100, 100]],
    [rgba, [10, 20, 30]],
    [palette, [200, 40, 0]],
    [deep, [255, 255, 255]],
  ];
  for (const [file, rgb] of expect) {
    const img = await loadRgb(file, 2, 2);
    assert.equal(img.rgb.length, 2 * 2 * 3, file);
    for (let c = 0; c < 3; c++)
      assert.ok(
        Math.abs(img.rgb[c]! - rgb[c]!) <= 2,
        `${path.basename(file)} channel ${c}: ${img.rgb[c]} vs ${rgb[c]}`,
      );
    assert.deepEqual(img.originalSize, [4, 4]);
  }
});

test("corrupt files and empty folders are named in the error", async () => {
  const dir = await tempDir();
  const bad = path.join(dir, "broken.png");
  await writeFile(bad, Buffer.from([0x89, 0x50, 0x4e, 0x47, 1, 2, 3]));
  await assert.rejects(loadRgb(bad, 8, 8), {
    code: "ERR_IMAGE_DECODE",
    message: /broken\.png: not a readable image/,
  });
  const empty = await tempDir();
  await writeFile(path.join(empty, "readme.txt"), "x");
  await assert.rejects(listImages(empty), { code: "ERR_INPUT_EMPTY" });
});

test("masks are binarised and resized nearest-neighbour", async () => {
  const dir = await tempDir();
  const file = path.join(dir, "m.png");
  const m = new Uint8Array(4 * 4);
  m[0] = 255; // top-left pixel only
  await sharp(m, { raw: { width: 4, height: 4, channels: 1 } })
    .png()
    .toFile(file);
  const mask = await loadMask(file, [4, 4], 8, 8);
  assert.deepEqual([...mask.slice(0, 3)], [1, 1, 0]);
  assert.equal(
    mask.reduce((a, b) => a + b, 0),
    4,
  );
});

test("rgbToChw normalises per channel", () => {
  const out = new Float32Array(3);
  rgbToChw(new Uint8Array([255, 0, 51]), 1, 1, [0.5, 0.5, 0.5], [0.5, 0.5, 0.25], out);
  assert.deepEqual(
    [...out].map((v) => Number(v.toFixed(5))),
    [1, -1, -1.2],
  );
});
