// cloud-hypervisor's event monitor (`--event-monitor path=FILE`): CH appends each lifecycle event
// as pretty-printed JSON followed by a blank line ({timestamp, source, event, properties}), so the
// stream is JSON objects separated by "\n\n", not one per line. qvmd reads the file from where it
// last stopped, so a restarted qvmd that re-attaches still learns how the VM ended.
//
// The file is written by the VMM, which serves a hostile guest: each read is bounded, an event
// over MAX_EVENT_BYTES or one that is not the documented shape is skipped (and counted), and only
// the event's name and source are kept, clipped to printable text.
import { closeSync, fstatSync, openSync, readSync } from "node:fs";

/** Largest event kept; CH's are a few hundred bytes. */
export const MAX_EVENT_BYTES = 16 * 1024;
/** At most this much is read per poll; the rest waits for the next. */
const MAX_READ_BYTES = 256 * 1024;

export interface ChEvent {
  /** "vmm", "vm", "guest", "virtio-device"… */
  source: string;
  /** "booted", "shutdown", "panic"… */
  event: string;
}

export class ChEventParser {
  private pending = "";
  /** Events skipped as malformed or oversized. */
  skipped = 0;

  /** Feeds bytes; returns the whole events they complete. */
  push(text: string): ChEvent[] {
    this.pending += text;
    const out: ChEvent[] = [];
    for (;;) {
      const end = this.pending.indexOf("\n\n");
      if (end < 0) break;
      const chunk = this.pending.slice(0, end);
      this.pending = this.pending.slice(end + 2);
      if (!chunk.trim()) continue;
      const ev = parseEvent(chunk);
      if (ev) out.push(ev);
      else this.skipped++;
    }
    // An unterminated event past the bound is garbage: drop it and resynchronise at the next blank line.
    if (this.pending.length > MAX_EVENT_BYTES) {
      const next = this.pending.indexOf("\n\n", MAX_EVENT_BYTES);
      this.pending = next < 0 ? "" : this.pending.slice(next + 2);
      this.skipped++;
    }
    return out;
  }

  /** Forgets a partial event, as when the file starts over. */
  reset(): void {
    this.pending = "";
  }
}

function parseEvent(chunk: string): ChEvent | undefined {
  if (chunk.length > MAX_EVENT_BYTES) return undefined;
  let v: unknown;
  try {
    v = JSON.parse(chunk);
  } catch {
    return undefined;
  }
  if (!v || typeof v !== "object") return undefined;
  const { source, event } = v as { source?: unknown; event?: unknown };
  if (typeof source !== "string" || typeof event !== "string") return undefined;
  if (!/^[a-z0-9_/-]{1,64}$/i.test(source) || !/^[a-z0-9_/-]{1,64}$/i.test(event)) return undefined;
  return { source, event };
}

/** Reads new events from the file on each poll(); a missing file is no events yet. */
export class ChEventFile {
  private offset = 0;
  private readonly parser = new ChEventParser();
  private decoder = new TextDecoder("utf-8", { fatal: false });

  constructor(readonly file: string) {}

  get skipped(): number {
    return this.parser.skipped;
  }

  poll(): ChEvent[] {
    let fd: number;
    try {
      fd = openSync(this.file, "r");
    } catch {
      return [];
    }
    try {
      const size = fstatSync(fd).size;
      if (size < this.offset) {
        // Truncated: a new VMM started writing it; the old one's half-written event is not its start.
        this.offset = 0;
        this.parser.reset();
        this.decoder = new TextDecoder("utf-8", { fatal: false });
      }
      const want = Math.min(size - this.offset, MAX_READ_BYTES);
      if (want <= 0) return [];
      const buf = Buffer.alloc(want);
      const n = readSync(fd, buf, 0, want, this.offset);
      this.offset += n;
      return this.parser.push(this.decoder.decode(buf.subarray(0, n), { stream: true }));
    } finally {
      closeSync(fd);
    }
  }
}
