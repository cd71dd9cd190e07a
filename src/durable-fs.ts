import { open } from "node:fs/promises";

/** Writes a file and fsyncs it, so a later rename publishes complete contents even across a power cut. */
export async function writeFileSynced(file: string, data: Uint8Array | string): Promise<void> {
  const handle = await open(file, "w");
  try {
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
