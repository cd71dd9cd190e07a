/**
 * The folder `--report DIR` writes: checked before the (long) scoring starts, filled in a sibling temp folder and
 * renamed into place at the end, so a folder named DIR is always a finished report — never one an interrupted run
 * left half-written (a killed run leaves its `DIR.tmp-*` beside it, which may be deleted).
 */
import { randomBytes } from "node:crypto";
import { mkdtemp, readdir, rename, rm, stat } from "node:fs/promises";
import path from "node:path";
import { errorMessage, StpmdError } from "../core/errors.js";

/** The file that marks a folder as an eval report (and holds its numbers), so a rerun may replace it. */
export const REPORT_MARKER = "stpmd-eval.json";

export interface ReportStaging {
  /** Where the finished report will be. */
  dir: string;
  /** The temp folder it is written into. */
  staging: string;
}

/**
 * Checks that `dir` can become a report and creates its temp folder. `dir` may be new, an empty folder or an
 * earlier report (it is replaced); a file, or a folder holding something else, is refused rather than lost.
 */
export async function openReportDir(dir: string, option = "--report"): Promise<ReportStaging> {
  const target = path.resolve(dir);
  const fail = (problem: string): StpmdError =>
    new StpmdError("ERR_OPTION_INVALID", `${option} ${dir}: ${problem}`);
  const existing = await stat(target).catch(() => undefined);
  if (existing && !existing.isDirectory())
    throw fail("is a file, not a folder; name a folder for the report");
  if (existing) {
    const entries = await readdir(target).catch((err) => {
      throw fail(`cannot be read (${errorMessage(err)})`);
    });
    if (entries.length > 0 && !entries.includes(REPORT_MARKER)) {
      throw fail(
        `folder exists and is not an stpmd eval report (no ${REPORT_MARKER}); name a new folder or an earlier report to replace`,
      );
    }
  }
  // Missing parents are not created: Node's recursive mkdir never returns under /proc (measured: Node 20), and a
  // mistyped parent is better named than made.
  const parent = path.dirname(target);
  const parentStat = await stat(parent).catch(() => undefined);
  if (!parentStat?.isDirectory()) throw fail(`${parent} is not an existing folder`);
  try {
    const staging = await mkdtemp(`${target}.tmp-`);
    return { dir: target, staging };
  } catch (err) {
    throw fail(`cannot write there (${errorMessage(err)})`);
  }
}

/** Puts the finished staging folder in place of `dir` (an earlier report there is replaced). */
export async function publishReportDir(report: ReportStaging): Promise<void> {
  const old = `${report.dir}.old-${randomBytes(4).toString("hex")}`;
  const exists = await stat(report.dir).then(
    () => true,
    () => false,
  );
  if (exists) await rename(report.dir, old);
  try {
    await rename(report.staging, report.dir);
  } catch (err) {
    // the earlier report goes back rather than being left under a name nobody looks for
    if (exists) await rename(old, report.dir);
    throw err;
  }
  if (exists) await rm(old, { recursive: true, force: true });
}

/** Removes the staging folder of a report that will not be finished. */
export async function abandonReportDir(report: ReportStaging): Promise<void> {
  await rm(report.staging, { recursive: true, force: true });
}
