import { mkdir, readFile } from "node:fs/promises";
import path from "node:path";
import { DEFAULT_DIR_MODE, DEFAULT_FILE_MODE, writeFileAtomic } from "../../core/durable-fs.js";
import { errorMessage } from "../../core/errors.js";
import type { Logger } from "../../core/log.js";

/** bdSeq is 0–255 and wraps (Sparkplug 3.0, "bdSeq"). */
const BDSEQ_MODULO = 256;

/**
 * The birth/death sequence number of the edge node, kept in one small file: Sparkplug requires every MQTT CONNECT
 * to carry the previous connect's bdSeq plus one, across restarts too, so a host can tell a late NDEATH of an old
 * session from the death of the current one. The number is written (atomically: temp file, fsync, rename, fsync of
 * the directory) before the CONNECT that uses it, so a crash right after connecting never reuses it.
 */
export class BdSeqStore {
  readonly file: string;
  private readonly logger: Logger;
  /** The bdSeq of the last connect, once read or handed out; kept so a failing disk does not repeat numbers. */
  private last: number | undefined;

  constructor(file: string, logger: Logger) {
    this.file = file;
    this.logger = logger;
  }

  /** The bdSeq of the next connect, already stored. A write failure is logged; the number is still handed out. */
  async next(): Promise<number> {
    const last = this.last ?? (await this.read());
    const next = last === undefined ? 0 : (last + 1) % BDSEQ_MODULO;
    this.last = next;
    try {
      await mkdir(path.dirname(this.file), { recursive: true, mode: DEFAULT_DIR_MODE });
      await writeFileAtomic(this.file, `${this.file}.tmp`, `${next}\n`, {
        mode: DEFAULT_FILE_MODE,
        durable: true,
      });
    } catch (err) {
      this.logger.error(
        { file: this.file, bd_seq: next, err },
        `sparkplug: could not store bdSeq ${next} in ${this.file} (${errorMessage(err)}); a restart may reuse it`,
      );
    }
    return next;
  }

  /** The stored bdSeq, or undefined when there is none (first start) or it is unreadable (logged). */
  private async read(): Promise<number | undefined> {
    let text: string;
    try {
      text = await readFile(this.file, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") {
        this.logger.warn({ file: this.file, err }, "sparkplug: cannot read the bdSeq file; starting at 0");
      }
      return undefined;
    }
    const value = Number(text.trim());
    if (!Number.isInteger(value) || value < 0 || value >= BDSEQ_MODULO) {
      this.logger.warn(
        { file: this.file, content: text.slice(0, 40) },
        "sparkplug: bdSeq file does not hold a number 0-255; starting at 0",
      );
      return undefined;
    }
    return value;
  }
}
