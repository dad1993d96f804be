// Serializes work per key (a domain name): admin calls on one domain run one at a time, in
// arrival order, while calls on different domains run concurrently.
export class KeyedMutex {
  private readonly tails = new Map<string, Promise<void>>();

  /** Runs `fn` once every earlier holder of all `keys` is done. Keys are taken in sorted order. */
  async run<T>(keys: string | string[], fn: () => Promise<T> | T): Promise<T> {
    const sorted = [...new Set(Array.isArray(keys) ? keys : [keys])].sort();
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const waits = sorted.map((k) => this.tails.get(k) ?? Promise.resolve());
    for (const k of sorted) this.tails.set(k, held);
    try {
      await Promise.all(waits);
      return await fn();
    } finally {
      release();
      for (const k of sorted) if (this.tails.get(k) === held) this.tails.delete(k);
    }
  }
}
