import { spawn } from "node:child_process";
import notify from "systemd-notify";
import { errorMessage } from "../core/errors.js";
import type { Logger } from "../core/log.js";

/**
 * sd_notify for a Type=notify unit. READY and STATUS go through the `systemd-notify` package; WATCHDOG and
 * STOPPING, which that package cannot send, through the same `systemd-notify` tool directly. Outside systemd
 * (no NOTIFY_SOCKET) every call is a no-op. The unit needs NotifyAccess=all because the messages come from a
 * child process.
 */
export class SystemdNotifier {
  readonly enabled: boolean;
  /** systemd's watchdog interval in ms (WATCHDOG_USEC), or 0 when the unit has none. */
  readonly watchdogMs: number;

  constructor(
    private readonly logger: Logger,
    env: NodeJS.ProcessEnv = process.env,
  ) {
    this.enabled = Boolean(env.NOTIFY_SOCKET);
    const usec = Number(env.WATCHDOG_USEC ?? 0);
    const pidMatches = !env.WATCHDOG_PID || Number(env.WATCHDOG_PID) === process.pid;
    this.watchdogMs = this.enabled && pidMatches && usec > 0 ? usec / 1000 : 0;
  }

  ready(status: string): void {
    if (!this.enabled) return;
    notify({ ready: true, status }).catch((err: unknown) => this.warn("READY", err));
  }

  status(status: string): void {
    if (!this.enabled) return;
    notify({ status }).catch((err: unknown) => this.warn("STATUS", err));
  }

  watchdog(): void {
    this.raw("WATCHDOG=1");
  }

  stopping(): void {
    this.raw("STOPPING=1");
  }

  private raw(assignment: string): void {
    if (!this.enabled) return;
    const child = spawn("systemd-notify", [`--pid=${process.pid}`, assignment], { stdio: "ignore" });
    child.on("error", (err) => this.warn(assignment, err));
  }

  private warn(what: string, err: unknown): void {
    this.logger.warn(
      { err: typeof err === "string" ? err : errorMessage(err) },
      `systemd notification ${what} failed`,
    );
  }
}
