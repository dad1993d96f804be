// `qvm backup`'s progress on stderr: on a terminal one line redrawn in place (a bar, the percent,
// bytes done of the total, what is being read or written, and an estimate of the time left); on
// anything else plain lines, one per phase or volume and one per tenth done, so a log stays short.
import { formatSize } from "./sizes.js";

/** Where the progress goes: stderr, or a fake in tests. */
export interface ProgressOut {
  isTTY?: boolean;
  columns?: number;
  write(text: string): unknown;
}

/** Redraws on a terminal at most this often. */
const REDRAW_MS = 200;
/** No estimate before this much time has passed: the first seconds' rate says little. */
const ESTIMATE_AFTER_MS = 2000;
const BAR_WIDTH = 24;

const PHASE_WORDS: Record<string, string> = { verify: "verifying", read: "reading", write: "writing" };

export function formatDuration(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

export class BackupProgressBar {
  private phase = "";
  private item = "";
  private phaseStart = 0;
  private lastDraw = 0;
  private lastTenth = -1;
  private drawn = false;

  constructor(
    private readonly out: ProgressOut,
    private readonly now: () => number = Date.now,
  ) {}

  update(p: { phase: string; item: string; bytesDone: number; bytesTotal: number }): void {
    const t = this.now();
    const newPhase = p.phase !== this.phase;
    if (newPhase) {
      this.phase = p.phase;
      this.phaseStart = t;
      this.lastTenth = -1;
    }
    const newItem = p.item !== this.item;
    this.item = p.item;
    const fraction = p.bytesTotal > 0 ? Math.min(1, p.bytesDone / p.bytesTotal) : 0;
    const elapsed = t - this.phaseStart;
    const eta = elapsed >= ESTIMATE_AFTER_MS && p.bytesDone > 0 && fraction < 1 ? ((p.bytesTotal - p.bytesDone) * elapsed) / p.bytesDone : undefined;
    const words = `${PHASE_WORDS[p.phase] ?? p.phase}${p.item ? ` ${p.item}` : ""}`;
    const amounts = `${Math.floor(fraction * 100)}% ${formatSize(p.bytesDone)}/${formatSize(p.bytesTotal)}`;
    if (this.out.isTTY) {
      if (!newPhase && !newItem && fraction < 1 && t - this.lastDraw < REDRAW_MS) return;
      this.lastDraw = t;
      const filled = Math.round(fraction * BAR_WIDTH);
      const line = `[${"#".repeat(filled)}${".".repeat(BAR_WIDTH - filled)}] ${amounts}${eta === undefined ? "" : `, about ${formatDuration(eta)} left`}  ${words}`;
      this.out.write(`\r\x1b[K${line.slice(0, Math.max(20, (this.out.columns || 80) - 1))}`);
      this.drawn = true;
      return;
    }
    const tenth = Math.floor(fraction * 10);
    if (!newPhase && !newItem && tenth === this.lastTenth) return;
    this.lastTenth = tenth;
    this.out.write(`qvm: ${words}: ${amounts}${eta === undefined ? "" : `, about ${formatDuration(eta)} left`}\n`);
  }

  /** A line of its own (a note), above the bar. */
  say(line: string): void {
    this.clear();
    this.out.write(`${line}\n`);
  }

  /** Removes the bar (before the result or an error is printed). */
  clear(): void {
    if (this.drawn) this.out.write("\r\x1b[K");
    this.drawn = false;
    this.lastDraw = 0;
  }
}
