import { access, chmod, readdir, readFile, rename, statfs, unlink } from "node:fs/promises";
import path from "node:path";
import { crc32 } from "node:zlib";
import type { MqttOutboxConfig } from "../config/index.js";
import {
  DEFAULT_DIR_MODE,
  DEFAULT_FILE_MODE,
  fsyncDirectory,
  makeDirectory,
  parseMode,
  writeFileAtomic,
  writeFileSynced,
} from "../core/durable-fs.js";
import { errorMessage } from "../core/errors.js";
import type { Logger } from "../core/log.js";
import { RepeatLimiter } from "../core/repeat-limiter.js";
import { LOCK_NAME, QueueLock } from "./durable-queue-lock.js";
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

/**
 * One outbox entry as stored: a defect event and its snapshot (or just the event), sent in order and acked
 * together, so the pair shares one fate on disk and in every counter.
 */
export interface StoredEntry {
  /** Position in the outbox; pass it to {@link DurableQueue.ack}. */
  seq: number;
  /** The event the entry belongs to (its first message's), for log lines. */
  eventId?: string;
  messages: OutboxMessage[];
}

/** The outbox's settings in the units it works in, from the config's `mqtt.outbox` slice. */
interface OutboxOptions {
  dir: string;
  /** Most entries (events) kept; an event and its snapshot are one entry. */
  maxEvents: number;
  maxBytes: number;
  /** Permission bits of entry and lock files (default {@link DEFAULT_FILE_MODE}). */
  fileMode?: number;
  /** Permission bits of the outbox directory and its quarantine (default {@link DEFAULT_DIR_MODE}). */
  dirMode?: number;
  logger: Logger;
}

/** What only tests change: how soon a failed deletion is first retried ({@link DELETE_RETRY_MS} otherwise). */
export interface QueueTuning {
  deleteRetryMs?: number;
}

/**
 * `"overflow"`: refused because the outbox is full (counted in {@link DurableQueue.overflowed}); `"failed"`: the
 * write itself failed (disk full, I/O error) and the event is lost (counted in {@link DurableQueue.lost}). Both logged.
 */
export type EnqueueOutcome = "queued" | "overflow" | "failed";

interface IndexEntry {
  seq: number;
  bytes: number;
  eventId: string | undefined;
}

interface PendingWrite {
  seq: number;
  record: Buffer;
  eventId: string | undefined;
  done: (outcome: EnqueueOutcome) => void;
}

/**
 * Most entries made durable by one group commit. Each entry still gets its own fsynced file; the group shares
 * the directory fsync, which is what makes one-at-a-time writes slow (two fsyncs per entry).
 */
const MAX_GROUP = 64;

// File layout: magic, format version, header length (u32 BE), header JSON, payload bytes, CRC-32 (u32 BE) of
// everything before it. The CRC catches torn or bit-rotten files that a length check alone would accept.
// Version 1 holds one message per file (written before an event and its snapshot became one entry; such files may
// still be on disk after an upgrade, so they are read, each as an entry of its own). Version 2 holds one entry:
// the header lists its messages with their payload lengths, and the payloads follow in that order.
const MAGIC = Buffer.from("SOBX", "ascii");
const FORMAT_VERSION = 1;
const ENTRY_FORMAT_VERSION = 2;
const PREAMBLE_BYTES = MAGIC.length + 1 + 4;
const TRAILER_BYTES = 4;
const SEQ_DIGITS = 16; // Number.MAX_SAFE_INTEGER has 16 digits, so names sort lexically in sequence order.
const MESSAGE_NAME = /^(\d{16})\.msg$/;
const QUARANTINE_DIR = "quarantine";
/**
 * The ack marker: the sequence number of the newest acknowledged entry, written (atomically) only while some
 * acknowledged entry could not be deleted. At open, entries up to it are deleted instead of sent again.
 */
const ACKED_NAME = ".acked";
/** First retry of a failed deletion; it doubles up to {@link DELETE_RETRY_MAX_MS}. */
const DELETE_RETRY_MS = 1000;
/** A directory that stays read-only is tried once a minute, not harder: the retries cost a syscall per entry. */
const DELETE_RETRY_MAX_MS = 60_000;

interface RecordHeader {
  topic: string;
  qos: Qos;
  retain: boolean;
  eventId?: string;
  kind?: string;
}

/** The file layout around a header and its payloads: preamble, header JSON, payloads, CRC-32 trailer. */
function frame(version: number, header: unknown, payloads: readonly Buffer[]): Buffer {
  const headerBytes = Buffer.from(JSON.stringify(header), "utf8");
  const preamble = Buffer.alloc(PREAMBLE_BYTES);
  MAGIC.copy(preamble, 0);
  preamble.writeUInt8(version, MAGIC.length);
  preamble.writeUInt32BE(headerBytes.length, MAGIC.length + 1);
  const body = Buffer.concat([preamble, headerBytes, ...payloads]);
  const trailer = Buffer.alloc(TRAILER_BYTES);
  trailer.writeUInt32BE(crc32(body), 0);
  return Buffer.concat([body, trailer]);
}

interface Unframed {
  version: number;
  header: unknown;
  /** Where the payloads start and end in the file's bytes. */
  payloadStart: number;
  payloadEnd: number;
}

/** Checks magic, version, CRC and header of a file; the reason instead when they are not whole and valid. */
function unframe(bytes: Buffer, versions: readonly number[]): Unframed | string {
  if (bytes.length < PREAMBLE_BYTES + TRAILER_BYTES) return `truncated (${bytes.length} bytes)`;
  if (!bytes.subarray(0, MAGIC.length).equals(MAGIC)) return "bad magic";
  const version = bytes.readUInt8(MAGIC.length);
  if (!versions.includes(version)) return `unknown format version ${version}`;
  const payloadEnd = bytes.length - TRAILER_BYTES;
  if (crc32(bytes.subarray(0, payloadEnd)) !== bytes.readUInt32BE(payloadEnd)) return "checksum mismatch";
  const payloadStart = PREAMBLE_BYTES + bytes.readUInt32BE(MAGIC.length + 1);
  if (payloadStart > payloadEnd) return "header length past end of file";
  try {
    const header: unknown = JSON.parse(bytes.subarray(PREAMBLE_BYTES, payloadStart).toString("utf8"));
    return { version, header, payloadStart, payloadEnd };
  } catch (err) {
    return `header is not JSON (${errorMessage(err)})`;
  }
}

function recordHeader(message: OutboxMessage): RecordHeader {
  const header: RecordHeader = { topic: message.topic, qos: message.qos, retain: message.retain };
  if (message.eventId !== undefined) header.eventId = message.eventId;
  if (message.kind !== undefined) header.kind = message.kind;
  return header;
}

/** Encodes one message in the version-1 layout (what earlier releases wrote); the outbox itself writes entries. */
export function encodeRecord(message: OutboxMessage): Buffer {
  return frame(FORMAT_VERSION, recordHeader(message), [message.payload]);
}

/** Parses a version-1 record file; returns the reason instead of a message when the bytes are not a whole, valid record. */
export function decodeRecord(bytes: Buffer): OutboxMessage | string {
  const file = unframe(bytes, [FORMAT_VERSION]);
  if (typeof file === "string") return file;
  return recordOf(file, bytes);
}

function recordOf(file: Unframed, bytes: Buffer): OutboxMessage | string {
  if (!isRecordHeader(file.header)) return "header lacks topic/qos/retain";
  // Copy so the message does not pin the whole file buffer (it may outlive many reads).
  const payload = Buffer.from(bytes.subarray(file.payloadStart, file.payloadEnd));
  return { ...file.header, payload };
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

interface EntryHeader {
  messages: (RecordHeader & { bytes: number })[];
}

/** Encodes an entry (one or more messages that share one fate) in the version-2 layout. */
export function encodeEntry(messages: readonly OutboxMessage[]): Buffer {
  if (messages.length === 0) throw new Error("encodeEntry: an entry needs at least one message");
  const header: EntryHeader = {
    messages: messages.map((message) => ({ ...recordHeader(message), bytes: message.payload.length })),
  };
  return frame(
    ENTRY_FORMAT_VERSION,
    header,
    messages.map((message) => message.payload),
  );
}

/**
 * Parses an entry file of either version (a version-1 file is an entry of one message); returns the reason
 * instead of messages when the bytes are not a whole, valid entry.
 */
export function decodeEntry(bytes: Buffer): OutboxMessage[] | string {
  const file = unframe(bytes, [FORMAT_VERSION, ENTRY_FORMAT_VERSION]);
  if (typeof file === "string") return file;
  if (file.version === FORMAT_VERSION) {
    const message = recordOf(file, bytes);
    return typeof message === "string" ? message : [message];
  }
  const parts = (file.header as { messages?: unknown } | null)?.messages;
  if (!Array.isArray(parts) || parts.length === 0) return "header lists no messages";
  const messages: OutboxMessage[] = [];
  let offset = file.payloadStart;
  for (const part of parts as unknown[]) {
    if (!isRecordHeader(part)) return "a message header lacks topic/qos/retain";
    const length = (part as { bytes?: unknown }).bytes;
    if (
      typeof length !== "number" ||
      !Number.isInteger(length) ||
      length < 0 ||
      offset + length > file.payloadEnd
    ) {
      return "a message length is missing or runs past the end of the file";
    }
    const { bytes: _length, ...fields } = part as RecordHeader & { bytes: number };
    // Copy so the message does not pin the whole file buffer (it may outlive many reads).
    messages.push({ ...fields, payload: Buffer.from(bytes.subarray(offset, offset + length)) });
    offset += length;
  }
  if (offset !== file.payloadEnd) return `${file.payloadEnd - offset} bytes after the last message`;
  return messages;
}

function entryFileName(seq: number): string {
  return `${String(seq).padStart(SEQ_DIGITS, "0")}.msg`;
}

function errnoOf(err: unknown): string {
  return (err as NodeJS.ErrnoException | undefined)?.code ?? "error";
}

/**
 * The one durable queue of the outputs: a bounded, durable, ordered FIFO on disk for messages that must not be
 * lost. The MQTT sink's outbox (defect events and snapshots) and the Sparkplug sink's history (defects held while
 * the node is not born) are two instances in two directories; a new durable sink opens a third. An entry is one event with
 * its snapshot (when the snapshot travels as a message of its own) in one file, written atomically (temp file,
 * fsync, rename, fsync of the directory), so a pair is stored whole or not at all, and every bound and counter
 * counts events. Files are named by a zero-padded, monotonically increasing sequence number, so a restart
 * re-reads the queue in order. Entries that arrive while a write is in progress are committed together (group
 * commit: their files are written and fsynced concurrently, renamed in sequence order, and share one directory
 * fsync), so a burst of defects costs a few fsync rounds rather than two per entry.
 *
 * An entry leaves the outbox only through {@link ack}, which the publisher calls once the broker acknowledged all
 * its messages; a crash in between means it is sent again (at-least-once, like QoS 1 itself). An acknowledged
 * entry whose file cannot be deleted (a read-only directory) is remembered and never sent again by this process;
 * its deletion is retried with backoff (1 s doubling to a minute), counted and logged once a minute. While such
 * files are left, an ack marker (the newest acknowledged sequence number, written atomically) tells the next open
 * to delete them instead of sending them; where the marker cannot be written either (the same read-only
 * directory), the next open sends them again — a duplicate, which QoS 1 consumers handle, rather than a guess
 * that could skip an unsent event.
 *
 * When full, the NEW event is refused and counted ({@link overflowed}): older unsent events are never deleted to
 * make room, because the first defects of an incident are the ones an operator needs most. An event whose write
 * fails (disk full, I/O error) is counted in {@link lost}, as is a stored one that vanished or became unreadable.
 * If the directory itself disappears it is recreated (with its lock) and the write retried once.
 *
 * One process at a time: {@link open} takes a lock file and throws `ERR_OUTBOX_LOCKED` while another live
 * process holds it.
 */
export class DurableQueue {
  readonly dir: string;
  readonly maxEvents: number;
  readonly maxBytes: number;
  readonly fileMode: number;
  readonly dirMode: number;
  private readonly logger: Logger;
  private readonly lock: QueueLock;
  private readonly index: IndexEntry[] = [];
  private nextSeq: number;
  private storedBytes = 0;
  /** Entries accepted by enqueue() but not yet renamed into place; they count against the bounds. */
  private reservedEntries = 0;
  private reservedBytes = 0;
  private overflowCount = 0;
  private lostCount = 0;
  /** Accepted entries waiting for the next group commit, in sequence order. */
  private toWrite: PendingWrite[] = [];
  /** The group commit in progress, if any; it keeps going while entries keep arriving. */
  private writing: Promise<void> | undefined;
  /** A recreation of the vanished directory in progress, shared by every write that noticed it. */
  private recreating: Promise<void> | undefined;
  private head: StoredEntry | undefined;
  private waiters: (() => void)[] = [];
  private closed = false;
  /**
   * Acknowledged entries whose file could not be deleted (a read-only directory, a busy file), oldest first; they
   * are deleted by {@link retryDeletes} with backoff, and never sent again by this process.
   */
  private undeletedSeqs: number[] = [];
  /** Highest sequence number the ack marker on disk holds, if there is one. */
  private markerSeq: number | undefined;
  private deleteFailureCount = 0;
  private readonly deleteRetryMs: number;
  private deleteDelayMs: number;
  private deleteTimer: NodeJS.Timeout | undefined;
  private deleting: Promise<void> | undefined;
  private readonly deleteRepeats = new RepeatLimiter();

  private constructor(
    options: OutboxOptions,
    lock: QueueLock,
    entries: IndexEntry[],
    lost: number,
    acked: { markerSeq: number | undefined; undeleted: number[] },
    tuning: QueueTuning,
  ) {
    this.dir = options.dir;
    this.maxEvents = options.maxEvents;
    this.maxBytes = options.maxBytes;
    this.fileMode = options.fileMode ?? DEFAULT_FILE_MODE;
    this.dirMode = options.dirMode ?? DEFAULT_DIR_MODE;
    this.logger = options.logger;
    this.lock = lock;
    this.index = entries;
    this.lostCount = lost;
    this.storedBytes = entries.reduce((sum, entry) => sum + entry.bytes, 0);
    const afterEntries = entries.length > 0 ? entries[entries.length - 1]!.seq + 1 : 0;
    // never reuse a number the marker covers: an entry under it would be taken for acknowledged at the next open
    this.nextSeq = Math.max(afterEntries, (acked.markerSeq ?? -1) + 1);
    this.markerSeq = acked.markerSeq;
    this.undeletedSeqs = acked.undeleted;
    this.deleteRetryMs = tuning.deleteRetryMs ?? DELETE_RETRY_MS;
    this.deleteDelayMs = this.deleteRetryMs;
    if (this.undeletedSeqs.length > 0) this.scheduleDeleteRetry();
  }

  /**
   * Opens (creating if needed) the outbox in `options.dir`, takes its lock and re-reads what an earlier run left
   * there. Entry files that do not decode (counted as lost), and temp files of writes that never completed, are
   * moved to `quarantine/` with a warning rather than deleted, so nothing is destroyed that someone might want to
   * inspect. Throws an `ERR_OUTBOX_LOCKED` StpmdError if another running process uses the directory.
   */
  static async open(
    config: MqttOutboxConfig,
    parentLogger: Logger,
    tuning: QueueTuning = {},
  ): Promise<DurableQueue> {
    const options: OutboxOptions = {
      dir: config.dir,
      maxEvents: config.max_messages,
      maxBytes: config.max_bytes,
      fileMode: parseMode(config.file_mode),
      dirMode: parseMode(config.dir_mode),
      logger: parentLogger,
    };
    const logger = options.logger.child({ component: "outbox" });
    const fileMode = options.fileMode ?? DEFAULT_FILE_MODE;
    const dirMode = options.dirMode ?? DEFAULT_DIR_MODE;
    await makeDirectory(options.dir, dirMode);
    const lock = await QueueLock.acquire(options.dir, fileMode, logger);
    try {
      return await DurableQueue.load({ ...options, logger, fileMode, dirMode }, lock, tuning);
    } catch (err) {
      await lock.release();
      throw err;
    }
  }

  private static async load(
    options: OutboxOptions & { fileMode: number; dirMode: number },
    lock: QueueLock,
    tuning: QueueTuning,
  ): Promise<DurableQueue> {
    const { logger } = options;
    const entries: IndexEntry[] = [];
    let lost = 0;
    const markerSeq = await readAckMarker(options.dir, logger);
    const acked: number[] = [];
    const names = (await readdir(options.dir, { withFileTypes: true })).sort((a, b) =>
      a.name < b.name ? -1 : a.name > b.name ? 1 : 0,
    );
    for (const dirent of names) {
      if (dirent.isDirectory() && dirent.name === QUARANTINE_DIR) continue;
      if (dirent.name === LOCK_NAME || dirent.name === ACKED_NAME) continue;
      const file = path.join(options.dir, dirent.name);
      const match = MESSAGE_NAME.exec(dirent.name);
      if (dirent.name.endsWith(".tmp")) {
        await quarantine(options, dirent.name, "temp file of a write that never completed");
        continue;
      }
      if (match === null || !dirent.isFile()) {
        logger.warn({ file }, "outbox: ignoring a file that is not an outbox entry");
        continue;
      }
      if (markerSeq !== undefined && Number(match[1]) <= markerSeq) {
        acked.push(Number(match[1])); // acknowledged by an earlier run that could not delete it: never resent
        continue;
      }
      const bytes = await readFile(file);
      const decoded = decodeEntry(bytes);
      if (typeof decoded === "string") {
        lost += 1;
        await quarantine(options, dirent.name, decoded);
        continue;
      }
      // files of an older release may be world-readable: give them this outbox's mode
      await chmodQuietly(file, options.fileMode, logger);
      entries.push({ seq: Number(match[1]), bytes: bytes.length, eventId: decoded[0]!.eventId });
    }
    let failedAtOpen = 0;
    const undeleted = await deleteEntries(options.dir, acked, () => {
      failedAtOpen += 1;
    });
    if (acked.length > 0) {
      logger.info(
        { dir: options.dir, acked: acked.length, deleted: acked.length - undeleted.length },
        `outbox: ${acked.length} entries acknowledged by an earlier run were still on disk; deleted ${acked.length - undeleted.length} (not sent again)`,
      );
    }
    const outbox = new DurableQueue(options, lock, entries, lost, { markerSeq, undeleted }, tuning);
    outbox.deleteFailureCount = failedAtOpen;
    if (undeleted.length === 0 && markerSeq !== undefined) await outbox.removeAckMarker();
    if (entries.length > 0) {
      logger.info(
        { dir: options.dir, queued: entries.length, bytes: outbox.storedBytes },
        "outbox: resuming events left by an earlier run",
      );
    }
    if (entries.length > options.maxEvents || outbox.storedBytes > options.maxBytes) {
      // Keep them all (they are unsent events); new ones are refused until the queue drains below the bounds.
      logger.warn(
        {
          queued: entries.length,
          bytes: outbox.storedBytes,
          max_events: options.maxEvents,
          max_bytes: options.maxBytes,
        },
        "outbox: existing events exceed the configured bounds",
      );
    }
    await outbox.warnIfDiskSmallerThanBound();
    return outbox;
  }

  /** Entries (events) on disk, ready to send. */
  get size(): number {
    return this.index.length;
  }

  /** Bytes on disk (file sizes, header and checksum included). */
  get bytes(): number {
    return this.storedBytes;
  }

  /** Events refused since open because the outbox was full (or closed). */
  get overflowed(): number {
    return this.overflowCount;
  }

  /**
   * Events lost since open: their write failed, or they were stored but their file vanished (the directory was
   * deleted) or no longer decodes.
   */
  get lost(): number {
    return this.lostCount;
  }

  /**
   * Acknowledged entries whose file is still on disk because deleting it failed (a read-only directory): never
   * sent again by this process; deleted by retries with backoff, and at the next open if the ack marker could be
   * written (it cannot be in a read-only directory: then the next open sends them again, at least once).
   */
  get undeleted(): number {
    return this.undeletedSeqs.length;
  }

  /** Deletions of acknowledged entries that failed since open (each retry of each entry counts). */
  get deleteFailures(): number {
    return this.deleteFailureCount;
  }

  /**
   * Appends one event durably: `entry` is its message, or its messages in sending order (the event, then its
   * snapshot). They are stored, refused or lost together. Resolves once the file is in place (or refused, or its
   * write failed); calls are applied in call order, so concurrent callers get sequence numbers in that order.
   */
  enqueue(entry: OutboxMessage | readonly OutboxMessage[]): Promise<EnqueueOutcome> {
    const messages: readonly OutboxMessage[] = Array.isArray(entry) ? entry : [entry as OutboxMessage];
    const eventId = messages[0]?.eventId;
    if (this.closed) return Promise.resolve(this.refuse(eventId, "the outbox is closed"));
    const record = encodeEntry(messages);
    const queuedEntries = this.index.length + this.reservedEntries;
    const queuedBytes = this.storedBytes + this.reservedBytes;
    if (queuedEntries + 1 > this.maxEvents) {
      return Promise.resolve(this.refuse(eventId, `it holds ${queuedEntries} of ${this.maxEvents} events`));
    }
    if (queuedBytes + record.length > this.maxBytes) {
      return Promise.resolve(
        this.refuse(eventId, `${queuedBytes} + ${record.length} bytes would exceed ${this.maxBytes}`),
      );
    }
    const seq = this.nextSeq++;
    this.reservedEntries += 1;
    this.reservedBytes += record.length;
    const outcome = new Promise<EnqueueOutcome>((done) => {
      this.toWrite.push({ seq, record, eventId, done });
    });
    this.startWriting();
    return outcome;
  }

  /**
   * The oldest entry, or undefined when empty. An entry whose file vanished or became unreadable since it was
   * stored is counted as lost (and quarantined when there is a file) and skipped.
   */
  async peek(): Promise<StoredEntry | undefined> {
    while (this.index.length > 0) {
      const entry = this.index[0]!;
      if (this.head?.seq === entry.seq) return this.head;
      const name = entryFileName(entry.seq);
      let decoded: OutboxMessage[] | string;
      let vanished = false;
      try {
        decoded = decodeEntry(await readFile(path.join(this.dir, name)));
      } catch (err) {
        vanished = errnoOf(err) === "ENOENT";
        decoded = `unreadable (${errorMessage(err)})`;
      }
      if (this.index[0] !== entry) continue; // acked or dropped meanwhile by a concurrent caller
      if (typeof decoded !== "string") {
        this.head = { seq: entry.seq, eventId: decoded[0]!.eventId, messages: decoded };
        return this.head;
      }
      this.index.shift();
      this.storedBytes -= entry.bytes;
      this.lostCount += 1;
      if (vanished) {
        this.logger.error(
          { event_id: entry.eventId, file: path.join(this.dir, name), lost: this.lostCount },
          `outbox: event ${entry.eventId ?? "?"} lost: its file vanished (ENOENT)`,
        );
      } else {
        await quarantine(
          { dir: this.dir, dirMode: this.dirMode, logger: this.logger },
          name,
          decoded,
          entry.eventId,
        );
      }
    }
    return undefined;
  }

  /** Deletes the head entry after the broker acknowledged it. Only the head can be acked: the queue is FIFO. */
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
    // No directory fsync here: if the unlink is lost in a crash the entry is sent once more, which QoS 1
    // consumers must tolerate anyway.
    const failure = await deleteEntry(this.dir, seq);
    if (failure === undefined) return;
    // Remembered, so this process never sends it again, and retried until it is gone.
    this.undeletedSeqs.push(seq);
    this.deleteFailed(failure, entry.eventId);
    await this.writeAckMarker(seq);
    this.scheduleDeleteRetry();
  }

  /** Resolves when the outbox holds at least one entry (at once if it already does) or `signal` aborts. */
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

  /** Resolves once every entry accepted so far is on disk (or its write failed). */
  async settled(): Promise<void> {
    while (this.writing) await this.writing;
  }

  /** Waits for pending writes and releases the lock; later enqueues are refused. The files stay for the next open. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.settled();
    for (const waiter of this.waiters) waiter();
    clearTimeout(this.deleteTimer);
    await this.deleting;
    if (this.undeletedSeqs.length > 0) await this.retryDeletes(); // one last try before the files are left
    if (this.undeletedSeqs.length > 0) {
      const marked = this.markerSeq !== undefined && this.markerSeq >= this.undeletedSeqs.at(-1)!;
      this.logger.error(
        { dir: this.dir, undeleted: this.undeletedSeqs.length, ack_marker: marked },
        marked
          ? `outbox: ${this.undeletedSeqs.length} acknowledged entries could not be deleted; the ack marker makes the next start delete them instead of sending them`
          : `outbox: ${this.undeletedSeqs.length} acknowledged entries could not be deleted, nor the ack marker written; the next start sends them again (at least once)`,
      );
    }
    await this.lock.release();
  }

  /** Counts a failed deletion and logs it: the first at once, then one line a minute with how many failed. */
  private deleteFailed(err: unknown, eventId?: string): void {
    this.deleteFailureCount += 1;
    const errno = errnoOf(err);
    const admitted = this.deleteRepeats.admit(errno);
    if (admitted === undefined) return;
    this.logger.warn(
      {
        dir: this.dir,
        errno,
        err,
        event_id: eventId,
        undeleted: this.undeletedSeqs.length,
        delete_failures: this.deleteFailureCount,
      },
      `outbox: could not delete acknowledged entries in ${this.dir} (${errno}): ${this.undeletedSeqs.length} left, never sent again, deletion retried${admitted.unlogged > 0 ? ` (${admitted.unlogged} more failures since the last line)` : ""}`,
    );
  }

  private scheduleDeleteRetry(): void {
    if (this.deleteTimer !== undefined || this.closed) return;
    this.deleteTimer = setTimeout(() => {
      this.deleteTimer = undefined;
      this.deleting = this.retryDeletes().finally(() => {
        this.deleting = undefined;
      });
    }, this.deleteDelayMs);
    this.deleteTimer.unref();
  }

  /** Tries every undeleted entry again; backs off while they fail, and removes the marker once all are gone. */
  private async retryDeletes(): Promise<void> {
    const attempted = [...this.undeletedSeqs];
    const stillThere = new Set(await deleteEntries(this.dir, attempted, (err) => this.deleteFailed(err)));
    const attemptedSet = new Set(attempted);
    // keep the ones that failed, and any acked meanwhile (not attempted yet)
    this.undeletedSeqs = this.undeletedSeqs.filter((seq) => stillThere.has(seq) || !attemptedSet.has(seq));
    if (this.undeletedSeqs.length > 0) {
      this.deleteDelayMs = Math.min(this.deleteDelayMs * 2, DELETE_RETRY_MAX_MS);
      if (this.markerSeq === undefined || this.markerSeq < this.undeletedSeqs.at(-1)!) {
        await this.writeAckMarker(this.undeletedSeqs.at(-1)!);
      }
      this.scheduleDeleteRetry();
      return;
    }
    this.deleteDelayMs = this.deleteRetryMs;
    this.deleteRepeats.clear();
    this.logger.info(
      { dir: this.dir, deleted: attempted.length, delete_failures: this.deleteFailureCount },
      `outbox: deleted ${attempted.length} acknowledged entries that could not be deleted before`,
    );
    await this.removeAckMarker();
  }

  /**
   * Records on disk that every entry up to `seq` was acknowledged, so the next open deletes rather than resends
   * them. Best effort: where the deletion failed for a read-only directory this write fails too (then the entries
   * are sent again after a restart: at least once, never lost).
   */
  private async writeAckMarker(seq: number): Promise<void> {
    const file = path.join(this.dir, ACKED_NAME);
    try {
      await writeFileAtomic(file, `${file}.tmp`, `${seq}\n`, { mode: this.fileMode, durable: true });
      this.markerSeq = seq;
    } catch {
      // the deletion's own line (once a minute) tells the reason; the retries write the marker again
    }
  }

  /** Once nothing acknowledged is left on disk the marker has no more to say. */
  private async removeAckMarker(): Promise<void> {
    if (this.markerSeq === undefined) return;
    try {
      await unlink(path.join(this.dir, ACKED_NAME));
      this.markerSeq = undefined;
    } catch (err) {
      if (errnoOf(err) === "ENOENT") this.markerSeq = undefined;
      // otherwise kept: it still holds nextSeq above it, and the next open tries again
    }
  }

  private refuse(eventId: string | undefined, why: string): "overflow" {
    this.overflowCount += 1;
    this.logger.error(
      { event_id: eventId, overflowed: this.overflowCount },
      `outbox: event ${eventId ?? "?"} refused: ${why}`,
    );
    return "overflow";
  }

  private startWriting(): void {
    if (this.writing) return;
    this.writing = this.writeGroups().finally(() => {
      this.writing = undefined;
      // an entry queued between the loop's last check and this callback still needs a writer
      if (this.toWrite.length > 0) this.startWriting();
    });
  }

  /** Commits queued entries group by group until none are left. */
  private async writeGroups(): Promise<void> {
    while (this.toWrite.length > 0) {
      const group = this.toWrite.splice(0, MAX_GROUP);
      const failures = await Promise.all(group.map((w) => this.writeTemp(w)));
      const renamed: PendingWrite[] = [];
      for (const [i, w] of group.entries()) {
        let failure = failures[i];
        if (failure === undefined) failure = await this.renameIntoPlace(w);
        if (failure === undefined) renamed.push(w);
        else await this.writeFailed(w, failure);
      }
      if (renamed.length > 0) {
        await fsyncDirectory(this.dir).catch((err: unknown) => {
          // the files are in place, only their names might not survive a power cut: keep and send them
          this.logger.error({ err }, "outbox: could not fsync the directory");
        });
      }
      for (const w of group) {
        this.reservedEntries -= 1;
        this.reservedBytes -= w.record.length;
      }
      for (const w of renamed) {
        this.index.push({ seq: w.seq, bytes: w.record.length, eventId: w.eventId });
        this.storedBytes += w.record.length;
      }
      if (renamed.length > 0) for (const waiter of this.waiters) waiter();
      const inPlace = new Set(renamed);
      for (const w of group) w.done(inPlace.has(w) ? "queued" : "failed");
    }
  }

  private tempPath(seq: number): string {
    return `${path.join(this.dir, entryFileName(seq))}.tmp`;
  }

  /** Writes the temp file; on ENOENT (the directory is gone) recreates the directory and tries once more. */
  private async writeTemp(w: PendingWrite): Promise<unknown> {
    for (let attempt = 0; ; attempt++) {
      try {
        await writeFileSynced(this.tempPath(w.seq), w.record, this.fileMode);
        return undefined;
      } catch (err) {
        if (attempt > 0 || errnoOf(err) !== "ENOENT") return err;
        await this.recreateDirectory();
      }
    }
  }

  /** Renames the temp file into place; if it vanished with the directory, writes it again once. */
  private async renameIntoPlace(w: PendingWrite): Promise<unknown> {
    for (let attempt = 0; ; attempt++) {
      try {
        await rename(this.tempPath(w.seq), path.join(this.dir, entryFileName(w.seq)));
        return undefined;
      } catch (err) {
        if (attempt > 0 || errnoOf(err) !== "ENOENT") return err;
        await this.recreateDirectory();
        const failure = await this.writeTemp(w);
        if (failure !== undefined) return failure;
      }
    }
  }

  private async writeFailed(w: PendingWrite, err: unknown): Promise<void> {
    this.lostCount += 1;
    this.logger.error(
      { event_id: w.eventId, errno: errnoOf(err), err, lost: this.lostCount },
      `outbox: event ${w.eventId ?? "?"} lost: could not write it to disk (${errnoOf(err)})`,
    );
    await unlink(this.tempPath(w.seq)).catch(() => undefined);
  }

  /**
   * The directory vanished (deleted by hand or by a cleanup job): make it again with its mode and lock, so the
   * events from now on are stored. The entries that went with it are counted as lost here, in one line, except
   * the head the drain already holds in memory (it is still delivered).
   */
  private recreateDirectory(): Promise<void> {
    this.recreating ??= (async () => {
      try {
        await makeDirectory(this.dir, this.dirMode);
        if (!(await this.lock.restore())) {
          this.logger.error(
            { dir: this.dir, lock_file: this.lock.file },
            "outbox: recreated directory is now locked by another process",
          );
        }
        const gone: IndexEntry[] = [];
        for (const entry of this.index) {
          if (entry.seq === this.head?.seq) continue;
          const exists = await access(path.join(this.dir, entryFileName(entry.seq))).then(
            () => true,
            () => false,
          );
          if (!exists) gone.push(entry);
        }
        if (gone.length > 0) {
          const goneSet = new Set(gone);
          const kept = this.index.filter((entry) => !goneSet.has(entry));
          this.index.splice(0, this.index.length, ...kept);
          for (const entry of gone) this.storedBytes -= entry.bytes;
          this.lostCount += gone.length;
        }
        this.logger.error(
          {
            dir: this.dir,
            lost_with_it: gone.length,
            lost_events: gone.map((entry) => entry.eventId),
            lost: this.lostCount,
          },
          `outbox: directory ${this.dir} had vanished; recreated it (${gone.length} queued events went with it and are lost)`,
        );
      } catch (err) {
        this.logger.error({ dir: this.dir, err }, "outbox: could not recreate the directory");
      }
    })().finally(() => {
      this.recreating = undefined;
    });
    return this.recreating;
  }

  /**
   * A `maxBytes` beyond the free space means the disk, not the bound, decides: events past the free space are
   * lost (ENOSPC) rather than refused. Say so at start, once, while someone is looking.
   */
  private async warnIfDiskSmallerThanBound(): Promise<void> {
    try {
      const fs = await statfs(this.dir);
      const free = fs.bavail * fs.bsize;
      const room = free + this.storedBytes;
      if (room < this.maxBytes) {
        this.logger.warn(
          { dir: this.dir, max_bytes: this.maxBytes, free_bytes: free },
          `outbox: max_bytes (${this.maxBytes}) exceeds the space this outbox can grow to on its filesystem (${room} bytes); events beyond that are lost, not queued`,
        );
      }
    } catch {
      // statfs is advisory here; the write path counts whatever really happens
    }
  }
}

/** Deletes one entry's file; the error when it is still there (ENOENT: it is gone, as wanted). */
async function deleteEntry(dir: string, seq: number): Promise<unknown> {
  try {
    await unlink(path.join(dir, entryFileName(seq)));
    return undefined;
  } catch (err) {
    return errnoOf(err) === "ENOENT" ? undefined : err;
  }
}

/** Deletes the entries' files; returns those still there, in order, calling `failed` for each. */
async function deleteEntries(
  dir: string,
  seqs: readonly number[],
  failed: (err: unknown) => void = () => undefined,
): Promise<number[]> {
  const left: number[] = [];
  for (const seq of seqs) {
    const failure = await deleteEntry(dir, seq);
    if (failure === undefined) continue;
    left.push(seq);
    failed(failure);
  }
  return left;
}

/** The ack marker's sequence number, or undefined when there is none (or it is unreadable: then nothing is skipped). */
async function readAckMarker(dir: string, logger: Logger): Promise<number | undefined> {
  const file = path.join(dir, ACKED_NAME);
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    if (errnoOf(err) !== "ENOENT")
      logger.warn({ file, err }, "outbox: could not read the ack marker; ignoring it");
    return undefined;
  }
  const seq = Number(text.trim());
  if (!/^\d+$/.test(text.trim()) || !Number.isSafeInteger(seq)) {
    // ignoring it can only mean sending acknowledged entries again, never skipping an unsent one
    logger.warn(
      { file, content: text.slice(0, 40) },
      "outbox: ack marker is not a sequence number; ignoring it",
    );
    return undefined;
  }
  return seq;
}

async function chmodQuietly(file: string, mode: number, logger: Logger): Promise<void> {
  await chmod(file, mode).catch((err: unknown) => {
    logger.warn({ file, err }, "outbox: could not set the file mode");
  });
}

async function quarantine(
  outbox: { dir: string; dirMode: number; logger: Logger },
  name: string,
  reason: string,
  eventId?: string,
): Promise<void> {
  const { dir, logger } = outbox;
  const quarantineDir = path.join(dir, QUARANTINE_DIR);
  const target = path.join(quarantineDir, `${name}.${Date.now()}`);
  try {
    await makeDirectory(quarantineDir, outbox.dirMode);
    await rename(path.join(dir, name), target);
    logger.warn(
      { file: path.join(dir, name), moved_to: target, reason, event_id: eventId },
      "outbox: quarantined a bad entry file",
    );
  } catch (err) {
    logger.warn(
      { file: path.join(dir, name), reason, event_id: eventId, err },
      "outbox: bad entry file could not be quarantined; ignoring it",
    );
  }
}
