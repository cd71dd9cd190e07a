import { execFile } from "node:child_process";
import { mkdir } from "node:fs/promises";
import path from "node:path";
import type { TestContext } from "node:test";
import { promisify } from "node:util";
import { tempDir } from "./tiny-data.js";

const run = promisify(execFile);

/**
 * Runs `body` with a fresh tmpfs of `size` (e.g. "64k") mounted, for tests that fill a real filesystem; unmounts
 * it after. Skips the test, saying why, where mounting is not allowed (not root, a container without CAP_SYS_ADMIN).
 */
export async function withTmpfs(
  t: TestContext,
  size: string,
  body: (mountPoint: string) => Promise<void>,
): Promise<void> {
  const mountPoint = path.join(await tempDir("stpmd-tmpfs-"), "mnt");
  await mkdir(mountPoint);
  try {
    await run("mount", ["-t", "tmpfs", "-o", `size=${size},mode=0755`, "tmpfs", mountPoint]);
  } catch (err) {
    t.skip(`cannot mount a tmpfs here (${(err as Error).message.split("\n")[0]})`);
    return;
  }
  try {
    await body(mountPoint);
  } finally {
    await run("umount", [mountPoint]).catch(() => undefined);
  }
}
