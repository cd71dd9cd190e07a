import assert from "node:assert/strict";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { pino } from "pino";
import type { Logger } from "../../src/log.js";
import {
  decodeRecord,
  encodeEntry,
  encodeRecord,
  Outbox,
  type OutboxMessage,
} from "../../src/publish/outbox.js";

interface LogLine {
  level: number;
  msg: string;
  [key: string]: unknown;
}

const WARN = 40;
const ERROR = 50;

function capturingLogger(): { logger: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const logger = pino(
    { level: "debug" },
    { write: (line: string) => lines.push(JSON.parse(line) as LogLine) },
  );
  return { logger, lines };
}

function message(n: number, extra: Partial<OutboxMessage> = {}): OutboxMessage {
  // Binary payload with zeros and high bytes, so any text-mode mangling would show.
  const payload = Buffer.from([0, 255, n & 0xff, 10, 13, 0, n >> 8]);
  return { topic: `stpmd/cam${n % 2}/defect`, payload, qos: 1, retain: false, eventId: `cam-${n}`, ...extra };
}

async function drain(outbox: Outbox): Promise<OutboxMessage[]> {
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
    const { logger } = capturingLogger();
    const first = await Outbox.open({ dir, maxEvents: 100, maxBytes: 1 << 20, logger });
    // Issued concurrently: the outbox must still apply them in call order.
    const outcomes = await Promise.all([1, 2, 3, 4, 5].map((n) => first.enqueue(message(n))));
    assert.deepEqual(outcomes, ["queued", "queued", "queued", "queued", "queued"]);
    const head = await first.peek();
    assert.equal(head?.eventId, "cam-1");
    await first.ack(head!.seq);
    await first.close();

    const reopened = await Outbox.open({ dir, maxEvents: 100, maxBytes: 1 << 20, logger });
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
    const { logger, lines } = capturingLogger();
    const outbox = await Outbox.open({ dir, maxEvents: 1000, maxBytes: 1 << 24, logger });
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
      failures.map((line) => line.eventId),
      ["cam-7"],
    );
    await outbox.close();
    const reopened = await Outbox.open({ dir, maxEvents: 1000, maxBytes: 1 << 24, logger });
    assert.deepEqual(
      (await drain(reopened)).map((m) => m.eventId),
      Array.from({ length: 150 }, (_, n) => `cam-${n}`).filter((id) => id !== "cam-7"),
    );
    await reopened.close();
  });

  test("an event and its snapshot are one entry: taken together or refused together, counted once", async () => {
    const dir = freshDir();
    const { logger } = capturingLogger();
    const outbox = await Outbox.open({ dir, maxEvents: 2, maxBytes: 1 << 20, logger });
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
    const { logger, lines } = capturingLogger();
    const outbox = await Outbox.open({ dir, maxEvents: 3, maxBytes: 1 << 20, logger });
    const outcomes: string[] = [];
    for (let n = 1; n <= 5; n++) outcomes.push(await outbox.enqueue(message(n)));
    assert.deepEqual(outcomes, ["queued", "queued", "queued", "overflow", "overflow"]);
    assert.equal(outbox.overflowed, 2);
    assert.equal(outbox.size, 3);
    const errors = lines.filter((line) => line.level === ERROR);
    assert.deepEqual(
      errors.map((line) => line.eventId),
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
    const { logger } = capturingLogger();
    const recordBytes = encodeEntry([message(1)]).length;
    const outbox = await Outbox.open({ dir, maxEvents: 100, maxBytes: recordBytes * 2 + 1, logger });
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
    const { logger } = capturingLogger();
    const outbox = await Outbox.open({ dir, maxEvents: 100, maxBytes: 1 << 20, logger });
    for (let n = 1; n <= 4; n++) await outbox.enqueue(message(n));
    await outbox.close();

    const second = path.join(dir, "0000000000000001.msg");
    const bytes = await readFile(second);
    bytes[bytes.length - 6] ^= 0xff;
    await writeFile(second, bytes);
    const third = path.join(dir, "0000000000000002.msg");
    await writeFile(third, (await readFile(third)).subarray(0, 12)); // torn write
    await writeFile(path.join(dir, "0000000000000009.msg.tmp"), "half a message");

    const { logger: reopenLogger, lines } = capturingLogger();
    const reopened = await Outbox.open({ dir, maxEvents: 100, maxBytes: 1 << 20, logger: reopenLogger });
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
    const { logger, lines } = capturingLogger();
    const outbox = await Outbox.open({ dir, maxEvents: 100, maxBytes: 1 << 20, logger });
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
    const { logger } = capturingLogger();
    const outbox = await Outbox.open({ dir, maxEvents: 100, maxBytes: 1 << 20, logger });
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
});
