/**
 * Errors a user can act on. Like Node's own errors, each carries a stable `code` and a message that names the
 * file, frame or key and the problem, so the CLI can print one line instead of a stack trace.
 */
export type StpmdErrorCode =
  | "ERR_INPUT_MISSING"
  | "ERR_INPUT_EMPTY"
  | "ERR_IMAGE_DECODE"
  | "ERR_MASK_SIZE"
  | "ERR_TEACHER_INVALID"
  | "ERR_TEACHER_UNSUPPORTED_OP"
  | "ERR_BUNDLE_INVALID"
  | "ERR_BUNDLE_MISMATCH"
  | "ERR_CONFIG_INVALID"
  | "ERR_OPTION_INVALID"
  | "ERR_TRAINING_DIVERGED"
  /** A second daemon tried to use an outbox directory that a running one holds. */
  | "ERR_OUTBOX_LOCKED";

export class StpmdError extends Error {
  readonly code: StpmdErrorCode;
  constructor(code: StpmdErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "StpmdError";
    this.code = code;
  }
}

export function isStpmdError(err: unknown): err is StpmdError {
  return err instanceof StpmdError;
}

/** The message of any thrown value, for log lines and one-line CLI errors. */
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
