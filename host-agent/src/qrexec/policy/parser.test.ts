import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { QvmError } from "@qvm/protocol";
import { parsePolicy, parseToken, type PolicyRule } from "./parser.js";

const rule = (line: string) => parsePolicy(line, "t.policy")[0] as PolicyRule;

describe("qrexec policy parser", () => {
  it.each([
    ["@anyvm", "source", { kind: "anyvm" }],
    ["@adminvm", "source", { kind: "adminvm" }],
    ["dom0", "target", { kind: "adminvm" }],
    ["@default", "target", { kind: "default" }],
    ["@dispvm", "target", { kind: "dispvm" }],
    ["@dispvm:default-dvm", "target", { kind: "dispvm-of", template: "default-dvm" }],
    ["@dispvm:@tag:dvm", "source", { kind: "dispvm-tag", tag: "dvm" }],
    ["@tag:work", "source", { kind: "tag", tag: "work" }],
    ["@type:TemplateVM", "source", { kind: "type", type: "TemplateVM" }],
    ["vault", "target", { kind: "name", name: "vault" }],
  ] as const)("reads the token %s as a %s", (text, role, token) => {
    expect(parseToken(text, role)).toEqual(token);
  });

  it.each([
    ["@default", "source", /only a target/],
    ["@dispvm", "source", /only a target/],
    ["@type:Laptop", "source", /unknown type/],
    ["@tag:bad tag", "source", /invalid tag/],
    ["@everyone", "target", /unknown token/],
    ["../etc", "target", /invalid domain name/],
  ] as const)("refuses the token %s as a %s", (text, role, msg) => {
    expect(parseToken(text, role)).toMatch(msg);
  });

  it("reads rules with every action and parameter, skipping comments and blank lines", () => {
    const entries = parsePolicy(
      [
        "# a comment",
        "",
        "qubes.Filecopy * @anyvm @anyvm ask default_target=vault",
        "my.Service +arg work vault allow user=root notify=yes autostart=no",
        "qubes.GetDate * @anyvm @default allow target=dom0",
        "qubes.VMShell + @tag:anon @dispvm deny notify=no",
        "* * @anyvm @anyvm deny",
      ].join("\n"),
      "90-default.policy",
    ) as PolicyRule[];
    expect(entries.map((e) => [e.line, e.service, e.argument, e.action])).toEqual([
      [3, "qubes.Filecopy", null, "ask"],
      [4, "my.Service", "arg", "allow"],
      [5, "qubes.GetDate", null, "allow"],
      [6, "qubes.VMShell", "", "deny"],
      [7, "*", null, "deny"],
    ]);
    expect(entries[1]!.params).toEqual({ user: "root", notify: "yes", autostart: "no" });
    expect(entries[0]!.params).toEqual({ default_target: "vault" });
  });

  it("reads the include directives", () => {
    expect(parsePolicy("!include 30-user.policy\n!include-dir extra.d\n!include-service qubes.Filecopy * fc.policy", "f")).toEqual([
      { kind: "include", file: "f", line: 1, path: "30-user.policy" },
      { kind: "include-dir", file: "f", line: 2, path: "extra.d" },
      { kind: "include-service", file: "f", line: 3, path: "fc.policy", service: "qubes.Filecopy", argument: null },
    ]);
  });

  it.each([
    ["qubes.Filecopy * @anyvm", /needs SERVICE ARGUMENT SOURCE TARGET ACTION/],
    ["* +arg @anyvm @anyvm deny", /service of "\*" needs an argument of "\*"/],
    ["svc arg @anyvm @anyvm deny", /argument must be "\*" or "\+"/],
    ["svc * @anyvm @anyvm permit", /action must be allow, deny or ask/],
    ["svc * @anyvm @anyvm deny user=root", /deny takes no parameter "user"/],
    ["svc * @anyvm @anyvm allow default_target=vault", /allow takes no parameter "default_target"/],
    ["svc * @anyvm @anyvm allow notify=maybe", /notify must be yes or no/],
    ["svc * @anyvm @anyvm allow target=@anyvm", /target must name one domain/],
    ["svc * @anyvm @default allow", /allow rule for @default must set target=/],
    ["svc * @anyvm @anyvm allow user=root user=root", /given twice/],
    ["svc * @anyvm @anyvm allow oops", /must be name=value/],
    ["!includ x", /unknown directive/],
    ["!include", /takes one path/],
    ["svc * @default vault allow", /source: @default is only a target/],
  ])("names file and line for %s", (line, msg) => {
    const err = (() => {
      try {
        parsePolicy(`# header\n${line}`, "30-user.policy");
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(QvmError);
    expect((err as QvmError).message).toMatch(/^30-user\.policy:2: /);
    expect((err as QvmError).message).toMatch(msg);
  });

  it("arbitrary input never crashes the parser: it yields entries or a typed error", () => {
    const alphabet = fc.constantFrom(..."abz09.-_+*@:=!# \t\n\r\x00é".split(""), "@anyvm", "@tag:", "allow", "deny", "ask", "!include", "target=", "\n");
    fc.assert(
      fc.property(fc.array(alphabet, { maxLength: 200 }).map((xs) => xs.join("")), (text) => {
        try {
          const entries = parsePolicy(text, "fuzz.policy");
          expect(Array.isArray(entries)).toBe(true);
        } catch (err) {
          expect(err).toBeInstanceOf(QvmError);
          expect((err as QvmError).message).toMatch(/^fuzz\.policy:\d+: /);
        }
      }),
      { numRuns: 2000 },
    );
  });
});
