// Time as a dependency: the core asks a Clock instead of reading Date.now() or starting timers
// itself, so the state machine can be tested with a fake one.

export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
  /** Resolves after `ms`; does not keep the process alive. */
  sleep(ms: number): Promise<void>;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  sleep: (ms) => new Promise((r) => setTimeout(r, ms).unref()),
};

/** ISO-8601 text of the clock's now, as records and events store it. */
export function isoNow(clock: Clock): string {
  return new Date(clock.now()).toISOString();
}
