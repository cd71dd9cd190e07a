/**
 * Decides which occurrences of a repeating problem get a log line: the first of each distinct problem, then at most
 * one per `intervalMs`, telling how many went unlogged meanwhile. A persistent fault (a full disk, a dead inference
 * thread) repeats at the frame rate; without this it would write a line per frame. At most `maxProblems` distinct
 * problems are remembered; beyond that the memory starts over (still a line each, bounded). An infinite
 * `intervalMs` tells each distinct problem once (a lasting state rather than a failure).
 */
export class RepeatLimiter {
  private readonly lastLogged = new Map<string, { at: number; unlogged: number }>();

  constructor(
    private readonly intervalMs = 60_000,
    private readonly maxProblems = 64,
  ) {}

  /** Undefined: stay silent. Otherwise log now, mentioning `unlogged` repeats since this problem's last line. */
  admit(problem: string, now = Date.now()): { unlogged: number } | undefined {
    const last = this.lastLogged.get(problem);
    if (last !== undefined && now - last.at < this.intervalMs) {
      last.unlogged += 1;
      return undefined;
    }
    if (last === undefined && this.lastLogged.size >= this.maxProblems) this.lastLogged.clear();
    this.lastLogged.set(problem, { at: now, unlogged: 0 });
    return { unlogged: last?.unlogged ?? 0 };
  }

  /** Forgets every problem (they were resolved): the next occurrence is logged at once. */
  clear(): void {
    this.lastLogged.clear();
  }
}
