// The eight Qubes label colors (qubes/app.py), as qvmd knows them. The CLI only needs them to
// color `qvm ls`, and reaches qvmd through the admin API alone, so it keeps its own small table
// instead of importing host-agent. An unknown label is printed uncolored.
export const LABEL_COLORS: Readonly<Record<string, string>> = {
  red: "#cc0000",
  orange: "#f57900",
  yellow: "#edd400",
  green: "#73d216",
  gray: "#555555",
  blue: "#3465a4",
  purple: "#75507b",
  black: "#000000",
};

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
