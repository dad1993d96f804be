// qvmd's event feed for the web shell, kept up across a qvmd restart. A WatchEvents stream ends
// when qvmd stops (SIGTERM cancels it; a crash drops the connection); the feed then says `lost`,
// subscribes again (100 ms, then longer, at most every 2 s), and once a new stream is open and
// qvmd answers (GetDaemonInfo), says `back`: whatever a listener holds from before (the domain
// list, the window list, the clipboard's state) is stale, and the window streams it relayed have
// ended. One feed is shared by its listeners: one stream while anyone listens, none otherwise.
import type { AdminClient, adminV1 } from "@qvm/protocol";

/** The admin calls the feed makes (an AdminClient; tests pass a fake). */
export type EventFeedAdmin = Pick<AdminClient, "watchEvents" | "getDaemonInfo">;

export interface FeedListener {
  /** An event of qvmd's feed. */
  event?(ev: adminV1.Event): void;
  /** The stream ended: qvmd stopped (or restarts). */
  lost?(): void;
  /** qvmd answers again, with a new stream: everything known from before is stale. */
  back?(): void;
}

/** Waits between attempts to subscribe again, the last repeated. */
export const FEED_RETRY_MS: readonly number[] = [100, 250, 500, 1000, 2000];
/** How long qvmd has to answer the probe that says it is back. */
const PROBE_TIMEOUT_MS = 3000;

type Stream = ReturnType<AdminClient["watchEvents"]>;

export class AdminEventFeed {
  private readonly listeners = new Set<FeedListener>();
  private call: Stream | undefined;
  private timer: NodeJS.Timeout | undefined;
  private down = false;
  private attempt = 0;

  constructor(
    private readonly admin: EventFeedAdmin,
    private readonly retryMs: readonly number[] = FEED_RETRY_MS,
  ) {}

  /** Whether the last stream ended and no new one has been confirmed yet. */
  get isDown(): boolean {
    return this.down;
  }

  /** Listens until the returned function is called; the first listener opens the stream. */
  subscribe(listener: FeedListener): () => void {
    this.listeners.add(listener);
    if (this.listeners.size === 1 && !this.call && !this.timer) this.open();
    return () => {
      this.listeners.delete(listener);
      if (this.listeners.size === 0) this.stop();
    };
  }

  private emit(fn: (l: FeedListener) => void): void {
    for (const l of [...this.listeners]) fn(l);
  }

  private open(): void {
    const call = this.admin.watchEvents({ domain: "" });
    this.call = call;
    call.on("data", (ev: adminV1.Event) => {
      if (this.call === call) this.emit((l) => l.event?.(ev));
    });
    const failed = () => {
      if (this.call !== call) return;
      this.call = undefined;
      call.cancel();
      if (!this.down) {
        this.down = true;
        this.emit((l) => l.lost?.());
      }
      this.retry();
    };
    call.on("error", failed);
    call.on("end", failed);
    if (!this.down) return;
    // A stream after a loss: qvmd is back once it answers on the same connection.
    this.admin.getDaemonInfo({}, { timeoutMs: PROBE_TIMEOUT_MS }).then(
      () => {
        if (this.call !== call || !this.down) return;
        this.down = false;
        this.attempt = 0;
        this.emit((l) => l.back?.());
      },
      () => failed(),
    );
  }

  private retry(): void {
    if (this.listeners.size === 0) return;
    const ms = this.retryMs[Math.min(this.attempt, this.retryMs.length - 1)] ?? 1000;
    this.attempt++;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (this.listeners.size > 0) this.open();
    }, ms);
  }

  private stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    const call = this.call;
    this.call = undefined;
    call?.cancel();
    this.down = false;
    this.attempt = 0;
  }
}
