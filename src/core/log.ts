import { type Level, type Logger, pino } from "pino";

export type { Logger };

/** At these levels a logged error carries its stack; above them its type, message and code are enough. */
const STACK_LEVELS: ReadonlySet<string> = new Set(["debug", "trace"]);

/**
 * One pino logger per process. JSON lines go to stderr so that stdout stays free for a command's own output
 * (summaries, `--json -`), which scripts over SSH can parse.
 *
 * Conventions: a child logger binds `component` (what speaks: "inspector", "publisher", "outbox", "collector") or
 * `camera` (a camera's id); fields are snake_case or a camera's/event's own id; an error is logged as the error
 * object under `err` — its type, message and code, plus the stack at debug level.
 */
export function createLogger(
  level: Level | "silent" = (process.env.STPMD_LOG_LEVEL as Level) ?? "info",
): Logger {
  const withStack = STACK_LEVELS.has(level);
  return pino(
    {
      level,
      base: { pid: process.pid },
      serializers: {
        err: (err: unknown) => {
          if (!(err instanceof Error)) return err;
          const full = pino.stdSerializers.err(err);
          return withStack
            ? full
            : { type: full.type, message: full.message, ...("code" in err ? { code: err.code } : {}) };
        },
      },
    },
    pino.destination({ fd: 2, sync: true }),
  );
}
