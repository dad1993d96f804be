// Loading a declared file: every problem reported at once, each at the line and column of the
// value (or key) it is about, with the field's path.
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { formatPath, parseDeclaredFile } from "./load.js";

/** The problems of `text` as `qvm apply` prints them, one a line. */
function problems(text: string, name = "apply.yaml"): string[] {
  try {
    parseDeclaredFile(text, name);
  } catch (err) {
    expect(err).toMatchObject({ name: "QvmError", code: "INVALID_ARGUMENT" });
    return (err as Error).message.split("\n");
  }
  return [];
}

const yaml = (lines: string[]) => `${lines.join("\n")}\n`;

describe("parseDeclaredFile", () => {
  it("reads YAML and JSON to the same data", () => {
    const y = parseDeclaredFile(yaml(["version: 1", "domains:", "  work:", "    label: red", "    memory: 800", "    features: { gui: '1' }", "    tags: [a, b]"]), "a.yaml");
    const j = parseDeclaredFile(JSON.stringify({ version: 1, domains: { work: { label: "red", memory: 800, features: { gui: "1" }, tags: ["a", "b"] } } }), "a.json");
    expect(y).toEqual(j);
    expect(y.domains?.work?.memory).toBe(800);
  });

  it("names file, line:column and path for a value of the wrong type or out of range", () => {
    const text = yaml([
      "version: 1", //
      "domains:",
      "  work:",
      "    label: red",
      "    memory: 64",
      "    vcpus: two",
      "    properties:",
      "      autostart: yes",
    ]);
    expect(problems(text)).toEqual([
      "apply.yaml:5:13: domains.work.memory: must be between 128 and 262144",
      "apply.yaml:6:12: domains.work.vcpus: must be a number (vcpus, in whole units)",
      // YAML 1.2: "yes" is text, not true.
      "apply.yaml:8:18: domains.work.properties.autostart: must be true or false",
    ]);
  });

  it("points at an unknown field's key and lists the fields there", () => {
    expect(problems(yaml(["version: 1", "domains:", "  work:", "    label: red", "    memroy: 800"]))).toEqual([
      "apply.yaml:5:5: domains.work.memroy: unknown field (the fields here: class, label, template, netvm, memory, vcpus, properties, features, tags, firewall)",
    ]);
    expect(problems(yaml(["version: 1", "policies: {}"]))[0]).toBe("apply.yaml:2:1: policies: unknown field (the fields here: version, domains, policy)");
  });

  it("points at a bad name (a key)", () => {
    expect(problems(yaml(["version: 1", "domains:", "  1work: { label: red }", "  dom0: { label: red }"]))).toEqual([
      'apply.yaml:3:3: domains["1work"]: must be a domain name: a letter first, then letters, digits, "_", "." or "-", at most 31 characters',
      'apply.yaml:4:3: domains.dom0: "dom0" is a reserved name',
    ]);
    expect(problems(yaml(["version: 1", "policy:", "  ../30-x.policy: ''"]))[0]).toMatch(/^apply\.yaml:3:3: policy\["\.\.\/30-x\.policy"\]: a policy file name is/);
  });

  it("points at a bad firewall rule in its list", () => {
    const text = yaml(["version: 1", "domains:", "  work:", "    label: red", "    firewall:", "      - accept example.com tcp 443", "      - accept example.com tcp 99999"]);
    expect(problems(text)).toEqual(['apply.yaml:7:9: domains.work.firewall[1]: dstports "99999": a port is 0-65535']);
  });

  it("points at the domain a required field is missing from", () => {
    expect(problems(yaml(["version: 1", "domains:", "  work:", "    memory: 800"]))).toEqual([
      "apply.yaml:3:3: domains.work.label: is required (must be one of red, orange, yellow, green, gray, blue, purple, black)",
    ]);
    expect(problems(yaml(["domains: {}"]))).toEqual(["apply.yaml:1:1: version: is required (must be 1 (the only version of this format))"]);
  });

  it("reports every problem, across domains, in one error", () => {
    const text = yaml(["version: 1", "domains:", "  a: { label: pink }", "  b: { label: red, tags: [x, x] }", "  c: { label: red, features: { gui: 1 } }"]);
    expect(problems(text)).toEqual([
      "apply.yaml:3:15: domains.a.label: must be one of red, orange, yellow, green, gray, blue, purple, black",
      "apply.yaml:4:30: domains.b.tags[1]: x is listed twice",
      'apply.yaml:5:37: domains.c.features.gui: must be text (quote it: "1")',
    ]);
  });

  it("positions problems in a JSON file too", () => {
    const text = '{\n  "version": 1,\n  "domains": {\n    "work": { "label": "red", "memory": "800" }\n  }\n}\n';
    expect(problems(text, "d.json")).toEqual(["d.json:4:41: domains.work.memory: must be a number (memory, in MiB)"]);
  });

  it("reports YAML syntax errors with their position, and duplicate keys", () => {
    expect(problems(yaml(["version: 1", "domains:", "  work: { label: red", "  x: 1"]))[0]).toMatch(/^apply\.yaml:\d+:\d+: /);
    expect(problems(yaml(["version: 1", "version: 1"]))).toEqual(["apply.yaml:2:1: Map keys must be unique"]);
  });

  it("refuses a file that is not a map, and an alias bomb", () => {
    expect(problems("- a\n- b\n")).toEqual(["apply.yaml:1:1: the file: must be a map (NAME: VALUE lines)"]);
    expect(problems("")).toEqual(["apply.yaml: the file: must be a map (NAME: VALUE lines)"]);
    const bomb = ["a: &a [x, x, x, x, x, x, x, x, x, x]", ...Array.from({ length: 8 }, (_, i) => `${String.fromCharCode(98 + i)}: &${String.fromCharCode(98 + i)} [${Array(10).fill(`*${String.fromCharCode(97 + i)}`).join(", ")}]`)];
    expect(problems(yaml(bomb))[0]).toMatch(/^apply\.yaml: .*alias/i);
  });
});

describe("formatPath", () => {
  it.each([
    [[], "the file"],
    [["domains", "work", "memory"], "domains.work.memory"],
    [["domains", "sys-net", "firewall", 2], "domains.sys-net.firewall[2]"],
    [["domains", "work", "features", "service.cups"], 'domains.work.features["service.cups"]'],
    [["policy", "30-user.policy"], 'policy["30-user.policy"]'],
  ])("%j is %s", (path, text) => {
    expect(formatPath(path)).toBe(text);
  });
});

describe("docs/cli.md", () => {
  it("its example file is a valid declared file", () => {
    const doc = readFileSync(new URL("../../../../docs/cli.md", import.meta.url), "utf8");
    const section = doc.slice(doc.indexOf("### `qvm apply"));
    const block = /\n\n((?: {4}.*\n|\n)+)/.exec(section.slice(section.indexOf("    version: 1") - 2))![1]!;
    const text = block.replace(/^ {4}/gm, "");
    const file = parseDeclaredFile(text, "docs/cli.md");
    expect(Object.keys(file.domains ?? {})).toEqual(["debian-12", "sys-net", "sys-firewall", "work"]);
    expect(Object.keys(file.policy ?? {})).toEqual(["30-user.policy"]);
  });
});
