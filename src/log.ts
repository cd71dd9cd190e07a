import { type Level, type Logger, pino } from "pino";

export type { Logger };

/**
 * One pino logger per process. JSON lines go to stderr so that stdout stays free for a command's own output
 * (summaries, `--json -`), which scripts over SSH can parse.
 */
export function createLogger(
  level: Level | "silent" = (process.env.STPMD_LOG_LEVEL as Level) ?? "info",
): Logger {
  return pino({ level, base: { pid: process.pid } }, pino.destination({ fd: 2, sync: true }));
}
