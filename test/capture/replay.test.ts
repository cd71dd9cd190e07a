import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, test } from "node:test";
import sharp from "sharp";
import { ReplayCursor, replayFileProblem } from "../../src/capture/replay.js";

const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), "stpmd-replay-test-"));
after(() => fs.rmSync(tmpRoot, { recursive: true, force: true }));

async function png(file: string): Promise<void> {
  await sharp({ create: { width: 8, height: 8, channels: 3, background: { r: 1, g: 2, b: 3 } } })
    .png()
    .toFile(file);
}

describe("replayFileProblem", () => {
  test("names empty, non-PNG and truncated files and passes a whole PNG", async () => {
    const good = path.join(tmpRoot, "good.png");
    await png(good);
    assert.equal(replayFileProblem(good, true), null);
    const empty = path.join(tmpRoot, "empty.png");
    fs.writeFileSync(empty, "");
    assert.equal(replayFileProblem(empty, true), "is empty (0 bytes)");
    const text = path.join(tmpRoot, "text.png");
    fs.writeFileSync(text, "hello, world\n");
    assert.equal(replayFileProblem(text, true), "is not a PNG image");
    const cut = path.join(tmpRoot, "cut.png");
    fs.writeFileSync(cut, fs.readFileSync(good).subarray(0, 40));
    assert.equal(replayFileProblem(cut, true), "is truncated: 40 bytes and no PNG end (IEND) chunk");
    // With an ROI, an 8×8 PNG holds one that ends at 8,8 and not one a pixel wider or taller.
    assert.equal(replayFileProblem(good, true, { x: 0, y: 0, width: 8, height: 8 }), null);
    assert.equal(
      replayFileProblem(good, true, { x: 1, y: 0, width: 8, height: 8 }),
      "is 8×8 pixels, too small for the camera's ROI 1,0,8,8 (it needs at least 9×8)",
    );
    assert.equal(
      replayFileProblem(good, true, { x: 0, y: 2, width: 4, height: 7 }),
      "is 8×8 pixels, too small for the camera's ROI 0,2,4,7 (it needs at least 4×9)",
    );
    // Not PNGs: only emptiness is checked.
    assert.equal(replayFileProblem(text, false), null);
    assert.equal(replayFileProblem(empty, false), "is empty (0 bytes)");
  });
});

describe("ReplayCursor", () => {
  test("plays around bad files in segments, wraps when looping, and resumes after a failure", async () => {
    const dir = path.join(tmpRoot, "cursor");
    fs.mkdirSync(dir);
    for (let i = 0; i < 6; i++) await png(path.join(dir, `${i}.png`));
    fs.writeFileSync(path.join(dir, "2.png"), "");
    const settings = {
      element: "src",
      location: `${dir}/%d.png`,
      startIndex: 0,
      index: 0,
      stopIndex: -1,
      loop: true,
      png: true,
      sizeKept: true,
    };
    const cursor = new ReplayCursor(settings);
    cursor.rescan();
    const skipped: number[] = [];
    const next = () => cursor.nextSegment((bad) => skipped.push(bad.index));
    const first = next();
    assert.deepEqual(first, { from: 0, to: 1, loop: false });
    assert.equal(cursor.segmentEnded(first as never), true);
    const second = next();
    assert.deepEqual(second, { from: 3, to: 5, loop: false });
    assert.deepEqual(skipped, [2]);
    assert.equal(cursor.segmentEnded(second as never), true); // wraps: the replay loops
    assert.deepEqual(next(), { from: 0, to: 1, loop: false });
    // Failed after one frame of 0..1: resume at 1; with blame, skip it.
    assert.equal(cursor.runFailed({ from: 0, to: 1, loop: false }, 1, false), null);
    assert.deepEqual(next(), { from: 1, to: 1, loop: false });
    assert.equal(cursor.runFailed({ from: 3, to: 5, loop: false }, 1, true)?.index, 4);
    assert.deepEqual(next(), { from: 5, to: 5, loop: false });
    // A decoder error on 4 reported by the source while no frame had arrived (3's frame dropped with the pipeline):
    // 4 is blamed, not 3 by the count, and the replay resumes at 3, which it had not shown, then skips 4.
    assert.equal(cursor.runFailed({ from: 3, to: 5, loop: false }, 0, true, 4)?.index, 4);
    const resumed = next();
    assert.deepEqual(resumed, { from: 3, to: 3, loop: false });
    assert.equal(cursor.segmentEnded(resumed as never), true);
    skipped.length = 0;
    assert.deepEqual(next(), { from: 5, to: 5, loop: false });
    assert.deepEqual(skipped, [4]);
    // The frames all delivered up to the failing file: the replay resumes after it. An index outside the segment
    // is not believed.
    assert.equal(cursor.runFailed({ from: 3, to: 5, loop: false }, 2, true, 5)?.index, 5);
    assert.deepEqual(next(), { from: 0, to: 1, loop: false });
    assert.equal(cursor.runFailed({ from: 3, to: 5, loop: false }, 1, true, 9)?.index, 4);

    // All files good and the replay at its start: the user's own looping replay.
    fs.rmSync(path.join(dir, "2.png"));
    await png(path.join(dir, "2.png"));
    const clean = new ReplayCursor(settings);
    clean.rescan();
    assert.deepEqual(
      clean.nextSegment(() => assert.fail("nothing to skip")),
      { from: 0, to: 5, loop: true },
    );
  });
});
