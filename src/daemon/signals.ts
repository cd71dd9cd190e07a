/**
 * The signals `stpmd run` answers (SIGTERM and SIGINT stop, SIGHUP reloads), held from the entry's first line.
 * Without a handler Node ends the process at once on each of them, and loading the CLI's modules takes about half a
 * second (measured: a SIGHUP 500 ms after spawn killed `stpmd run` on 2 busy cores, one at 700 ms did not). So the
 * entry calls {@link holdSignals} before it loads the CLI, and the daemon's handlers, once installed with
 * {@link handleSignals}, receive what arrived meanwhile, in order.
 */
export const DAEMON_SIGNALS = ["SIGTERM", "SIGINT", "SIGHUP"] as const;
export type DaemonSignal = (typeof DAEMON_SIGNALS)[number];

const held: DaemonSignal[] = [];
const holders = new Map<DaemonSignal, () => void>();

/** From now on each daemon signal is recorded instead of ending the process. */
export function holdSignals(): void {
  for (const signal of DAEMON_SIGNALS) {
    if (holders.has(signal)) continue;
    const hold = (): void => {
      held.push(signal);
    };
    holders.set(signal, hold);
    process.on(signal, hold);
  }
}

/** Installs the handlers, then hands them the signals held until now, in arrival order. */
export function handleSignals(handlers: Record<DaemonSignal, () => void>): void {
  for (const signal of DAEMON_SIGNALS) {
    process.on(signal, handlers[signal]);
    const hold = holders.get(signal);
    if (hold !== undefined) process.off(signal, hold);
  }
  holders.clear();
  for (const signal of held.splice(0)) handlers[signal]();
}
