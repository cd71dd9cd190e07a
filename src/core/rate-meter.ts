/**
 * Events per second over a sliding window (5 s by default): (n − 1) intervals over the time from the oldest event
 * in the window to *now*, so the rate is right after the first two events and decays when events stop coming.
 * One implementation for cameras' fps and the daemon's inspection rates.
 */
export class RateMeter {
  private readonly stamps: number[] = [];
  constructor(private readonly windowMs = 5000) {}

  add(n = 1, now = Date.now()): void {
    for (let i = 0; i < n; i++) this.stamps.push(now);
    this.trim(now);
  }

  rate(now = Date.now()): number {
    this.trim(now);
    const span = this.stamps.length >= 2 ? now - this.stamps[0]! : 0;
    return span > 0 ? ((this.stamps.length - 1) * 1000) / span : 0;
  }

  private trim(now: number): void {
    let drop = 0;
    while (drop < this.stamps.length && this.stamps[drop]! < now - this.windowMs) drop++;
    if (drop > 0) this.stamps.splice(0, drop);
  }
}
