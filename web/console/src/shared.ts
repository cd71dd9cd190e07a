/**
 * What every page shares: the node's status (polled), the login, the live result stream and the command log.
 * One instance per page load, handed down through a Preact context.
 */
import { createContext } from "preact";
import { useContext } from "preact/hooks";
import type { ConsoleResultEvent, ConsoleStatus, SessionInfo } from "./api.js";

export type StreamState = "connecting" | "live" | "reconnecting";

export interface LogLine {
  at: string;
  text: string;
  ok: boolean;
}

export interface Shared {
  status: ConsoleStatus | null;
  refreshStatus(): Promise<void>;
  session: SessionInfo | null;
  setSession(session: SessionInfo | null): void;
  stream: StreamState;
  /** Calls `listener` with every result event until the returned function is called. */
  onResult(listener: (event: ConsoleResultEvent) => void): () => void;
  log(text: string, ok: boolean): void;
  /**
   * Runs a command as the logged-in operator, logs its answer and refreshes the status; resolves with the
   * refusal's one line (the server's, or "log in first"), or undefined when the command ran.
   */
  command(name: string, body: Record<string, unknown>): Promise<string | undefined>;
}

export const SharedContext = createContext<Shared | null>(null);

export function useShared(): Shared {
  const shared = useContext(SharedContext);
  if (shared === null) throw new Error("useShared outside the console's App");
  return shared;
}

/** Listeners of the result stream; the App feeds it from one EventSource. */
export class ResultBus {
  private readonly listeners = new Set<(event: ConsoleResultEvent) => void>();

  subscribe(listener: (event: ConsoleResultEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  emit(event: ConsoleResultEvent): void {
    for (const listener of this.listeners) listener(event);
  }
}
