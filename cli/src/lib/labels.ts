// Label colors for `qvm ls`, from the admin API contract (protocol/src/labels.ts, imported alone so
// start-up does not load gRPC). An unknown label is printed uncolored.
import { LABELS } from "@qvm/protocol/labels";

const LABEL_COLORS: Readonly<Record<string, string>> = LABELS;

/** `text` in the label's color as a 24-bit ANSI foreground; unchanged for an unknown label. */
export function colorize(text: string, label: string): string {
  const hex = LABEL_COLORS[label];
  if (!hex) return text;
  const n = Number.parseInt(hex.slice(1), 16);
  return `\x1b[38;2;${(n >> 16) & 255};${(n >> 8) & 255};${n & 255}m${text}\x1b[39m`;
}

/** Whether to color output on `stream`: only on a terminal, and never when NO_COLOR is set (no-color.org). */
export function shouldColor(stream: { isTTY?: boolean }, env: NodeJS.ProcessEnv = process.env): boolean {
  return Boolean(stream.isTTY) && !env.NO_COLOR;
}
