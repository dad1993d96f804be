// Plain-text tables as qvm-ls and qvm-prefs print them: left-aligned columns two spaces apart,
// widths from the visible text (color codes are added after padding), no trailing spaces.
import type { DomainInWords, adminV1 } from "@qvm/protocol";
import { colorize } from "./labels.js";

export interface Cell {
  text: string;
  /** Label whose color the cell is printed in, when coloring. */
  label?: string;
}

export function formatTable(rows: readonly (readonly (Cell | string)[])[], opts: { color?: boolean } = {}): string {
  const cells = rows.map((r) => r.map((c) => (typeof c === "string" ? { text: c } : c)));
  const widths: number[] = [];
  for (const r of cells) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.text.length)));
  return cells
    .map((r) =>
      r
        .map((c, i) => (opts.color && c.label ? colorize(c.text, c.label) : c.text) + " ".repeat((widths[i] ?? 0) - c.text.length))
        .join("  ")
        .trimEnd(),
    )
    .map((line) => `${line}\n`)
    .join("");
}

const dash = (s: string) => s || "-";

export const LS_HEADER = ["NAME", "STATE", "CLASS", "LABEL", "TEMPLATE", "NETVM"] as const;

/** Marks the state of a domain running under TCG, which gives no hardware isolation. */
export const TCG_MARK = "*";
export const TCG_LEGEND = `${TCG_MARK} runs under TCG software emulation: no hardware isolation (qvmd --allow-tcg)`;

/** The `qvm ls` table: a header, then one row per domain in the given order. */
export function formatDomainTable(domains: readonly DomainInWords[], opts: { color?: boolean } = {}): string {
  const rows: Cell[][] = [LS_HEADER.map((text) => ({ text }))];
  for (const d of domains) {
    rows.push([
      { text: d.name, label: d.label },
      { text: d.accel === "tcg" ? `${d.state}${TCG_MARK}` : d.state },
      { text: d.class },
      { text: dash(d.label), label: d.label },
      { text: dash(d.template) },
      { text: dash(d.netvm) },
    ]);
  }
  return formatTable(rows, opts);
}

/** The `qvm prefs VM` listing: name, "D" when the value is not the domain's own, value. */
export function formatPropertyTable(props: readonly adminV1.Property[]): string {
  return formatTable(props.map((p) => [p.name, p.source === "own" ? "-" : "D", p.value]));
}

/** `NAME VALUE` pairs, sorted by name (features). */
export function formatKeyValues(map: Readonly<Record<string, string>>): string {
  return formatTable(
    Object.keys(map)
      .sort()
      .map((k) => [k, map[k] ?? ""]),
  );
}

export interface DomainFilter {
  states?: string[];
  tags?: string[];
  class?: string;
  names?: string[];
}

/** Domains matching every given criterion (states and tags: any of), sorted by name. */
export function filterDomains(domains: readonly DomainInWords[], f: DomainFilter): DomainInWords[] {
  const states = f.states?.map((s) => s.toLowerCase());
  return domains
    .filter((d) => !states?.length || states.includes(d.state.toLowerCase()))
    .filter((d) => !f.tags?.length || d.tags.some((t) => f.tags!.includes(t)))
    .filter((d) => !f.class || d.class.toLowerCase() === f.class.toLowerCase())
    .filter((d) => !f.names?.length || f.names.includes(d.name))
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}
