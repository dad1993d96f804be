// The README's benchmark table (scripts/bench-table.mjs) from a bench.json.
import { describe, expect, it } from "vitest";
import { END, START, formatValue, renderTable, replaceTable } from "./bench-table.mjs";

const row = (over) => ({
  id: "boot", qvm: 23100, baseline: 24900, unit: "ms", qvmLabel: "qvm start → agent Ping", baselineLabel: "plain QEMU → agent Ping",
  ratio: 0.928, target: 1.1, met: true, note: null, section: "vm", date: "2026-12-01T10:00:00.000Z", ...over,
});
const report = (figures) => ({ date: "2026-12-01T10:00:00.000Z", accel: "tcg", host: { cpus: 2, memory: "7.8 GiB", kernel: "6.1.0" }, figures, extra: {} });

describe("bench table", () => {
  it("formats values: seconds from 1000 ms, about three significant digits", () => {
    expect(formatValue(23100, "ms")).toBe("23.1 s");
    expect(formatValue(162.4, "ms")).toBe("162 ms");
    expect(formatValue(0.994, "ms")).toBe("0.99 ms");
    expect(formatValue(19.14, "MiB/s")).toBe("19.1 MiB/s");
  });

  it("renders one row per figure with ratio, target and whether it is met; one run needs no run column", () => {
    const t = renderTable(report([row(), row({ id: "stdout", qvm: 5.8, baseline: 19.1, unit: "MiB/s", qvmLabel: "Exec stdout", baselineLabel: "raw stream", ratio: 3.293, target: 1 / 0.7, met: false })]));
    const lines = t.split("\n");
    expect(lines[0]).toContain("2 CPUs, 7.8 GiB, Linux 6.1.0, TCG, one run on 2026-12-01");
    expect(lines).toContain("| figure | qvm | baseline | ratio | target | met |");
    expect(lines).toContain("| qvm start → agent Ping | 23.1 s | 24.9 s — plain QEMU → agent Ping | 0.93× | ≤ 1.10× | yes |");
    expect(lines).toContain("| Exec stdout | 5.80 MiB/s | 19.1 MiB/s — raw stream | 3.29× | ≤ 1.43× | **no** |");
  });

  it("adds a run column (day and section) when rows come from different runs, and leaves target and met empty without a target", () => {
    const t = renderTable(report([row(), row({ id: "usb read", qvmLabel: "usb", target: null, met: null, section: "usb", date: "2026-11-30T13:45:00.000Z" }), row({ id: "old", qvmLabel: "old", section: "earlier", date: "session 3" })]));
    expect(t).toContain("each row's run in the last column");
    expect(t).toContain("| figure | qvm | baseline | ratio | target | met | run |");
    expect(t).toContain("| usb | 23.1 s | 24.9 s — plain QEMU → agent Ping | 0.93× |  |  | 2026-11-30 (usb) |");
    expect(t).toContain("| session 3 |");
  });

  it("tells two runs of one day apart", () => {
    const t = renderTable(report([row(), row({ section: "usb", date: "2026-12-01T16:00:00.000Z" })]));
    expect(t).toContain("| run |");
    expect(t).toContain("| 2026-12-01 (usb) |");
  });

  it("numbers the notes after the table and escapes pipes in cells", () => {
    const t = renderTable(report([row({ note: "first note" }), row({ qvmLabel: "a | b", note: "second" })]));
    expect(t).toContain("| qvm start → agent Ping [1] |");
    expect(t).toContain("| a \\| b [2] |");
    expect(t.split("\n").slice(-2)).toEqual(["1. first note", "2. second"]);
  });

  it("replaces only the text between the markers", () => {
    const readme = `# x\n\n## Benchmarks\n\nprose\n\n${START}\nold table\n${END}\n\nmore prose\n`;
    expect(replaceTable(readme, "new table")).toBe(`# x\n\n## Benchmarks\n\nprose\n\n${START}\nnew table\n${END}\n\nmore prose\n`);
    expect(() => replaceTable("# no markers\n", "t")).toThrow(/bench-table:start/);
  });
});
