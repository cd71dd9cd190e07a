// Small state files on a filesystem with no room left (a real tmpfs, filled): the outbox lock and the Sparkplug
// bdSeq file leave nothing partial behind and say which file failed, in one line.
import assert from "node:assert/strict";
import { mkdir, readdir, statfs, writeFile } from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import { DEFAULT_FILE_MODE } from "../../src/core/durable-fs.js";
import { isStpmdError } from "../../src/core/errors.js";
import { QueueLock } from "../../src/publish/durable-queue-lock.js";
import { BdSeqStore } from "../../src/publish/sparkplug/bdseq.js";
import { capturingLogger } from "../helpers/logs.js";
import { withTmpfs } from "../helpers/tmpfs.js";

test("a full filesystem: the outbox lock and the bdSeq file leave no empty or temp file, and name the file", async (t) => {
  await withTmpfs(t, "64k", async (mountPoint) => {
    const outbox = path.join(mountPoint, "outbox");
    const sparkplug = path.join(mountPoint, "sparkplug");
    await mkdir(outbox);
    await mkdir(sparkplug);
    const fs = await statfs(mountPoint);
    await writeFile(path.join(mountPoint, "filler"), Buffer.alloc(fs.bavail * fs.bsize));

    const { logger, lines } = capturingLogger("warn");
    await assert.rejects(QueueLock.acquire(outbox, DEFAULT_FILE_MODE, logger), (err) => {
      assert.ok(isStpmdError(err));
      assert.equal(
        err.message,
        `outbox lock file ${path.join(outbox, ".lock")} (mqtt.outbox.dir): could not write it: ENOSPC: no space left on device, write`,
      );
      return true;
    });
    assert.deepEqual(await readdir(outbox), [], "no empty lock for the next start to take over");

    const store = new BdSeqStore(path.join(sparkplug, "bdseq"), logger);
    assert.equal(await store.next(), 0, "the number is still handed out");
    assert.deepEqual(await readdir(sparkplug), [], "no temp file left");
    assert.equal(lines.length, 1);
    assert.match(lines[0]!.msg, /could not store bdSeq 0 in .*bdseq \(ENOSPC: no space left on device/);
  });
});
