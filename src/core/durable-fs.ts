import { chmod, mkdir, open } from "node:fs/promises";

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
