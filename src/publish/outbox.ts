import { mkdir, readdir, readFile, rename, unlink } from "node:fs/promises";
import path from "node:path";
import { crc32 } from "node:zlib";
import { fsyncDirectory, writeFileSynced } from "../durable-fs.js";
import { errorMessage } from "../errors.js";
import type { Logger } from "../log.js";
import type { Qos } from "./topics.js";

/** A message that must reach the broker even across broker outages and daemon restarts. */
export interface OutboxMessage {
  topic: string;
  payload: Buffer;
  qos: Qos;
  retain: boolean;
  /** The defect event this message belongs to, for log lines (an overflow names the event it refused). */
  eventId?: string;
  /** Free-form label for counters, e.g. "defect" or "snapshot". */
  kind?: string;
}

export interface StoredMessage extends OutboxMessage {
  /** Position in the outbox; pass it to {@link Outbox.ack}. */
  seq: number;
}

export interface OutboxOptions {
  dir: string;
  maxMessages: number;
  maxBytes: number;
  logger: Logger;
}

/** `"overflow"`: the outbox is full; `"failed"`: the write itself failed (disk full, I/O error). Both are logged. */
export type EnqueueOutcome = "queued" | "overflow" | "failed";

interface IndexEntry {
  seq: number;
  bytes: number;
}

// File layout: magic, format version, header length (u32 BE), header JSON, payload bytes, CRC-32 (u32 BE) of
// everything before it. The CRC catches torn or bit-rotten files that a length check alone would accept.
const MAGIC = Buffer.from("SOBX", "ascii");
const FORMAT_VERSION = 1;
const PREAMBLE_BYTES = MAGIC.length + 1 + 4;
const TRAILER_BYTES = 4;
const SEQ_DIGITS = 16; // Number.MAX_SAFE_INTEGER has 16 digits, so names sort lexically in sequence order.
const MESSAGE_NAME = /^(\d{16})\.msg$/;
const QUARANTINE_DIR = "quarantine";

interface RecordHeader {
  topic: string;
  qos: Qos;
  retain: boolean;
  eventId?: string;
  kind?: string;
}

export function encodeRecord(message: OutboxMessage): Buffer {
  const header: RecordHeader = { topic: message.topic, qos: message.qos, retain: message.retain };
  if (message.eventId !== undefined) header.eventId = message.eventId;
  if (message.kind !== undefined) header.kind = message.kind;
  const headerBytes = Buffer.from(JSON.stringify(header), "utf8");
  const preamble = Buffer.alloc(PREAMBLE_BYTES);
  MAGIC.copy(preamble, 0);
  preamble.writeUInt8(FORMAT_VERSION, MAGIC.length);
  preamble.writeUInt32BE(headerBytes.length, MAGIC.length + 1);
  const body = Buffer.concat([preamble, headerBytes, message.payload]);
  const trailer = Buffer.alloc(TRAILER_BYTES);
  trailer.writeUInt32BE(crc32(body), 0);
  return Buffer.concat([body, trailer]);
}

/** Parses a record file; returns the reason instead of a message when the bytes are not a whole, valid record. */
export function decodeRecord(bytes: Buffer): OutboxMessage | string {
  if (bytes.length < PREAMBLE_BYTES + TRAILER_BYTES) return `truncated (${bytes.length} bytes)`;
  if (!bytes.subarray(0, MAGIC.length).equals(MAGIC)) return "bad magic";
  const version = bytes.readUInt8(MAGIC.length);
  if (version !== FORMAT_VERSION) return `unknown format version ${version}`;
  const bodyEnd = bytes.length - TRAILER_BYTES;
  if (crc32(bytes.subarray(0, bodyEnd)) !== bytes.readUInt32BE(bodyEnd)) return "checksum mismatch";
  const headerEnd = PREAMBLE_BYTES + bytes.readUInt32BE(MAGIC.length + 1);
  if (headerEnd > bodyEnd) return "header length past end of file";
  let header: unknown;
  try {
    header = JSON.parse(bytes.subarray(PREAMBLE_BYTES, headerEnd).toString("utf8"));
  } catch (err) {
    return `header is not JSON (${errorMessage(err)})`;
  }
  if (!isRecordHeader(header)) return "header lacks topic/qos/retain";
  // Copy so the message does not pin the whole file buffer (it may outlive many reads).
  const payload = Buffer.from(bytes.subarray(headerEnd, bodyEnd));
  return { ...header, payload };
}

function isRecordHeader(value: unknown): value is RecordHeader {
  if (typeof value !== "object" || value === null) return false;
  const header = value as Record<string, unknown>;
  return (
    typeof header.topic === "string" &&
    (header.qos === 0 || header.qos === 1 || header.qos === 2) &&
    typeof header.retain === "boolean" &&
    (header.eventId === undefined || typeof header.eventId === "string") &&
    (header.kind === undefined || typeof header.kind === "string")
  );
}

function messageFileName(seq: number): string {
  return `${String(seq).padStart(SEQ_DIGITS, "0")}.msg`;
}

/**
 * A bounded, durable, ordered FIFO on disk for messages that must not be lost (defect events and their
 * snapshots). Each message is one file, written atomically (temp file, fsync, rename, fsync of the directory) and
 * named by a zero-padded, monotonically increasing sequence number, so a restart re-reads the queue in order.
 *
 * A message leaves the outbox only through {@link ack}, which the publisher calls once the broker acknowledged it;
 * a crash in between means the message is sent again (at-least-once, like QoS 1 itself).
 *
 * When full, the NEW message is refused and counted: older unsent events are never deleted to make room, because
 * the first defects of an incident are the ones an operator needs most.
 */
export class Outbox {
  readonly dir: string;
  readonly maxMessages: number;
  readonly maxBytes: number;
  private readonly logger: Logger;
  private readonly index: IndexEntry[] = [];
  private nextSeq: number;
  private storedBytes = 0;
  /** Messages accepted by enqueue() but not yet renamed into place; they count against the bounds. */
  private reservedMessages = 0;
  private reservedBytes = 0;
  private overflowCount = 0;
  private writeChain: Promise<unknown> = Promise.resolve();
  private head: StoredMessage | undefined;
  private waiters: (() => void)[] = [];
  private closed = false;

  private constructor(options: OutboxOptions, entries: IndexEntry[]) {
    this.dir = options.dir;
    this.maxMessages = options.maxMessages;
    this.maxBytes = options.maxBytes;
    this.logger = options.logger;
    this.index = entries;
    this.storedBytes = entries.reduce((sum, entry) => sum + entry.bytes, 0);
    this.nextSeq = entries.length > 0 ? entries[entries.length - 1]!.seq + 1 : 0;
  }

  /**
   * Opens (creating if needed) the outbox in `options.dir` and re-reads what an earlier run left there. Files that
   * do not decode, and temp files of writes that never completed, are moved to `quarantine/` with a warning rather
   * than deleted, so nothing is destroyed that someone might want to inspect.
   */
  static async open(options: OutboxOptions): Promise<Outbox> {
    const logger = options.logger.child({ component: "outbox" });
    await mkdir(options.dir, { recursive: true });
    const entries: IndexEntry[] = [];
    const names = (await readdir(options.dir, { withFileTypes: true })).sort((a, b) =>
      a.name < b.name ? -1 : a.name > b.name ? 1 : 0,
    );
    for (const dirent of names) {
      if (dirent.isDirectory() && dirent.name === QUARANTINE_DIR) continue;
      const file = path.join(options.dir, dirent.name);
      const match = MESSAGE_NAME.exec(dirent.name);
      if (dirent.name.endsWith(".tmp")) {
        await quarantine(options.dir, dirent.name, logger, "temp file of a write that never completed");
        continue;
      }
      if (match === null || !dirent.isFile()) {
        logger.warn({ file }, "outbox: ignoring a file that is not an outbox message");
        continue;
      }
      const bytes = await readFile(file);
      const decoded = decodeRecord(bytes);
      if (typeof decoded === "string") {
        await quarantine(options.dir, dirent.name, logger, decoded);
        continue;
      }
      entries.push({ seq: Number(match[1]), bytes: bytes.length });
    }
    const outbox = new Outbox({ ...options, logger }, entries);
    if (entries.length > 0) {
      logger.info(
        { dir: options.dir, queued: entries.length, bytes: outbox.storedBytes },
        "outbox: resuming messages left by an earlier run",
      );
    }
    if (entries.length > options.maxMessages || outbox.storedBytes > options.maxBytes) {
      // Keep them all (they are unsent events); new ones are refused until the queue drains below the bounds.
      logger.warn(
        {
          queued: entries.length,
          bytes: outbox.storedBytes,
          maxMessages: options.maxMessages,
          maxBytes: options.maxBytes,
        },
        "outbox: existing messages exceed the configured bounds",
      );
    }
    return outbox;
  }

  /** Messages on disk, ready to send. */
  get size(): number {
    return this.index.length;
  }

  /** Bytes on disk (file sizes, header and checksum included). */
  get bytes(): number {
    return this.storedBytes;
  }

  /** Messages refused since open because the outbox was full. */
  get overflowed(): number {
    return this.overflowCount;
  }

  /**
   * Appends `message` durably. Resolves once the file is in place (or refused); calls are applied in call order,
   * so concurrent callers still get sequence numbers in the order they called.
   */
  enqueue(message: OutboxMessage): Promise<EnqueueOutcome> {
    if (this.closed) return Promise.resolve(this.refuse(message, "the outbox is closed"));
    const record = encodeRecord(message);
    const queuedMessages = this.index.length + this.reservedMessages;
    const queuedBytes = this.storedBytes + this.reservedBytes;
    if (queuedMessages + 1 > this.maxMessages) {
      return Promise.resolve(
        this.refuse(message, `it holds ${queuedMessages} of ${this.maxMessages} messages`),
      );
    }
    if (queuedBytes + record.length > this.maxBytes) {
      return Promise.resolve(
        this.refuse(message, `${queuedBytes} + ${record.length} bytes would exceed ${this.maxBytes}`),
      );
    }
    const seq = this.nextSeq++;
    this.reservedMessages += 1;
    this.reservedBytes += record.length;
    const write = this.writeChain.then(() => this.writeRecord(seq, record, message));
    this.writeChain = write;
    return write;
  }

  /** The oldest message, or undefined when empty. Files that became unreadable since open are quarantined. */
  async peek(): Promise<StoredMessage | undefined> {
    while (this.index.length > 0) {
      const entry = this.index[0]!;
      if (this.head?.seq === entry.seq) return this.head;
      const name = messageFileName(entry.seq);
      let decoded: OutboxMessage | string;
      try {
        decoded = decodeRecord(await readFile(path.join(this.dir, name)));
      } catch (err) {
        decoded = `unreadable (${errorMessage(err)})`;
      }
      if (this.index[0] !== entry) continue; // acked meanwhile by a concurrent caller
      if (typeof decoded !== "string") {
        this.head = { ...decoded, seq: entry.seq };
        return this.head;
      }
      this.index.shift();
      this.storedBytes -= entry.bytes;
      await quarantine(this.dir, name, this.logger, decoded);
    }
    return undefined;
  }

  /** Deletes the head message after the broker acknowledged it. Only the head can be acked: the queue is FIFO. */
  async ack(seq: number): Promise<void> {
    const entry = this.index[0];
    if (entry === undefined || entry.seq !== seq) {
      throw new Error(
        `outbox ack(${seq}) out of order: the head is ${entry === undefined ? "empty" : entry.seq}`,
      );
    }
    this.index.shift();
    this.storedBytes -= entry.bytes;
    if (this.head?.seq === seq) this.head = undefined;
    // No directory fsync here: if the unlink is lost in a crash the message is sent once more, which QoS 1
    // consumers must tolerate anyway.
    await unlink(path.join(this.dir, messageFileName(seq))).catch((err: unknown) => {
      this.logger.warn({ seq, err: errorMessage(err) }, "outbox: could not delete an acknowledged message");
    });
  }

  /** Resolves when the outbox holds at least one message (at once if it already does) or `signal` aborts. */
  waitForMessage(signal?: AbortSignal): Promise<void> {
    if (this.index.length > 0 || signal?.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        signal?.removeEventListener("abort", done);
        this.waiters = this.waiters.filter((waiter) => waiter !== done);
        resolve();
      };
      this.waiters.push(done);
      signal?.addEventListener("abort", done, { once: true });
    });
  }

  /** Waits for pending writes; later enqueues are refused. The files stay for the next open. */
  async close(): Promise<void> {
    this.closed = true;
    await this.writeChain;
    for (const waiter of this.waiters) waiter();
  }

  private refuse(message: OutboxMessage, why: string): EnqueueOutcome {
    this.overflowCount += 1;
    this.logger.error(
      { eventId: message.eventId, topic: message.topic, overflowed: this.overflowCount },
      `outbox: message refused: ${why}`,
    );
    return "overflow";
  }

  private async writeRecord(seq: number, record: Buffer, message: OutboxMessage): Promise<EnqueueOutcome> {
    const name = messageFileName(seq);
    const finalPath = path.join(this.dir, name);
    const tempPath = `${finalPath}.tmp`;
    try {
      await writeFileSynced(tempPath, record);
      await rename(tempPath, finalPath);
      await fsyncDirectory(this.dir);
    } catch (err) {
      this.logger.error(
        { eventId: message.eventId, topic: message.topic, err: errorMessage(err) },
        "outbox: could not write message to disk; it is lost",
      );
      await unlink(tempPath).catch(() => undefined);
      return "failed";
    } finally {
      this.reservedMessages -= 1;
      this.reservedBytes -= record.length;
    }
    this.index.push({ seq, bytes: record.length });
    this.storedBytes += record.length;
    for (const waiter of this.waiters) waiter();
    return "queued";
  }
}

async function quarantine(dir: string, name: string, logger: Logger, reason: string): Promise<void> {
  const quarantineDir = path.join(dir, QUARANTINE_DIR);
  const target = path.join(quarantineDir, `${name}.${Date.now()}`);
  try {
    await mkdir(quarantineDir, { recursive: true });
    await rename(path.join(dir, name), target);
    logger.warn(
      { file: path.join(dir, name), movedTo: target, reason },
      "outbox: quarantined a bad message file",
    );
  } catch (err) {
    logger.warn(
      { file: path.join(dir, name), reason, err: errorMessage(err) },
      "outbox: bad message file could not be quarantined; ignoring it",
    );
  }
}
