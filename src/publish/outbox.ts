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

interface PendingWrite {
  seq: number;
  record: Buffer;
  message: OutboxMessage;
  done: (outcome: EnqueueOutcome) => void;
}

/**
 * Most messages made durable by one group commit. Each message still gets its own fsynced file; the group shares
 * the directory fsync, which is what makes one-at-a-time writes slow (two fsyncs per message).
 */
const MAX_GROUP = 64;

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
 * Messages that arrive while a write is in progress are committed together (group commit: their files are
 * written and fsynced concurrently, renamed in sequence order, and share one directory fsync), so a burst of
 * defects costs a few fsync rounds rather than two per message.
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
  /** Accepted messages waiting for the next group commit, in sequence order. */
  private toWrite: PendingWrite[] = [];
  /** The group commit in progress, if any; it keeps going while messages keep arriving. */
  private writing: Promise<void> | undefined;
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
  async enqueue(message: OutboxMessage): Promise<EnqueueOutcome> {
    return (await this.enqueueAll([message]))[0]!;
  }

  /**
   * Appends messages that belong together (a defect event and its snapshot) with consecutive sequence numbers:
   * all are accepted or all refused against the bounds. Resolves with each message's outcome once its file is in
   * place (or its write failed).
   */
  enqueueAll(messages: OutboxMessage[]): Promise<EnqueueOutcome[]> {
    const refuseAll = (why: string): Promise<EnqueueOutcome[]> => {
      this.refuse(messages, why);
      return Promise.resolve(messages.map(() => "overflow"));
    };
    if (this.closed) return refuseAll("the outbox is closed");
    const records = messages.map(encodeRecord);
    const recordBytes = records.reduce((sum, r) => sum + r.length, 0);
    const queuedMessages = this.index.length + this.reservedMessages;
    const queuedBytes = this.storedBytes + this.reservedBytes;
    if (queuedMessages + messages.length > this.maxMessages) {
      return refuseAll(`it holds ${queuedMessages} of ${this.maxMessages} messages`);
    }
    if (queuedBytes + recordBytes > this.maxBytes) {
      return refuseAll(`${queuedBytes} + ${recordBytes} bytes would exceed ${this.maxBytes}`);
    }
    const outcomes = messages.map((message, i) => {
      const seq = this.nextSeq++;
      const record = records[i]!;
      this.reservedMessages += 1;
      this.reservedBytes += record.length;
      return new Promise<EnqueueOutcome>((done) => {
        this.toWrite.push({ seq, record, message, done });
      });
    });
    this.startWriting();
    return Promise.all(outcomes);
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

  /** Resolves once every message accepted so far is on disk (or its write failed). */
  async settled(): Promise<void> {
    while (this.writing) await this.writing;
  }

  /** Waits for pending writes; later enqueues are refused. The files stay for the next open. */
  async close(): Promise<void> {
    this.closed = true;
    await this.settled();
    for (const waiter of this.waiters) waiter();
  }

  private refuse(messages: OutboxMessage[], why: string): void {
    this.overflowCount += messages.length;
    this.logger.error(
      { eventId: messages[0]?.eventId, topics: messages.map((m) => m.topic), overflowed: this.overflowCount },
      `outbox: ${messages.length === 1 ? "message" : `${messages.length} messages`} refused: ${why}`,
    );
  }

  private startWriting(): void {
    if (this.writing) return;
    this.writing = this.writeGroups().finally(() => {
      this.writing = undefined;
      // a message queued between the loop's last check and this callback still needs a writer
      if (this.toWrite.length > 0) this.startWriting();
    });
  }

  /** Commits queued messages group by group until none are left. */
  private async writeGroups(): Promise<void> {
    while (this.toWrite.length > 0) {
      const group = this.toWrite.splice(0, MAX_GROUP);
      const written = await Promise.all(group.map((w) => this.writeTemp(w)));
      const renamed: PendingWrite[] = [];
      for (const [i, w] of group.entries()) {
        if (written[i] && (await this.renameIntoPlace(w))) renamed.push(w);
      }
      if (renamed.length > 0) {
        await fsyncDirectory(this.dir).catch((err: unknown) => {
          // the files are in place, only their names might not survive a power cut: keep and send them
          this.logger.error({ err: errorMessage(err) }, "outbox: could not fsync the directory");
        });
      }
      for (const w of group) {
        this.reservedMessages -= 1;
        this.reservedBytes -= w.record.length;
      }
      for (const w of renamed) {
        this.index.push({ seq: w.seq, bytes: w.record.length });
        this.storedBytes += w.record.length;
      }
      if (renamed.length > 0) for (const waiter of this.waiters) waiter();
      const inPlace = new Set(renamed);
      for (const w of group) w.done(inPlace.has(w) ? "queued" : "failed");
    }
  }

  private tempPath(seq: number): string {
    return `${path.join(this.dir, messageFileName(seq))}.tmp`;
  }

  private async writeTemp(w: PendingWrite): Promise<boolean> {
    try {
      await writeFileSynced(this.tempPath(w.seq), w.record);
      return true;
    } catch (err) {
      return this.writeFailed(w, err);
    }
  }

  private async renameIntoPlace(w: PendingWrite): Promise<boolean> {
    try {
      await rename(this.tempPath(w.seq), path.join(this.dir, messageFileName(w.seq)));
      return true;
    } catch (err) {
      return this.writeFailed(w, err);
    }
  }

  private async writeFailed(w: PendingWrite, err: unknown): Promise<false> {
    this.logger.error(
      { eventId: w.message.eventId, topic: w.message.topic, err: errorMessage(err) },
      "outbox: could not write message to disk; it is lost",
    );
    await unlink(this.tempPath(w.seq)).catch(() => undefined);
    return false;
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
