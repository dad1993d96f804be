// Per-domain throttling of what a domain can make qvmd write: log lines and events about its
// dropped and denied calls. A domain decides how many calls it makes, so without a bound one
// domain could fill qvmd's log (or trip journald's rate limit and so hide everyone else's lines)
// and the event feed. At most one report a second per domain; what is held back in between is
// counted, and the count is reported when the second is over (or with the next report).

export interface Held<T> {
  /** How many items were held back since the last report. */
  count: number;
  /** The last of them. */
  last: T;
}

export class PerDomainThrottle<T> {
  private readonly state = new Map<string, { at: number; held?: Held<T>; timer?: NodeJS.Timeout }>();

  /**
   * `report(domain, item, held)`: `item` is what to report now (undefined for a summary of what
   * was held back when the second ended); `held` what was held back before it, if anything.
   */
  constructor(
    private readonly report: (domain: string, item: T | undefined, held: Held<T> | undefined) => void,
    private readonly intervalMs = 1000,
    private readonly now: () => number = Date.now,
  ) {}

  note(domain: string, item: T): void {
    const now = this.now();
    const s = this.state.get(domain);
    if (s && now - s.at < this.intervalMs) {
      s.held = { count: (s.held?.count ?? 0) + 1, last: item };
      if (!s.timer) {
        s.timer = setTimeout(() => this.flush(domain), Math.max(0, s.at + this.intervalMs - now));
        s.timer.unref();
      }
      return;
    }
    if (s?.timer) clearTimeout(s.timer);
    this.state.set(domain, { at: now });
    this.report(domain, item, s?.held);
  }

  /** Forgets a domain (it stopped): what it still had held back is reported now. */
  forget(domain: string): void {
    this.flush(domain);
    const s = this.state.get(domain);
    if (s?.timer) clearTimeout(s.timer);
    this.state.delete(domain);
  }

  private flush(domain: string): void {
    const s = this.state.get(domain);
    if (!s) return;
    if (s.timer) clearTimeout(s.timer);
    s.timer = undefined;
    if (!s.held) return;
    const held = s.held;
    s.held = undefined;
    s.at = this.now();
    this.report(domain, undefined, held);
  }
}
