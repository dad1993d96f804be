// Sizes as people type and read them: 4G, 512M, 1048576.
import { QvmError } from "@qvm/protocol/contracts";

const UNITS: Record<string, number> = { "": 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 };

export function parseSize(text: string): number {
  const m = /^(\d+)([KMGT]?)(i?B)?$/i.exec(text.trim());
  if (!m) throw new QvmError("INVALID_ARGUMENT", `size must be a number with an optional K, M, G or T suffix (like 4G), not ${JSON.stringify(text)}`);
  return Number(m[1]) * UNITS[m[2]!.toUpperCase()]!;
}

export function formatSize(bytes: number): string {
  for (const u of ["T", "G", "M", "K"]) {
    const n = bytes / UNITS[u]!;
    if (n >= 1) return `${n >= 10 || Number.isInteger(n) ? Math.round(n) : n.toFixed(1)}${u}`;
  }
  return `${bytes}`;
}
