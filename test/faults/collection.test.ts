// Fault injection for frame collection: a real Collector writing to a real, tiny filesystem that fills up. Each
// case counts the frames offered against those saved, failed and left on disk: collection may fail, but it never
// leaves half a frame behind, never floods the log, and picks up again once there is room.
import assert from "node:assert/strict";
import { mkdir, readdir, rm, statfs, writeFile } from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import sharp from "sharp";
import type { InspectionResult } from "../../src/core/result.js";
import { Collector } from "../../src/publish/collection/collector.js";
import { Random } from "../../src/stpm/random.js";
import { collectionConfig } from "../helpers/config.js";
import { capturingLogger } from "../helpers/logs.js";
import { withTmpfs } from "../helpers/tmpfs.js";
import { waitFor } from "../helpers/wait.js";

const SIZE = 64;

/** A normal frame of noise: its PNG is about as large as its pixels (12 KiB), so 128 KiB fill in a few frames. */
function noiseResult(seq: number): InspectionResult {
  const random = new Random(seq);
  const rgb = Uint8Array.from({ length: SIZE * SIZE * 3 }, () => Math.floor(random.next() * 256));
  return {
    frame: {
      cameraId: "cam0",
      seq,
      captureTs: Date.UTC(2026, 1, 3, 4, 5, seq),
      width: SIZE,
      height: SIZE,
      rgb,
    },
    score: 0.1,
    threshold: 1,
    verdict: "ok",
    regions: [],
    map: new Float32Array(SIZE * SIZE),
    modelVersion: "fault-1",
    inferredTs: Date.now(),
  };
}

test("a full filesystem (128 KiB tmpfs): every frame is saved or counted failed, no temp file is left, one log line per problem a minute, and saving resumes once there is room or after the folder is deleted", async (t) => {
  await withTmpfs(t, "128k", async (mountPoint) => {
    const dir = path.join(mountPoint, "frames");
    // what a process killed in the middle of a save leaves: a hidden temp file, taking space
    await mkdir(path.join(dir, "cam0"), { recursive: true });
    const stale = path.join(dir, "cam0", ".cam0_20260203T040500000Z_1.png.tmp");
    await writeFile(stale, Buffer.alloc(20_000));
    const { logger, lines } = capturingLogger("info");
    const collector = await Collector.open(
      collectionConfig({
        enabled: true,
        dir,
        score_quantile: 1,
        min_interval_s: 0,
        max_frames_per_camera: 10_000,
        max_bytes: 1 << 30,
      }),
      logger,
    );
    assert.deepEqual(await readdir(path.join(dir, "cam0")), [], "the stale temp file was removed at open");
    assert.ok(lines.some((l) => l.msg.includes(stale) && l.msg.includes("interrupted save")));
    // a filler leaves room for a few frames only; deleting it later is the operator making room
    const free = (await statfs(mountPoint)).bavail * (await statfs(mountPoint)).bsize;
    const filler = path.join(mountPoint, "filler");
    await writeFile(filler, Buffer.alloc(Math.max(0, free - 40 * 1024)));

    const offered = 20;
    const done = () => collector.stats().saved + collector.stats().failed;
    for (let seq = 0; seq < offered; seq++) {
      collector.consider(noiseResult(seq), [1]);
      await waitFor(`frame ${seq} saved or failed`, () => done() === seq + 1, 10_000);
    }
    const full = collector.stats();
    t.diagnostic(`128 KiB tmpfs, 40 KiB free, ${offered} frames of 12 KiB: ${JSON.stringify(full)}`);
    assert.ok(full.saved <= 3, "40 KiB hold at most 3 frames of 12 KiB");
    assert.ok(full.saved > 0, "what fitted was saved");
    assert.ok(full.failed > 0, "the filesystem filled up");
    assert.equal(full.saved + full.failed + full.dropped, offered);
    const files = await readdir(path.join(dir, "cam0"));
    assert.deepEqual(
      files.filter((f) => f.startsWith(".")),
      [],
      "no temp file of a failed save is left",
    );
    assert.equal(files.length, full.saved);
    for (const f of files) {
      const meta = await sharp(path.join(dir, "cam0", f)).metadata();
      assert.equal(meta.width, SIZE, `${f} is a whole PNG`);
    }
    // the same problem again and again within a minute: one line, naming the folder and the cause, on one line
    const warnings = lines.filter((l) => l.msg.startsWith("could not save a collected frame"));
    assert.equal(warnings.length, 1, warnings.map((w) => w.msg).join("\n"));
    assert.match(warnings[0]!.msg, /of camera cam0 in .*frames: ENOSPC: no space left on device/);
    assert.ok(
      warnings[0]!.msg.endsWith('1 failed saves in all (stpmd_collection_frames_total{outcome="failed"})'),
      warnings[0]!.msg,
    );

    // the operator makes room: the next frame is saved, and the log says collection is back
    await rm(filler);
    collector.consider(noiseResult(offered), [1]);
    await waitFor("the frame after the room was made", () => done() === offered + 1, 10_000);
    assert.equal(collector.stats().saved, full.saved + 1);
    assert.ok(
      lines.some((l) => l.msg === `collected frames are saved again, after ${full.failed} failed saves`),
      lines.map((l) => l.msg).join("\n"),
    );

    // the operator clears the station's folder while the daemon runs: the next frame recreates it, no failure
    await rm(path.join(dir, "cam0"), { recursive: true });
    collector.consider(noiseResult(offered + 1), [1]);
    await waitFor("the frame after the folder was deleted", () => done() === offered + 2, 10_000);
    assert.equal(collector.stats().failed, full.failed);
    assert.equal((await readdir(path.join(dir, "cam0"))).length, 1);
    assert.equal(lines.filter((l) => l.level >= 40).length, 1, "no warning beyond the full disk's one");
  });
});
