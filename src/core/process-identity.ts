import { readFile } from "node:fs/promises";

/**
 * Start time of `pid` in clock ticks since boot, or undefined where /proc is not available. Together with the pid
 * it identifies a process: after a reboot, or once pids wrap, a pid left behind by a dead process may belong to an
 * unrelated one, which must not keep what the dead one left (a lock, a temp directory) alive forever.
 */
export async function processStartTicks(pid: number): Promise<string | undefined> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, "utf8");
    // the command name (field 2) may contain spaces and parentheses, so count fields after its last ')'
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return fields[19]; // field 22 overall; fields[0] is field 3 (state)
  } catch {
    return undefined;
  }
}

/**
 * Whether the process `pid` that started at `startTicks` ({@link processStartTicks}) still runs. Without
 * `startTicks`, any process with that pid counts: when in doubt, a process is taken to be alive.
 */
export async function processRunning(pid: number, startTicks?: string): Promise<boolean> {
  try {
    process.kill(pid, 0);
  } catch (err) {
    // EPERM: it exists but belongs to another user, which is still alive
    if ((err as NodeJS.ErrnoException).code !== "EPERM") return false;
  }
  if (startTicks === undefined) return true;
  const ticks = await processStartTicks(pid);
  return ticks === undefined || ticks === startTicks;
}

/**
 * This process's tag for the names of what it leaves while it works (temp directories): `<pid>.<start ticks>`,
 * or `<pid>` where /proc is not available. {@link parseProcessTag} and {@link processRunning} tell later whether
 * its owner still runs.
 */
export async function ownProcessTag(): Promise<string> {
  return processTag(process.pid, await processStartTicks(process.pid));
}

export function processTag(pid: number, startTicks: string | undefined): string {
  return startTicks === undefined ? String(pid) : `${pid}.${startTicks}`;
}

/** The pid and start ticks of a {@link processTag}, or undefined when `tag` is not one. */
export function parseProcessTag(tag: string): { pid: number; startTicks?: string } | undefined {
  const match = /^(\d+)(?:\.(\d+))?$/.exec(tag);
  if (match === null) return undefined;
  const pid = Number(match[1]);
  if (!Number.isSafeInteger(pid) || pid <= 0) return undefined;
  return match[2] === undefined ? { pid } : { pid, startTicks: match[2] };
}
