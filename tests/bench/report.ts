// The benchmark report: every figure of a run next to its baseline with the ratio and its target,
// printed as a table and written to bench-results/bench.json. scripts/bench-table.mjs turns that
// file into the README's table, so the file keeps figures across runs: a run of some sections
// (QVM_BENCH_ONLY=gui) replaces those sections' rows and keeps the others with their own dates.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import type { Figure } from "./admin.js";

export const REPORT_FILE = "bench-results/bench.json";

/** One figure as bench.json stores it. Absent values are null, so every row has every key. */
export interface Row {
  id: string;
  qvm: number;
  baseline: number;
  unit: string;
  qvmLabel: string;
  baselineLabel: string;
  ratio: number;
  target: number | null;
  met: boolean | null;
  note: string | null;
  /** The bench section that measured it (QVM_BENCH_ONLY's word), so a later run knows what it replaces. */
  section: string;
  /** When its run started (ISO 8601): rows kept from earlier runs keep theirs. */
  date: string;
}

export interface BenchReport {
  date: string;
  accel: string;
  host: { cpus: number; memory: string; kernel: string };
  figures: Row[];
  /**
   * What is not a figure, merged key by key: the guest's boot timeline, and `failed` (a section's
   * last failure, kept until that section runs again).
   */
  extra: Record<string, unknown>;
}

/** The figures one section produced, and whether it finished (a failed one replaces only what it measured). */
export interface SectionResult {
  section: string;
  figures: Record<string, Figure>;
  complete: boolean;
}

/** qvm relative to the baseline, lower is better: qvm / baseline for costs, baseline / qvm for rates. */
export function ratioOf(f: Pick<Figure, "qvm" | "baseline" | "unit">): number {
  return f.unit.endsWith("/s") ? f.baseline / f.qvm : f.qvm / f.baseline;
}

export function toRows(results: readonly SectionResult[], date: string): Row[] {
  return results.flatMap(({ section, figures }) =>
    Object.entries(figures).map(([id, f]) => {
      const ratio = ratioOf(f);
      return {
        id, qvm: f.qvm, baseline: f.baseline, unit: f.unit, qvmLabel: f.qvmLabel, baselineLabel: f.baselineLabel, ratio,
        target: f.target ?? null, met: f.target === undefined ? null : ratio <= f.target, note: f.note ?? null, section, date,
      };
    }),
  );
}

export function hostInfo(): BenchReport["host"] {
  return { cpus: os.cpus().length, memory: `${(os.totalmem() / 2 ** 30).toFixed(1)} GiB`, kernel: os.release() };
}

/**
 * The rows an earlier bench.json holds. The format before sections (`rows` with `figure`) is read
 * too, as section "earlier": its rows stay until a run measures the same ids again.
 */
export function previousRows(previous: unknown): Row[] {
  if (!previous || typeof previous !== "object") return [];
  const p = previous as { figures?: unknown; rows?: unknown; date?: unknown };
  if (Array.isArray(p.figures)) return p.figures.filter((r): r is Row => !!r && typeof r === "object" && typeof (r as Row).id === "string");
  if (!Array.isArray(p.rows)) return [];
  const date = typeof p.date === "string" ? p.date : "";
  return (p.rows as Record<string, unknown>[])
    .filter((r) => typeof r.figure === "string" && typeof r.qvm === "number" && typeof r.baseline === "number")
    .map((r) => {
      const f = { qvm: r.qvm as number, baseline: r.baseline as number, unit: String(r.unit ?? "") };
      return {
        id: r.figure as string, ...f, qvmLabel: String(r.qvmLabel ?? ""), baselineLabel: String(r.baselineLabel ?? ""),
        ratio: ratioOf(f), target: null, met: null, note: null, section: "earlier", date,
      };
    });
}

/**
 * This run merged into the previous file. A section that finished replaces every earlier row of
 * its own; a section that failed part way replaces only the ids it measured. The file's order is
 * kept: a replaced section's rows go where its first old row was, new sections at the end.
 */
export function mergeReports(previous: unknown, run: BenchReport, complete: ReadonlySet<string>): BenchReport {
  const ids = new Set(run.figures.map((r) => r.id));
  const bySection = new Map<string, Row[]>();
  for (const r of run.figures) bySection.set(r.section, [...(bySection.get(r.section) ?? []), r]);
  const out: Row[] = [];
  const placed = new Set<string>();
  const place = (section: string) => {
    if (placed.has(section)) return;
    placed.add(section);
    out.push(...(bySection.get(section) ?? []));
  };
  for (const r of previousRows(previous)) {
    if (bySection.has(r.section)) place(r.section);
    if (ids.has(r.id) || complete.has(r.section)) continue;
    out.push(r);
  }
  for (const section of bySection.keys()) place(section);
  const record = (x: unknown) => (x && typeof x === "object" ? (x as Record<string, unknown>) : {});
  const oldExtra = record(record(previous).extra);
  const failed = { ...record(run.extra.failed) };
  const ran = new Set([...complete, ...bySection.keys(), ...Object.keys(failed)]);
  for (const [section, why] of Object.entries(record(oldExtra.failed))) if (!ran.has(section)) failed[section] ??= why;
  const { failed: _old, ...extra } = { ...oldExtra, ...run.extra };
  return { ...run, figures: out, extra: Object.keys(failed).length ? { ...extra, failed } : extra };
}

/** 23100 ms as "23.1 s"; three significant digits or so, whole numbers from 100 up. */
export function formatValue(value: number, unit: string): string {
  if (unit === "ms" && value >= 1000) return formatValue(value / 1000, "s");
  const digits = value >= 100 ? 0 : value >= 10 ? 1 : 2;
  return `${value.toFixed(digits)} ${unit}`;
}

export const formatRatio = (ratio: number) => `${ratio.toFixed(ratio >= 100 ? 1 : 2)}×`;

/** The run's figures as a plain-text table, notes numbered below it. */
export function formatTable(rows: readonly Row[]): string {
  const notes: string[] = [];
  const cells = rows.map((r) => {
    if (r.note) notes.push(r.note);
    return [
      r.note ? `${r.id} [${notes.length}]` : r.id,
      formatValue(r.qvm, r.unit), r.qvmLabel,
      formatValue(r.baseline, r.unit), r.baselineLabel,
      formatRatio(r.ratio),
      r.target === null ? "" : `≤ ${formatRatio(r.target)}`,
      r.met === null ? "" : r.met ? "met" : "MISSED",
    ];
  });
  const header = ["figure", "qvm", "", "baseline", "", "ratio", "target", ""];
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  const line = (c: string[]) => c.map((s, i) => s.padEnd(widths[i]!)).join("  ").trimEnd();
  return [
    line(header),
    ...cells.map(line),
    "(ratio: qvm relative to the baseline, qvm/baseline for costs and baseline/qvm for rates; 1.00× = no overhead, lower is better)",
    ...notes.map((n, i) => `[${i + 1}] ${n}`),
  ].join("\n");
}

/** Prints this run's table and merges it into bench-results/bench.json (relative to the working directory). */
export function writeReport(results: readonly SectionResult[], accel: string, extra: Record<string, unknown>, log: (m: string) => void, file = REPORT_FILE): BenchReport {
  const date = new Date().toISOString();
  const run: BenchReport = { date, accel, host: hostInfo(), figures: toRows(results, date), extra };
  console.log(`\n${formatTable(run.figures)}`);
  let previous: unknown;
  try {
    previous = JSON.parse(readFileSync(file, "utf8"));
  } catch {
    previous = undefined;
  }
  const merged = mergeReports(previous, run, new Set(results.filter((r) => r.complete).map((r) => r.section)));
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, `${JSON.stringify(merged, null, 2)}\n`);
  const kept = merged.figures.length - run.figures.length;
  log(`wrote ${file}: ${run.figures.length} figures from this run${kept ? `, ${kept} kept from earlier runs` : ""}; \`npm run bench:table\` puts them in README.md`);
  return merged;
}
