import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { isStpmdError } from "../../src/core/errors.js";
import {
  DurableQueue,
  decodeRecord,
  encodeEntry,
  encodeRecord,
  type OutboxMessage,
} from "../../src/publish/durable-queue.js";
import { outboxConfig } from "../helpers/config.js";
import { capturingLogger } from "../helpers/logs.js";
import { withTmpfs } from "../helpers/tmpfs.js";
import { waitFor } from "../helpers/wait.js";

const run = promisify(execFile);
const mount = (args: string[]) => run("mount", args);
const entryFiles = async (dir: string) => (await readdir(dir)).filter((name) => name.endsWith(".msg"));

const WARN = 40;
const ERROR = 50;

function message(n: number, extra: Partial<OutboxMessage> = {}): OutboxMessage {
  // Binary payload with zeros and high bytes, so any text-mode mangling would show.
  const payload = Buffer.from([0, 255, n & 0xff, 10, 13, 0, n >> 8]);
  return { topic: `stpmd/cam${n % 2}/defect`, payload, qos: 1, retain: false, eventId: `cam-${n}`, ...extra };
}

async function drain(outbox: DurableQueue): Promise<OutboxMessage[]> {
  const out: OutboxMessage[] = [];
  for (let head = await outbox.peek(); head !== undefined; head = await outbox.peek()) {
    out.push(...head.messages);
    await outbox.ack(head.seq);
  }
  return out;
}

describe("outbox", () => {
  let root: string;
  let caseNo = 0;
  const freshDir = (): string => path.join(root, `case-${caseNo++}`);

  before(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), "stpmd-outbox-test-"));
  });
  after(async () => {
    await rm(root, { recursive: true, force: true });
  });

  test("record encoding round-trips topic, qos, retain, ids and binary payload", () => {
    const original = message(7, { qos: 2, retain: true, kind: "snapshot" });
    const decoded = decodeRecord(encodeRecord(original));
    assert.deepEqual(decoded, original);
    const flipped = encodeRecord(original);
    flipped[flipped.length - 6] ^= 0x01; // inside the payload
    assert.equal(decodeRecord(flipped), "checksum mismatch");
    assert.match(String(decodeRecord(flipped.subarray(0, 5))), /truncated/);
  });

  test("keeps FIFO order and survives a reopen", async () => {
    const dir = freshDir();
    const { logger } = capturingLogger("debug");
    const first = await DurableQueue.open(
      outboxConfig({ dir, max_messages: 100, max_bytes: 1 << 20 }),
      logger,
    );
    // Issued concurrently: the outbox must still apply them in call order.
    const outcomes = await Promise.all([1, 2, 3, 4, 5].map((n) => first.enqueue(message(n))));
    assert.deepEqual(outcomes, ["queued", "queued", "queued", "queued", "queued"]);
    const head = await first.peek();
    assert.equal(head?.eventId, "cam-1");
    await first.ack(head!.seq);
    await first.close();

    const reopened = await DurableQueue.open(
      outboxConfig({ dir, max_messages: 100, max_bytes: 1 << 20 }),
      logger,
    );
    assert.equal(reopened.size, 4);
    const delivered = await drain(reopened);
    assert.deepEqual(
      delivered.map((m) => m.eventId),
      ["cam-2", "cam-3", "cam-4", "cam-5"],
    );
    assert.deepEqual(delivered[2]!.payload, message(4).payload);
    assert.equal(delivered[2]!.topic, "stpmd/cam0/defect");
    // New messages after a reopen sort after everything that was there.
    await reopened.enqueue(message(6));
    assert.equal((await reopened.peek())?.eventId, "cam-6");
    assert.equal(reopened.size, 1);
    await reopened.close();
  });

  test("commits a burst of concurrent messages in order, and a failed write loses only its own message", async () => {
    const dir = freshDir();
    const { logger, lines } = capturingLogger("debug");
    const outbox = await DurableQueue.open(
      outboxConfig({ dir, max_messages: 1000, max_bytes: 1 << 24 }),
      logger,
    );
    // seq 7's temp path is taken by a directory, so that one write fails inside a group of others
    await mkdir(path.join(dir, "0000000000000007.msg.tmp"));
    const outcomes = await Promise.all(Array.from({ length: 150 }, (_, n) => outbox.enqueue(message(n))));
    assert.deepEqual(
      outcomes.map((o, n) => (o === "queued" ? -1 : n)).filter((n) => n >= 0),
      [7],
    );
    assert.equal(outcomes[7], "failed");
    const failures = lines.filter((line) => line.level === ERROR);
    assert.deepEqual(
      failures.map((line) => line.event_id),
      ["cam-7"],
    );
    await outbox.close();
    const reopened = await DurableQueue.open(
      outboxConfig({ dir, max_messages: 1000, max_bytes: 1 << 24 }),
      logger,
    );
    assert.deepEqual(
      (await drain(reopened)).map((m) => m.eventId),
      Array.from({ length: 150 }, (_, n) => `cam-${n}`).filter((id) => id !== "cam-7"),
    );
    await reopened.close();
  });

  test("an event and its snapshot are one entry: taken together or refused together, counted once", async () => {
    const dir = freshDir();
    const { logger } = capturingLogger("debug");
    const outbox = await DurableQueue.open(
      outboxConfig({ dir, max_messages: 2, max_bytes: 1 << 20 }),
      logger,
    );
    const pair = (n: number): OutboxMessage[] => [message(n), message(n, { kind: "snapshot", retain: true })];
    assert.equal(await outbox.enqueue(pair(1)), "queued");
    assert.equal(outbox.size, 1);
    assert.equal(await outbox.enqueue(message(3)), "queued");
    // full: the pair is refused whole, and counts as one event
    assert.equal(await outbox.enqueue(pair(2)), "overflow");
    assert.equal(outbox.overflowed, 1);
    assert.equal(outbox.size, 2);
    assert.equal((await readdir(dir)).filter((name) => name.endsWith(".msg")).length, 2);
    assert.deepEqual(
      (await drain(outbox)).map((m) => [m.eventId, m.kind]),
      [
        ["cam-1", undefined],
        ["cam-1", "snapshot"],
        ["cam-3", undefined],
      ],
    );
    await outbox.close();
  });

  test("refuses new messages when maxMessages is reached, keeps the older ones and logs the event id", async () => {
    const dir = freshDir();
    const { logger, lines } = capturingLogger("debug");
    const outbox = await DurableQueue.open(
      outboxConfig({ dir, max_messages: 3, max_bytes: 1 << 20 }),
      logger,
    );
    const outcomes: string[] = [];
    for (let n = 1; n <= 5; n++) outcomes.push(await outbox.enqueue(message(n)));
    assert.deepEqual(outcomes, ["queued", "queued", "queued", "overflow", "overflow"]);
    assert.equal(outbox.overflowed, 2);
    assert.equal(outbox.size, 3);
    const errors = lines.filter((line) => line.level === ERROR);
    assert.deepEqual(
      errors.map((line) => line.event_id),
      ["cam-4", "cam-5"],
    );
    // Draining one makes room for exactly one more.
    const head = await outbox.peek();
    await outbox.ack(head!.seq);
    assert.equal(await outbox.enqueue(message(6)), "queued");
    assert.equal(await outbox.enqueue(message(7)), "overflow");
    assert.deepEqual(
      (await drain(outbox)).map((m) => m.eventId),
      ["cam-2", "cam-3", "cam-6"],
    );
    await outbox.close();
  });

  test("is bounded by maxBytes (file sizes including header and checksum)", async () => {
    const dir = freshDir();
    const { logger } = capturingLogger("debug");
    const recordBytes = encodeEntry([message(1)]).length;
    const outbox = await DurableQueue.open(
      outboxConfig({ dir, max_messages: 100, max_bytes: recordBytes * 2 + 1 }),
      logger,
    );
    assert.equal(await outbox.enqueue(message(1)), "queued");
    assert.equal(await outbox.enqueue(message(2)), "queued");
    assert.equal(await outbox.enqueue(message(3)), "overflow");
    assert.equal(outbox.bytes, recordBytes * 2);
    const files = (await readdir(dir)).filter((name) => name.endsWith(".msg"));
    assert.deepEqual(files, ["0000000000000000.msg", "0000000000000001.msg"]);
    assert.equal((await readFile(path.join(dir, files[0]!))).length, recordBytes);
    await outbox.close();
  });

  test("quarantines corrupt and temp files at open with a warning and keeps the rest in order", async () => {
    const dir = freshDir();
    const { logger } = capturingLogger("debug");
    const outbox = await DurableQueue.open(
      outboxConfig({ dir, max_messages: 100, max_bytes: 1 << 20 }),
      logger,
    );
    for (let n = 1; n <= 4; n++) await outbox.enqueue(message(n));
    await outbox.close();

    const second = path.join(dir, "0000000000000001.msg");
    const bytes = await readFile(second);
    bytes[bytes.length - 6] ^= 0xff;
    await writeFile(second, bytes);
    const third = path.join(dir, "0000000000000002.msg");
    await writeFile(third, (await readFile(third)).subarray(0, 12)); // torn write
    await writeFile(path.join(dir, "0000000000000009.msg.tmp"), "half a message");

    const { logger: reopenLogger, lines } = capturingLogger("debug");
    const reopened = await DurableQueue.open(
      outboxConfig({ dir, max_messages: 100, max_bytes: 1 << 20 }),
      reopenLogger,
    );
    assert.equal(reopened.size, 2);
    assert.deepEqual(
      (await drain(reopened)).map((m) => m.eventId),
      ["cam-1", "cam-4"],
    );
    const warnings = lines.filter((line) => line.level === WARN && /quarantined/.test(line.msg));
    assert.equal(warnings.length, 3);
    assert.ok(warnings.some((line) => line.reason === "checksum mismatch"));
    const quarantined = await readdir(path.join(dir, "quarantine"));
    assert.equal(quarantined.length, 3);
    assert.ok(quarantined.some((name) => name.startsWith("0000000000000001.msg.")));
    assert.ok(quarantined.some((name) => name.startsWith("0000000000000009.msg.tmp.")));
    await reopened.close();
  });

  test("peek quarantines a message damaged after open and moves on", async () => {
    const dir = freshDir();
    const { logger, lines } = capturingLogger("debug");
    const outbox = await DurableQueue.open(
      outboxConfig({ dir, max_messages: 100, max_bytes: 1 << 20 }),
      logger,
    );
    await outbox.enqueue(message(1));
    await outbox.enqueue(message(2));
    await writeFile(path.join(dir, "0000000000000000.msg"), "garbage");
    assert.equal((await outbox.peek())?.eventId, "cam-2");
    assert.equal(outbox.size, 1);
    assert.ok(lines.some((line) => line.level === WARN && line.reason === "truncated (7 bytes)"));
    await outbox.close();
  });

  test("ack only accepts the head, and waitForMessage wakes on enqueue", async () => {
    const dir = freshDir();
    const { logger } = capturingLogger("debug");
    const outbox = await DurableQueue.open(
      outboxConfig({ dir, max_messages: 100, max_bytes: 1 << 20 }),
      logger,
    );
    let woke = false;
    const waiting = outbox.waitForMessage().then(() => {
      woke = true;
    });
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(woke, false);
    await outbox.enqueue(message(1));
    await outbox.enqueue(message(2));
    await waiting;
    assert.equal(woke, true);
    await assert.rejects(outbox.ack(1), /out of order/);
    await outbox.ack(0);
    const controller = new AbortController();
    await outbox.ack((await outbox.peek())!.seq);
    const aborted = outbox.waitForMessage(controller.signal);
    controller.abort();
    await aborted; // resolves rather than hanging
    assert.equal(outbox.size, 0);
    await outbox.close();
  });

  test("a failed write loses the whole event (never half a pair), counted once in lost with one line", async () => {
    const dir = freshDir();
    const { logger, lines } = capturingLogger("debug");
    const outbox = await DurableQueue.open(
      outboxConfig({ dir, max_messages: 100, max_bytes: 1 << 20 }),
      logger,
    );
    const pair = (n: number): OutboxMessage[] => [message(n), message(n, { kind: "snapshot", retain: true })];
    // entry 1's temp path is taken by a directory, so its write fails (EISDIR) while entries 0 and 2 succeed
    await mkdir(path.join(dir, "0000000000000001.msg.tmp"));
    const outcomes = await Promise.all([pair(0), pair(1), pair(2)].map((entry) => outbox.enqueue(entry)));
    assert.deepEqual(outcomes, ["queued", "failed", "queued"]);
    assert.equal(outbox.lost, 1);
    assert.equal(outbox.overflowed, 0);
    assert.equal(outbox.size, 2);
    const errors = lines.filter((line) => line.level === ERROR);
    assert.equal(errors.length, 1);
    assert.equal(errors[0]!.event_id, "cam-1");
    assert.equal(errors[0]!.errno, "EISDIR");
    assert.match(errors[0]!.msg, /event cam-1 lost: could not write it to disk \(EISDIR\)/);
    // neither half of event 1 is anywhere: both others arrive whole, each event before its snapshot
    assert.deepEqual(
      (await drain(outbox)).map((m) => [m.eventId, m.kind ?? "event"]),
      [
        ["cam-0", "event"],
        ["cam-0", "snapshot"],
        ["cam-2", "event"],
        ["cam-2", "snapshot"],
      ],
    );
    await outbox.close();
  });

  test("a deleted directory is recreated with its mode and lock; the next events are stored, the gone ones counted lost", async () => {
    const dir = freshDir();
    const { logger, lines } = capturingLogger("debug");
    const outbox = await DurableQueue.open(
      outboxConfig({ dir, max_messages: 100, max_bytes: 1 << 20 }),
      logger,
    );
    for (let n = 1; n <= 3; n++) assert.equal(await outbox.enqueue(message(n)), "queued");
    await rm(dir, { recursive: true });
    const outcomes: string[] = [];
    for (let n = 4; n <= 6; n++) outcomes.push(await outbox.enqueue(message(n)));
    assert.deepEqual(outcomes, ["queued", "queued", "queued"]);
    assert.equal((await stat(dir)).mode & 0o777, 0o750);
    assert.equal(outbox.lost, 3, "the three events deleted with the directory");
    assert.equal(outbox.size, 3);
    const recreated = lines.filter((line) => /had vanished; recreated it/.test(line.msg));
    assert.equal(recreated.length, 1);
    assert.deepEqual(recreated[0]!.lost_events, ["cam-1", "cam-2", "cam-3"]);
    // the lock came back with the directory: a second opener is still refused
    await assert.rejects(
      DurableQueue.open(outboxConfig({ dir, max_messages: 100, max_bytes: 1 << 20 }), logger),
      /in use by process/,
    );
    assert.deepEqual(
      (await drain(outbox)).map((m) => m.eventId),
      ["cam-4", "cam-5", "cam-6"],
    );
    await outbox.close();
  });

  test("a stored entry whose file vanished is counted lost once, with a line naming the event", async () => {
    const dir = freshDir();
    const { logger, lines } = capturingLogger("debug");
    const outbox = await DurableQueue.open(
      outboxConfig({ dir, max_messages: 100, max_bytes: 1 << 20 }),
      logger,
    );
    await outbox.enqueue(message(1));
    await outbox.enqueue(message(2));
    await rm(path.join(dir, "0000000000000000.msg"));
    assert.equal((await outbox.peek())?.eventId, "cam-2");
    assert.equal(outbox.lost, 1);
    assert.ok(
      lines.some((line) => line.level === ERROR && /event cam-1 lost: its file vanished/.test(line.msg)),
    );
    await outbox.close();
  });

  test("acknowledged entries a read-only directory kept are not sent again and are deleted once it is writable", async (t) => {
    await withTmpfs(t, "4m", async (mountPoint) => {
      const dir = path.join(mountPoint, "outbox");
      const config = outboxConfig({ dir, max_messages: 100, max_bytes: 1 << 20 });
      const { logger, lines } = capturingLogger("info");
      const outbox = await DurableQueue.open(config, logger, { deleteRetryMs: 300 });
      for (let n = 0; n < 50; n++) assert.equal(await outbox.enqueue(message(n)), "queued");
      await mount(["-o", "remount,ro", mountPoint]);
      try {
        assert.equal((await drain(outbox)).length, 50, "each sent and acknowledged once");
        assert.equal(outbox.size, 0);
        assert.equal(outbox.undeleted, 50);
        assert.equal((await entryFiles(dir)).length, 50, "the read-only directory kept every file");
        assert.equal(await outbox.peek(), undefined, "none is offered again");
        await waitFor("a retry that failed too", () => outbox.deleteFailures >= 100, 5000);
      } finally {
        await mount(["-o", "remount,rw", mountPoint]);
      }
      await waitFor("the retried deletions", () => outbox.undeleted === 0, 5000);
      assert.deepEqual(await entryFiles(dir), [], "cleaned once writable");
      const failures = lines.filter((line) => /could not delete/.test(line.msg));
      assert.equal(failures.length, 1, "one line for 100+ failures within the minute");
      assert.equal(failures[0]!.level, WARN);
      assert.match(failures[0]!.msg, /\(EROFS\)/);
      assert.ok(lines.some((line) => /deleted 50 acknowledged entries/.test(line.msg)));
      await outbox.close();

      const reopened = await DurableQueue.open(config, logger);
      assert.equal(reopened.size, 0, "a restart sends none of them again");
      assert.deepEqual(await drain(reopened), []);
      await reopened.close();
    });
  });

  test("an acknowledged entry that cannot be deleted is deleted, not sent, by the next start (ack marker)", async (t) => {
    await withTmpfs(t, "4m", async (mountPoint) => {
      const dir = path.join(mountPoint, "outbox");
      const config = outboxConfig({ dir, max_messages: 100, max_bytes: 1 << 20 });
      const { logger, lines } = capturingLogger("info");
      const outbox = await DurableQueue.open(config, logger, { deleteRetryMs: 60_000 });
      for (let n = 0; n < 3; n++) await outbox.enqueue(message(n));
      // a file that is a mount point cannot be unlinked (EBUSY) while its directory stays writable
      const busy = path.join(dir, "0000000000000000.msg");
      await mount(["--bind", busy, busy]);
      try {
        const head = await outbox.peek();
        assert.equal(head?.eventId, "cam-0");
        await outbox.ack(head!.seq);
        assert.equal(outbox.undeleted, 1);
        await outbox.close();
      } finally {
        await run("umount", [busy]);
      }
      assert.ok(lines.some((line) => /the ack marker makes the next start delete them/.test(line.msg)));
      assert.equal((await entryFiles(dir)).length, 3, "cam-0's file is still there");

      const reopened = await DurableQueue.open(config, logger);
      assert.equal(reopened.size, 2);
      assert.deepEqual(
        (await drain(reopened)).map((m) => m.eventId),
        ["cam-1", "cam-2"],
        "cam-0 was acknowledged: not sent again",
      );
      assert.equal(await reopened.enqueue(message(3)), "queued");
      assert.deepEqual(
        await entryFiles(dir),
        ["0000000000000003.msg"],
        "numbering continues past the marker",
      );
      assert.ok(!(await readdir(dir)).includes(".acked"), "the marker is gone with what it covered");
      await reopened.close();
    });
  });

  test("a second opener of a live outbox is refused with ERR_OUTBOX_LOCKED naming the directory and pid", async () => {
    const dir = freshDir();
    const { logger } = capturingLogger("debug");
    const first = await DurableQueue.open(
      outboxConfig({ dir, max_messages: 100, max_bytes: 1 << 20 }),
      logger,
    );
    await assert.rejects(
      DurableQueue.open(outboxConfig({ dir, max_messages: 100, max_bytes: 1 << 20 }), logger),
      (err: unknown) =>
        isStpmdError(err) &&
        err.code === "ERR_OUTBOX_LOCKED" &&
        err.message.includes(dir) &&
        err.message.includes(`process ${process.pid}`),
    );
    await first.close();
    // released on close
    const second = await DurableQueue.open(
      outboxConfig({ dir, max_messages: 100, max_bytes: 1 << 20 }),
      logger,
    );
    await second.close();

    // a lock held by another live process (a real child) is refused too, naming that process
    const child = spawn("sleep", ["30"], { stdio: "ignore" });
    try {
      await mkdir(dir, { recursive: true });
      await writeFile(path.join(dir, ".lock"), JSON.stringify({ pid: child.pid, started: "then" }));
      await assert.rejects(
        DurableQueue.open(outboxConfig({ dir, max_messages: 100, max_bytes: 1 << 20 }), logger),
        new RegExp(`in use by process ${child.pid} `),
      );
    } finally {
      child.kill();
    }
  });

  test("a stale lock (its process is gone, or its pid now belongs to another process) is taken over with a warning", async () => {
    const dir = freshDir();
    const child = spawn("true", [], { stdio: "ignore" });
    await once(child, "exit");
    await mkdir(dir, { recursive: true });
    const lockFile = path.join(dir, ".lock");
    await writeFile(lockFile, JSON.stringify({ pid: child.pid, started: "earlier" }));
    const { logger, lines } = capturingLogger("debug");
    const outbox = await DurableQueue.open(
      outboxConfig({ dir, max_messages: 100, max_bytes: 1 << 20 }),
      logger,
    );
    assert.ok(
      lines.some((line) => line.level === WARN && line.msg.includes(`stale lock of process ${child.pid}`)),
    );
    assert.equal((JSON.parse(await readFile(lockFile, "utf8")) as { pid: number }).pid, process.pid);
    await outbox.close();
    await assert.rejects(stat(lockFile), /ENOENT/);

    // pid 1 is alive, but not the process that wrote this lock (its start time differs): stale after a reboot
    await writeFile(
      lockFile,
      JSON.stringify({ pid: 1, start_ticks: "not-its-start", started: "before the reboot" }),
    );
    const { logger: second, lines: secondLines } = capturingLogger("debug");
    const reopened = await DurableQueue.open(
      outboxConfig({ dir, max_messages: 100, max_bytes: 1 << 20 }),
      second,
    );
    assert.ok(secondLines.some((line) => line.msg.includes("stale lock of process 1,")));
    await reopened.close();
  });

  test("files are created 0640 and the directory 0750 whatever the umask, or as configured", async () => {
    const previous = process.umask(0);
    try {
      const { logger } = capturingLogger("debug");
      const dir = freshDir();
      const outbox = await DurableQueue.open(
        outboxConfig({ dir, max_messages: 100, max_bytes: 1 << 20 }),
        logger,
      );
      await outbox.enqueue(message(1));
      assert.equal((await stat(dir)).mode & 0o777, 0o750);
      assert.equal((await stat(path.join(dir, "0000000000000000.msg"))).mode & 0o777, 0o640);
      assert.equal((await stat(path.join(dir, ".lock"))).mode & 0o777, 0o640);
      await outbox.close();

      // an outbox left world-readable by an older release is tightened at open
      const old = freshDir();
      await mkdir(old, { mode: 0o755 });
      await writeFile(path.join(old, "0000000000000000.msg"), encodeRecord(message(1)), { mode: 0o644 });
      const custom = await DurableQueue.open(
        outboxConfig({
          dir: old,
          max_messages: 100,
          max_bytes: 1 << 20,
          file_mode: "0600",
          dir_mode: "0700",
        }),
        logger,
      );
      await custom.enqueue(message(2));
      assert.equal((await stat(old)).mode & 0o777, 0o700);
      for (const name of ["0000000000000000.msg", "0000000000000001.msg"]) {
        assert.equal((await stat(path.join(old, name))).mode & 0o777, 0o600, name);
      }
      await custom.close();
    } finally {
      process.umask(previous);
    }
  });

  test("reads single-message files of the previous format, in order, each as one event", async () => {
    const dir = freshDir();
    await mkdir(dir, { recursive: true });
    // what the previous release left: an event and its snapshot as two version-1 files, then another event
    const legacy = [message(1), message(1, { kind: "snapshot", retain: true }), message(2)];
    for (const [i, m] of legacy.entries()) {
      await writeFile(path.join(dir, `${String(i).padStart(16, "0")}.msg`), encodeRecord(m));
    }
    const { logger } = capturingLogger("debug");
    const outbox = await DurableQueue.open(
      outboxConfig({ dir, max_messages: 100, max_bytes: 1 << 20 }),
      logger,
    );
    assert.equal(outbox.size, 3);
    await outbox.enqueue([message(3), message(3, { kind: "snapshot", retain: true })]);
    const delivered = await drain(outbox);
    assert.deepEqual(
      delivered.map((m) => [m.eventId, m.kind ?? "event"]),
      [
        ["cam-1", "event"],
        ["cam-1", "snapshot"],
        ["cam-2", "event"],
        ["cam-3", "event"],
        ["cam-3", "snapshot"],
      ],
    );
    assert.deepEqual(delivered[1]!.payload, legacy[1]!.payload);
    assert.equal(outbox.lost, 0);
    await outbox.close();
  });
});
