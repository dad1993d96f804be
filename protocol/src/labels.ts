// The eight Qubes labels and their colors (qubes/app.py). A label is the trusted color every
// window and terminal of a domain is framed in. Part of the admin API contract: qvmd validates
// labels against this table and clients (CLI, web shell) draw with it. Dependency-free, so
// clients can import it alone ("@qvm/protocol/labels") without loading gRPC.
export const LABELS = {
  red: "#cc0000",
  orange: "#f57900",
  yellow: "#edd400",
  green: "#73d216",
  gray: "#555555",
  blue: "#3465a4",
  purple: "#75507b",
  black: "#000000",
} as const;

export type Label = keyof typeof LABELS;
export const LABEL_NAMES = Object.keys(LABELS) as Label[];

export function isLabel(v: unknown): v is Label {
  return typeof v === "string" && Object.hasOwn(LABELS, v);
}
