import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import { bundleGeometry, loadBundle, scoringOptions } from "../../src/bundle/bundle.js";
import { resizeGeometry } from "../../src/stpm/geometry.js";
import { scoreImages } from "../../src/stpm/image-scoring.js";
import { Random } from "../../src/stpm/random.js";
import { Scorer } from "../../src/stpm/scorer.js";
import { writeTinyBundle } from "../helpers/tiny-bundle.js";
import { tempDir } from "../helpers/tiny-data.js";

test("a bundle without a margin scores exactly as before the margin existed; a bad recorded margin is refused", async () => {
  const dir = path.join(await tempDir(), "model");
  await writeTinyBundle(dir); // no geometry at all, as the oldest bundles
  const file = path.join(dir, "manifest.json");
  const oldest = JSON.parse(await readFile(file, "utf8"));
  const rng = new Random(4);
  const images = [0, 1, 2].map(() => new Uint8Array(32 * 32 * 3).map(() => Math.floor(rng.next() * 256)));
  // geometry without `margin` (bundles written before it) and none at all must both mean margin 0
  for (const manifest of [oldest, { ...oldest, geometry: resizeGeometry({ width: 32, height: 32 }) }]) {
    await writeFile(file, JSON.stringify(manifest));
    const bundle = await loadBundle(dir);
    assert.equal(scoringOptions(bundle.manifest).margin, 0);
    const scorer = await Scorer.create(bundle.teacher, bundle.student, scoringOptions(bundle.manifest));
    const now = await scoreImages((p, n) => scorer.score(p, n), images, bundleGeometry(bundle.manifest), 3);
    await scorer.release();
    // before: the frames packed as they are into a graph built from the manifest's input alone
    const { height, width, mean, std } = bundle.manifest.input;
    const before = await Scorer.create(bundle.teacher, bundle.student, { height, width, mean, std });
    const packed = new Uint8Array(3 * 32 * 32 * 3);
    images.forEach((img, i) => {
      packed.set(img, i * img.length);
    });
    const was = await before.score(packed, 3);
    await before.release();
    assert.deepEqual(now.scores, [...was.scores]);
    images.forEach((_, i) => {
      assert.deepEqual(now.maps[i], was.maps.subarray(i * 32 * 32, (i + 1) * 32 * 32));
    });
  }
  const withMargin = { ...oldest, geometry: { ...resizeGeometry({ width: 32, height: 32 }), margin: 32 } };
  await writeFile(file, JSON.stringify(withMargin));
  await assert.rejects(loadBundle(dir), {
    code: "ERR_BUNDLE_INVALID",
    message: /geometry\.margin 32 is larger than the room/,
  });
});
