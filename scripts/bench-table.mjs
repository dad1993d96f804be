// npm run bench:table: writes the README's benchmark table from bench-results/bench.json (what
// `npm run bench` leaves, tests/bench/report.ts), between the bench-table markers in README.md.
// Plain Node, no build step, so it runs right after a bench:
//   node scripts/bench-table.mjs [bench.json] [README.md]
import { readFileSync, writeFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

export const START = "<!-- bench-table:start -->";
export const END = "<!-- bench-table:end -->";

/** As tests/bench/report.ts prints them: 23100 ms as "23.1 s", about three significant digits. */
export function formatValue(value, unit) {
  if (unit === "ms" && value >= 1000) return formatValue(value / 1000, "s");
  const digits = value >= 100 ? 0 : value >= 10 ? 1 : 2;
  return `${value.toFixed(digits)} ${unit}`;
}

export const formatRatio = (ratio) => `${ratio.toFixed(ratio >= 100 ? 1 : 2)}×`;

/** A row's run: the day of an ISO date; anything else (a hand-written "session 3") as written. */
export const runOf = (date) => (/^\d{4}-\d\d-\d\dT/.test(date ?? "") ? date.slice(0, 10) : (date ?? ""));

const cell = (s) => String(s).replaceAll("|", "\\|").replaceAll("\n", " ");

/**
 * The table in Markdown: a line saying where it was measured, the table, then the figures' notes
 * numbered as their markers. A run column only when the rows come from more than one run.
 */
export function renderTable(report) {
  const rows = report.figures ?? [];
  // Runs differ by their whole date: two runs on one day still need the column.
  const oneRun = new Set(rows.map((r) => r.date)).size <= 1;
  const host = report.host ?? {};
  const where = [
    host.cpus ? `${host.cpus} CPUs` : undefined,
    host.memory,
    host.kernel ? `Linux ${host.kernel}` : undefined,
    report.accel ? report.accel.toUpperCase() : undefined,
  ].filter(Boolean).join(", ");
  const when = oneRun ? `, one run on ${runOf(rows[0]?.date ?? report.date)}` : "; each row's run in the last column";
  const notes = [];
  const header = ["figure", "qvm", "baseline", "ratio", "target", "met", ...(oneRun ? [] : ["run"])];
  const lines = [
    `Measured with \`npm run bench\` on ${where || "the bench machine"}${when}. Ratio: qvm relative to the baseline (time over time, or the baseline's rate over qvm's), lower is better; met: ratio ≤ target.`,
    "",
    `| ${header.join(" | ")} |`,
    `|${header.map(() => "---").join("|")}|`,
  ];
  for (const r of rows) {
    if (r.note) notes.push(r.note);
    const cells = [
      r.note ? `${r.qvmLabel} [${notes.length}]` : r.qvmLabel,
      formatValue(r.qvm, r.unit),
      // A dash, not parentheses: several labels have parentheses of their own.
      `${formatValue(r.baseline, r.unit)} — ${r.baselineLabel}`,
      formatRatio(r.ratio),
      r.target === null || r.target === undefined ? "" : `≤ ${formatRatio(r.target)}`,
      r.met === null || r.met === undefined ? "" : r.met ? "yes" : "**no**",
      ...(oneRun ? [] : [`${runOf(r.date)}${r.section && r.section !== "earlier" ? ` (${r.section})` : ""}`]),
    ];
    lines.push(`| ${cells.map(cell).join(" | ")} |`);
  }
  if (notes.length) lines.push("", ...notes.map((n, i) => `${i + 1}. ${n}`));
  return lines.join("\n");
}

/** The README with the text between the markers replaced by `table`; throws when the markers are missing. */
export function replaceTable(readme, table) {
  const start = readme.indexOf(START);
  const end = readme.indexOf(END, start);
  if (start < 0 || end < 0) throw new Error(`README has no ${START} … ${END} pair to write the table between`);
  return `${readme.slice(0, start + START.length)}\n${table}\n${readme.slice(end)}`;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const [jsonFile = "bench-results/bench.json", readmeFile = "README.md"] = process.argv.slice(2);
  const report = JSON.parse(readFileSync(jsonFile, "utf8"));
  if (!Array.isArray(report.figures)) throw new Error(`${jsonFile} has no figures: run \`npm run bench\` (or a section of it) first`);
  writeFileSync(readmeFile, replaceTable(readFileSync(readmeFile, "utf8"), renderTable(report)));
  console.log(`${readmeFile}: benchmark table written from ${jsonFile} (${report.figures.length} figures)`);
}
