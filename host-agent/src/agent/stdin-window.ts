// Stdin of a process on an Exec data channel, sent with a window: at most `window` payload bytes
// are in flight before the guest's helper acknowledges them (STDIN_ACK frames), so the guest's
// vsock receive buffer never fills. When it did fill while the guest was also sending,
// vhost-device-vsock 0.3 stopped forwarding the guest's output for good (its event loop only
// flushes a connection's pending output on a wake-up that is write-ready and not read-ready, and
// a full receive buffer kept the connection read-ready forever): docs/agent-protocol.md, "Data
// channel". A window of 0 is an older helper that does not acknowledge: frames go out unmetered.
import type { Socket } from "node:net";
import { FRAME_HEADER_BYTES } from "@qvm/protocol/qrexec";

export class StdinWindowError extends Error {}

export class StdinWindow {
  private inFlight = 0;
  private readonly queue: Buffer[] = [];
  /** Write callbacks waiting until everything queued before them is handed to the socket. */
  private readonly waiting: { until: number; cb: () => void }[] = [];
  private queued = 0;
  private sent = 0;
  private draining = false;

  constructor(
    private readonly socket: Socket,
    readonly window: number,
  ) {
    socket.once("close", () => this.release());
  }

  /** Queues whole frames; `cb` runs once they are all in the socket (or the socket closed). */
  write(frames: Buffer[], cb: () => void): void {
    if (this.socket.destroyed || this.socket.writableEnded) return cb();
    for (const f of frames) this.queue.push(f);
    this.queued += frames.length;
    this.waiting.push({ until: this.queued, cb });
    this.pump();
  }

  /** The helper wrote (or dropped) `bytes` more of stdin. Throws when it acknowledges more than was sent. */
  ack(bytes: number): void {
    if (this.window === 0) throw new StdinWindowError("acknowledged stdin on a channel without a window");
    if (bytes > this.inFlight) throw new StdinWindowError(`acknowledged ${bytes} stdin bytes with only ${this.inFlight} in flight`);
    this.inFlight -= bytes;
    this.pump();
  }

  /** Payload bytes sent and not yet acknowledged (for tests and diagnosis). */
  get unacknowledged(): number {
    return this.inFlight;
  }

  private pump(): void {
    while (!this.draining && this.queue.length) {
      const frame = this.queue[0]!;
      const payload = frame.length - FRAME_HEADER_BYTES;
      if (this.window && payload > 0 && this.inFlight + payload > this.window) break;
      this.queue.shift();
      this.sent++;
      if (this.window) this.inFlight += payload;
      if (!this.socket.write(frame)) {
        this.draining = true;
        this.socket.once("drain", () => {
          this.draining = false;
          this.pump();
        });
      }
    }
    while (this.waiting.length && this.waiting[0]!.until <= this.sent && !this.draining) this.waiting.shift()!.cb();
  }

  /** The channel closed: nothing more goes out, and no writer waits for it. */
  private release(): void {
    this.queue.length = 0;
    for (const w of this.waiting.splice(0)) w.cb();
  }
}
