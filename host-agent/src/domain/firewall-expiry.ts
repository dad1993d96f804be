// Firewall rules that expire (`expire=`, `qvm firewall VM add ... expire=+3600`): when the
// nearest expiry of a domain's rules passes, its rules in force change without anyone setting
// them, so firewall-changed is published again and the netvm drops the rule (Qubes sets a timer
// for the nearest expiry when it saves the rules). One timer per domain with a rule still to
// expire, rescheduled whenever that domain's rules change, is added (a clone keeps its source's
// rules) or removed.
import type { Clock } from "../base/clock.js";
import type { EventBus } from "../base/events.js";

/** Timers as a dependency, so the expiry can be tested with a fake clock. */
export interface Timers {
  /** Calls `fn` after `ms`; returns the cancel function. Must not keep the process alive. */
  after(ms: number, fn: () => void): () => void;
}

export const systemTimers: Timers = {
  after(ms, fn) {
    const t = setTimeout(fn, ms);
    t.unref();
    return () => clearTimeout(t);
  },
};

/** setTimeout's longest delay (about 24.8 days); a later expiry is waited for in steps. */
const MAX_DELAY_MS = 2 ** 31 - 1;

export interface FirewallExpiryDeps {
  events: EventBus;
  clock: Clock;
  /** When (UNIX seconds) the domain's next rule expires; undefined when none will, or no such domain. */
  nextExpiry(domain: string): number | undefined;
  /** Every domain, for the timers at start. */
  domains(): string[];
  timers?: Timers;
}

export class FirewallExpiry {
  private readonly pending = new Map<string, { atMs: number; cancel: () => void }>();
  private unsubscribe: (() => void) | undefined;

  constructor(private readonly d: FirewallExpiryDeps) {}

  /** Schedules every domain's next expiry and follows the changes from now on. */
  start(): void {
    if (this.unsubscribe) return;
    this.unsubscribe = this.d.events.subscribe((ev) => {
      if (ev.type === "firewall-changed" || ev.type === "domain-add") this.schedule(ev.domain);
      else if (ev.type === "domain-delete") this.cancel(ev.domain);
    });
    for (const name of this.d.domains()) this.schedule(name);
  }

  /** Stops every timer (qvmd is exiting). */
  close(): void {
    this.unsubscribe?.();
    this.unsubscribe = undefined;
    for (const name of [...this.pending.keys()]) this.cancel(name);
  }

  /** When the domain's timer fires (ms since the epoch), for tests and diagnosis. */
  scheduledAt(domain: string): number | undefined {
    return this.pending.get(domain)?.atMs;
  }

  private schedule(domain: string): void {
    this.cancel(domain);
    const at = this.d.nextExpiry(domain);
    if (at === undefined) return;
    const atMs = at * 1000;
    const delay = Math.min(Math.max(atMs - this.d.clock.now(), 0), MAX_DELAY_MS);
    const cancel = (this.d.timers ?? systemTimers).after(delay, () => this.fire(domain, atMs));
    this.pending.set(domain, { atMs, cancel });
  }

  private cancel(domain: string): void {
    this.pending.get(domain)?.cancel();
    this.pending.delete(domain);
  }

  private fire(domain: string, atMs: number): void {
    if (this.pending.get(domain)?.atMs !== atMs) return;
    this.pending.delete(domain);
    // A far expiry is waited for in steps; an early wake-up waits again.
    if (this.d.clock.now() < atMs) return this.schedule(domain);
    // The subscription above schedules the next expiry.
    this.d.events.publish("firewall-changed", domain, { reason: "expired" });
  }
}
