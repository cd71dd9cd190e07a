import { open, readFile, unlink } from "node:fs/promises";
import path from "node:path";
import { errorMessage, StpmdError } from "../core/errors.js";
import type { Logger } from "../core/log.js";
import { processRunning, processStartTicks } from "../core/process-identity.js";

/** Name of the lock file inside the outbox directory (a dot file, so it is never taken for an entry). */
export const LOCK_NAME = ".lock";

/** What the lock file holds: enough to tell a live holder from a stale one and to name it in the error. */
interface LockInfo {
  pid: number;
  /** The holder's start time in clock ticks since boot (/proc/<pid>/stat field 22), when known. */
  start_ticks?: string;
  /** Wall-clock start, for people reading the file or the error. */
  started: string;
}

function isRunning(info: LockInfo): Promise<boolean> {
  return processRunning(info.pid, info.start_ticks);
}

function parseLock(text: string): LockInfo | undefined {
  try {
    const value = JSON.parse(text) as Partial<LockInfo>;
    if (typeof value.pid !== "number" || !Number.isInteger(value.pid) || value.pid <= 0) return undefined;
    return {
      pid: value.pid,
      started: typeof value.started === "string" ? value.started : "?",
      ...(typeof value.start_ticks === "string" ? { start_ticks: value.start_ticks } : {}),
    };
  } catch {
    return undefined;
  }
}

/**
 * An exclusive claim on an outbox directory by one process. Two daemons on one outbox would send, ack and delete
 * each other's entries (and, sharing a client id, kick each other off the broker), so the second one must not
 * start. The claim is a file created with O_EXCL holding the pid and start time; a claim whose process is gone is
 * stale (a crash or kill -9 leaves it behind) and is taken over with a warning.
 */
export class QueueLock {
  private constructor(
    readonly file: string,
    private readonly content: string,
    private readonly fileMode: number,
  ) {}

  /** Throws an `ERR_OUTBOX_LOCKED` StpmdError naming the directory and the pid when a live process holds it. */
  static async acquire(dir: string, fileMode: number, logger: Logger): Promise<QueueLock> {
    const file = path.join(dir, LOCK_NAME);
    const info: LockInfo = {
      pid: process.pid,
      started: new Date(Date.now() - process.uptime() * 1000).toISOString(),
    };
    const ticks = await processStartTicks(process.pid);
    if (ticks !== undefined) info.start_ticks = ticks;
    const lock = new QueueLock(file, `${JSON.stringify(info)}\n`, fileMode);
    // Two rounds: a stale lock is removed in the first and created in the second; if another process wins that
    // race, the second round sees its live lock and refuses.
    for (let round = 0; round < 2; round++) {
      if (await lock.create()) return lock;
      const holder = await readHolder(file);
      if (holder === "gone") continue;
      if (holder !== undefined && (await isRunning(holder))) {
        throw new StpmdError(
          "ERR_OUTBOX_LOCKED",
          `outbox ${dir} is in use by process ${holder.pid} (started ${holder.started}; lock file ${file}): ` +
            "another stpmd runs on this outbox; give each daemon its own mqtt.outbox.dir and mqtt.client_id",
        );
      }
      logger.warn(
        { file, holder: holder?.pid ?? null },
        holder === undefined
          ? "outbox: taking over an unreadable lock file"
          : `outbox: taking over the stale lock of process ${holder.pid}, which is no longer running`,
      );
      await unlink(file).catch(() => undefined);
    }
    throw new StpmdError("ERR_OUTBOX_LOCKED", `outbox ${dir}: could not take the lock file ${file}`);
  }

  /**
   * Writes the lock again after the directory vanished (it went with it), so a second daemon started now still
   * sees it. Returns false, without throwing, if another process holds it by now.
   */
  async restore(): Promise<boolean> {
    if (await this.create()) return true;
    return (await readFile(this.file, "utf8").catch(() => "")) === this.content;
  }

  /** Removes the lock, but only if it is still ours. */
  async release(): Promise<void> {
    const current = await readFile(this.file, "utf8").catch(() => undefined);
    if (current === this.content) await unlink(this.file).catch(() => undefined);
  }

  /** True if the lock file was created by this call; false if one exists. Other errors are thrown. */
  private async create(): Promise<boolean> {
    let handle: Awaited<ReturnType<typeof open>>;
    try {
      handle = await open(this.file, "wx", this.fileMode);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "EEXIST") return false;
      throw new StpmdError("ERR_OUTBOX_LOCKED", `outbox lock file ${this.file}: ${errorMessage(err)}`, {
        cause: err,
      });
    }
    try {
      await handle.chmod(this.fileMode);
      await handle.writeFile(this.content);
      await handle.sync();
    } catch (err) {
      // a full disk: an empty lock left behind would make the next start take it over with a warning
      await handle.close();
      await unlink(this.file).catch(() => undefined);
      throw new StpmdError(
        "ERR_OUTBOX_LOCKED",
        `outbox lock file ${this.file} (mqtt.outbox.dir): could not write it: ${errorMessage(err)}`,
        { cause: err },
      );
    }
    await handle.close();
    return true;
  }
}

/**
 * The holder named in an existing lock file; undefined if it cannot be parsed, "gone" if it vanished meanwhile.
 * A lock created a moment ago may still be empty (O_EXCL create, then write), so an unparsable file is re-read
 * briefly before it is judged unreadable.
 */
async function readHolder(file: string): Promise<LockInfo | undefined | "gone"> {
  for (let attempt = 0; attempt < 5; attempt++) {
    let text: string;
    try {
      text = await readFile(file, "utf8");
    } catch {
      return "gone";
    }
    const info = parseLock(text);
    if (info !== undefined) return info;
    await new Promise((resolve) => setTimeout(resolve, 40));
  }
  return undefined;
}
