// Ownership of resources: everything qvmd makes for a domain (a relay, an agent client, a
// listener, later a network link or a window stream) is registered here the moment it exists, and
// released once, in reverse order, on every exit path. A release that fails is reported, not
// thrown: the others must still run.

/** Something that can be let go of; `dispose` is called at most once by its owner. */
export interface Disposable {
  dispose(): void | Promise<void>;
}

/** A disposable made from a function, for resources without a class of their own. */
export function toDisposable(fn: () => void | Promise<void>): Disposable {
  return { dispose: fn };
}

export class DisposableStore implements Disposable {
  private readonly items: Array<{ what: string; d: Disposable }> = [];
  private disposed = false;

  /** @param onError told about a release that failed (`what` names the resource). */
  constructor(private readonly onError: (what: string, err: Error) => void = () => {}) {}

  /** Takes ownership of `d`. Adding to a store already disposed releases `d` at once. */
  add<T extends Disposable>(what: string, d: T): T {
    if (this.disposed) {
      void this.release({ what, d });
      return d;
    }
    this.items.push({ what, d });
    return d;
  }

  /** What the store holds now, by name, in the order added (for leak checks and diagnostics). */
  get held(): string[] {
    return this.items.map((i) => i.what);
  }

  get isDisposed(): boolean {
    return this.disposed;
  }

  /** Releases everything held, newest first. Later adds are released at once. */
  async dispose(): Promise<void> {
    this.disposed = true;
    while (this.items.length) await this.release(this.items.pop()!);
  }

  private async release(item: { what: string; d: Disposable }): Promise<void> {
    try {
      await item.d.dispose();
    } catch (err) {
      this.onError(item.what, err as Error);
    }
  }
}
