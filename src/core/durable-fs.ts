import { chmod, mkdir, open, rename, unlink } from "node:fs/promises";
import path from "node:path";

/**
 * Permission bits of files the daemon keeps (outbox entries, collected frames): they hold production images, so
 * the owner writes, the group (e.g. an operator or retraining account) reads, others get nothing. The schema's
 * defaults are the same; these apply to configs built in code.
 */
export const DEFAULT_FILE_MODE = 0o640;
/** Permission bits of the directories holding those files (see {@link DEFAULT_FILE_MODE}). */
export const DEFAULT_DIR_MODE = 0o750;

/** Parses an octal mode as written in the config (`"0640"`, `"640"`); the schema has already checked the form. */
export function parseMode(text: string): number {
  return Number.parseInt(text, 8);
}

/**
 * Writes a file and fsyncs it, so a later rename publishes complete contents even across a power cut. With
 * `mode`, the file gets exactly those bits: open()'s mode is filtered by the umask, so it is set again explicitly.
 */
export async function writeFileSynced(file: string, data: Uint8Array | string, mode?: number): Promise<void> {
  const handle = await open(file, "w", mode);
  try {
    if (mode !== undefined) await handle.chmod(mode);
    await handle.writeFile(data);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Makes a rename durable: without it, a power cut can leave the directory without the new name. */
export async function fsyncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Creates `dir` (and missing parents) and gives `dir` itself exactly `mode`, whatever the umask, also when it
 * already existed (an upgrade must tighten a directory an older version created world-readable).
 */
export async function makeDirectory(dir: string, mode: number): Promise<void> {
  await mkdir(dir, { recursive: true, mode });
  await chmod(dir, mode);
}

/**
 * Replaces `file` whole or not at all: written to `temp` (a sibling), fsynced, renamed over it, and with `durable`
 * the directory fsynced too. A failed write (a full disk) removes the temp file, so nothing partial is left.
 */
export async function writeFileAtomic(
  file: string,
  temp: string,
  data: Uint8Array | string,
  options: { mode?: number; durable?: boolean } = {},
): Promise<void> {
  try {
    await writeFileSynced(temp, data, options.mode);
    await rename(temp, file);
  } catch (err) {
    await unlink(temp).catch(() => undefined);
    throw err;
  }
  if (options.durable) await fsyncDirectory(path.dirname(file));
}
