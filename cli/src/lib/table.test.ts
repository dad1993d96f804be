import { describe, expect, it } from "vitest";
import type { DomainInWords, adminV1 } from "@qvm/protocol";
import { fakeDomain as dom } from "../test-support/domains.js";
import { colorize, shouldColor } from "./labels.js";
import { filterDomains, formatDomainTable, formatKeyValues, formatPropertyTable, formatTable } from "./table.js";

describe("formatTable", () => {
  it("aligns columns two spaces apart, without trailing spaces", () => {
    expect(formatTable([["a", "bb", "c"], ["dddd", "e", "ffffff"]])).toBe("a     bb  c\ndddd  e   ffffff\n");
  });

  it("does not pad the last column, even when it is empty", () => {
    expect(formatTable([["x", ""], ["yy", "z"]])).toBe("x\nyy  z\n");
  });
});

describe("formatDomainTable (qvm ls)", () => {
  const domains = [
    dom("work", { state: "Running", label: "blue", netvm: "sys-net" }),
    dom("debian-12", { class: "TemplateVM", label: "black", template: "" }),
  ];

  it("prints the qvm-ls columns, aligned, with '-' for an empty template or netvm", () => {
    expect(formatDomainTable(domains).split("\n")).toEqual([
      "NAME       STATE    CLASS       LABEL  TEMPLATE   NETVM",
      "work       Running  AppVM       blue   debian-12  sys-net",
      "debian-12  Halted   TemplateVM  black  -          -",
      "",
    ]);
  });

  it("prints no color unless asked", () => {
    expect(formatDomainTable(domains)).not.toContain("\x1b");
    expect(formatDomainTable(domains, { color: false })).not.toContain("\x1b");
  });

  it("colors the name and label in the label's 24-bit color, and pads outside the color codes", () => {
    const out = formatDomainTable(domains, { color: true });
    const blue = "\x1b[38;2;52;101;164m"; // #3465a4
    const [, work] = out.split("\n");
    expect(work).toBe(`${blue}work\x1b[39m       Running  AppVM       ${blue}blue\x1b[39m   debian-12  sys-net`);
    // Without the escapes, the colored table is the plain one.
    expect(out.replace(/\x1b\[[0-9;]*m/g, "")).toBe(formatDomainTable(domains));
    // The header is never colored.
    expect(out.split("\n")[0]).not.toContain("\x1b");
  });

  it("leaves an unknown label uncolored", () => {
    expect(colorize("x", "pink")).toBe("x");
    expect(colorize("x", "red")).toBe("\x1b[38;2;204;0;0mx\x1b[39m");
  });
});

describe("shouldColor", () => {
  it("colors only a terminal, and never with NO_COLOR set", () => {
    expect(shouldColor({ isTTY: true }, {})).toBe(true);
    expect(shouldColor({ isTTY: false }, {})).toBe(false);
    expect(shouldColor({}, {})).toBe(false);
    expect(shouldColor({ isTTY: true }, { NO_COLOR: "1" })).toBe(false);
    // no-color.org: an empty NO_COLOR does not count.
    expect(shouldColor({ isTTY: true }, { NO_COLOR: "" })).toBe(true);
  });
});

describe("formatPropertyTable (qvm prefs VM)", () => {
  it("marks every value that is not the domain's own with D", () => {
    const p = (name: string, value: string, source: string): adminV1.Property => ({ name, value, source, type: "str", doc: "" });
    expect(formatPropertyTable([p("label", "red", "own"), p("memory", "400", "template"), p("netvm", "", "global"), p("vcpus", "2", "default")])).toBe(
      "label   -  red\nmemory  D  400\nnetvm   D\nvcpus   D  2\n",
    );
  });
});

describe("formatKeyValues (qvm features VM)", () => {
  it("sorts by name", () => {
    expect(formatKeyValues({ zeta: "1", gui: "", "service.cups": "0" })).toBe("gui\nservice.cups  0\nzeta          1\n");
  });
});

describe("filterDomains (qvm ls filters)", () => {
  const all = [
    dom("c", { state: "Running", tags: ["work"] }),
    dom("a", { state: "Paused", tags: ["personal", "x"] }),
    dom("b", { class: "TemplateVM" }),
  ];
  const names = (ds: DomainInWords[]) => ds.map((d) => d.name);

  it("sorts by name and keeps everything without filters", () => {
    expect(names(filterDomains(all, {}))).toEqual(["a", "b", "c"]);
  });
  it("matches any of several states and any of several tags", () => {
    expect(names(filterDomains(all, { states: ["Running", "Paused"] }))).toEqual(["a", "c"]);
    expect(names(filterDomains(all, { tags: ["work", "personal"] }))).toEqual(["a", "c"]);
  });
  it("requires every kind of filter to match", () => {
    expect(names(filterDomains(all, { states: ["Running"], tags: ["personal"] }))).toEqual([]);
    expect(names(filterDomains(all, { class: "templatevm" }))).toEqual(["b"]);
    expect(names(filterDomains(all, { names: ["c", "b"] }))).toEqual(["b", "c"]);
  });
});

describe("qvm ls under TCG", () => {
  it("marks the state of a domain running under TCG, and only that", () => {
    const out = formatDomainTable([dom("soft", { state: "Running", accel: "tcg" }), dom("hard", { state: "Running", accel: "kvm" })]);
    expect(out).toMatch(/^soft\s+Running\*\s/m);
    expect(out).toMatch(/^hard\s+Running\s/m);
  });
});
