import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { repoRoot } from "@qvm/images";
import os from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { DEFAULT_POLICY, installDefaultPolicy } from "./default-policy.js";
import { decideAnswer, evaluate, type DomainFacts, type SystemFacts } from "./evaluate.js";
import { loadPolicy } from "./loader.js";
import { parsePolicy, type PolicyRule } from "./parser.js";

const dom = (name: string, more: Partial<DomainFacts> = {}): DomainFacts => ({
  name,
  class: "AppVM",
  tags: [],
  templateForDispvms: false,
  defaultDispvm: "default-dvm",
  ...more,
});
const system: SystemFacts = {
  domains: new Map(
    [
      dom("work", { tags: ["work", "dev"] }),
      dom("vault", { tags: ["secret"], defaultDispvm: "" }),
      dom("personal", { tags: ["anon-vm"] }),
      dom("debian-12", { class: "TemplateVM" }),
      dom("default-dvm", { templateForDispvms: true, tags: ["dvm"] }),
      dom("disp7", { class: "DispVM", template: "default-dvm" }),
    ].map((d) => [d.name, d]),
  ),
};
const rules = (text: string) => parsePolicy(text, "t.policy") as PolicyRule[];
const call = (service: string, source: string, target: string, argument = "") => ({ service, argument, source, target });

describe("qrexec policy evaluation", () => {
  // [rule, source, intended target, expected action, expected target (allow) or reason]
  it.each([
    ["s * work vault allow", "work", "vault", "allow", "vault"],
    ["s * work vault allow", "personal", "vault", "deny", /no rule matches/],
    ["s * @anyvm vault allow", "personal", "vault", "allow", "vault"],
    ["s * @anyvm @anyvm allow", "work", "@adminvm", "deny", /no rule matches/],
    ["s * @anyvm @anyvm allow", "work", "dom0", "deny", /no rule matches/],
    ["s * @adminvm @anyvm allow", "dom0", "work", "allow", "work"],
    ["s * @anyvm @adminvm allow", "work", "dom0", "allow", "dom0"],
    ["s * @anyvm @adminvm allow", "work", "@adminvm", "allow", "dom0"],
    ["s * @anyvm dom0 allow", "work", "@adminvm", "allow", "dom0"],
    ["s * @tag:dev @anyvm allow", "work", "vault", "allow", "vault"],
    ["s * @tag:dev @anyvm allow", "vault", "work", "deny", /no rule/],
    ["s * @anyvm @tag:secret allow", "work", "vault", "allow", "vault"],
    ["s * @anyvm @tag:secret allow", "vault", "work", "deny", /no rule/],
    ["s * @type:TemplateVM @anyvm allow", "debian-12", "vault", "allow", "vault"],
    ["s * @type:TemplateVM @anyvm allow", "work", "vault", "deny", /no rule/],
    ["s * @anyvm @type:TemplateVM allow", "work", "debian-12", "allow", "debian-12"],
    ["s * @anyvm @type:AdminVM allow", "work", "@adminvm", "allow", "dom0"],
    ["s * @anyvm @default allow target=vault", "work", "", "allow", "vault"],
    ["s * @anyvm @default allow target=vault", "work", "@default", "allow", "vault"],
    ["s * @anyvm @default allow target=vault", "work", "personal", "deny", /no rule/],
    ["s * @anyvm @anyvm allow target=vault", "work", "@default", "allow", "vault"],
    ["s * @anyvm @anyvm allow", "work", "@default", "deny", /@default without a target/],
    ["s * @anyvm @dispvm allow", "work", "@dispvm", "allow", "@dispvm:default-dvm"],
    ["s * @anyvm @dispvm allow", "vault", "@dispvm", "deny", /no default_dispvm/],
    ["s * @anyvm @dispvm allow", "work", "@dispvm:default-dvm", "deny", /no rule/],
    ["s * @anyvm @dispvm:default-dvm allow", "work", "@dispvm", "allow", "@dispvm:default-dvm"],
    ["s * @anyvm @dispvm:default-dvm allow", "work", "@dispvm:default-dvm", "allow", "@dispvm:default-dvm"],
    ["s * @anyvm @dispvm:@tag:dvm allow", "work", "@dispvm:default-dvm", "allow", "@dispvm:default-dvm"],
    ["s * @anyvm @dispvm:@tag:other allow", "work", "@dispvm:default-dvm", "deny", /no rule/],
    ["s * @anyvm @anyvm allow", "work", "@dispvm:vault", "deny", /no such template/],
    ["s * @dispvm:default-dvm @anyvm allow", "disp7", "vault", "allow", "vault"],
    ["s * @dispvm:@tag:dvm @anyvm allow", "disp7", "vault", "allow", "vault"],
    ["s * @dispvm:@tag:dvm @anyvm allow", "work", "vault", "deny", /no rule/],
    ["s * work @anyvm allow", "work", "nosuch", "deny", /no such target/],
    ["s * work @anyvm allow", "work", "work", "deny", /cannot call itself/],
    ["s * work vault allow target=personal", "work", "vault", "allow", "personal"],
    ["s * work vault allow target=@dispvm", "work", "vault", "allow", "@dispvm:default-dvm"],
    ["s * work vault allow target=dom0", "work", "vault", "allow", "dom0"],
    ["s * work vault allow target=@adminvm", "work", "vault", "allow", "dom0"],
    ["s * work vault deny", "work", "vault", "deny", /the policy denies it/],
    ["s +arg work vault allow", "work", "vault", "deny", /no rule/],
    ["* * work vault allow", "work", "vault", "allow", "vault"],
    ["other * work vault allow", "work", "vault", "deny", /no rule/],
  ] as const)("%s: %s -> %s gives %s", (rule, source, target, action, expected) => {
    const d = evaluate(rules(rule), call("s", source, target), system);
    expect(d.action).toBe(action);
    if (d.action === "allow") expect(d.target).toBe(expected);
    if (d.action === "deny") expect(d.reason).toMatch(expected as RegExp);
  });

  it("matches arguments: * any, + the empty one, +x only x", () => {
    const r = rules("s +x work vault allow\ns + work vault allow target=personal\ns * work vault deny");
    expect(evaluate(r, call("s", "work", "vault", "x"), system)).toMatchObject({ action: "allow", target: "vault" });
    expect(evaluate(r, call("s", "work", "vault", ""), system)).toMatchObject({ action: "allow", target: "personal" });
    expect(evaluate(r, call("s", "work", "vault", "y"), system)).toMatchObject({ action: "deny" });
  });

  it("uses the first matching rule: an earlier deny wins over a later allow, and the reverse", () => {
    expect(evaluate(rules("s * work vault deny\ns * @anyvm @anyvm allow"), call("s", "work", "vault"), system).action).toBe("deny");
    expect(evaluate(rules("s * work vault allow\ns * @anyvm @anyvm deny"), call("s", "work", "vault"), system).action).toBe("allow");
  });

  it("keeps the matched action after a target= redirect, even where another rule denies that target", () => {
    const d = evaluate(rules("s * work vault allow target=personal\ns * work personal deny"), call("s", "work", "vault"), system);
    expect(d).toMatchObject({ action: "allow", target: "personal" });
  });

  it("passes user=, autostart= and notify= on, with Qubes' defaults", () => {
    const d = evaluate(rules("s * work vault allow user=root autostart=no notify=yes"), call("s", "work", "vault"), system);
    expect(d).toMatchObject({ action: "allow", user: "root", autostart: false, notify: true });
    const plain = evaluate(rules("s * work vault allow"), call("s", "work", "vault"), system);
    expect(plain).toMatchObject({ autostart: true, notify: false });
    expect(plain.action === "allow" && plain.user).toBeUndefined();
    expect(evaluate(rules("s * work vault deny"), call("s", "work", "vault"), system)).toMatchObject({ notify: true });
    expect(evaluate(rules("s * work vault deny notify=no"), call("s", "work", "vault"), system)).toMatchObject({ notify: false });
  });

  it("ask offers only the targets the policy would allow or ask for, with default_target preselected", () => {
    const r = rules(["s * work personal deny", "s * work @dispvm:default-dvm deny", "s * work @anyvm ask default_target=vault"].join("\n"));
    const d = evaluate(r, call("s", "work", "@default"), system);
    expect(d.action).toBe("ask");
    if (d.action !== "ask") return;
    expect(d.targets).toEqual(["debian-12", "default-dvm", "vault"]);
    expect(d.defaultTarget).toBe("vault");
  });

  it("ask preselects only the policy's default_target, never the target the caller named (as Qubes)", () => {
    const r = rules("s * work @anyvm ask");
    expect(evaluate(r, call("s", "work", "vault"), system)).toMatchObject({ action: "ask", defaultTarget: undefined });
    expect(evaluate(r, call("s", "work", "@default"), system)).toMatchObject({ action: "ask", defaultTarget: undefined });
    expect(evaluate(rules("s * work @anyvm ask default_target=personal"), call("s", "work", "vault"), system)).toMatchObject({ defaultTarget: "personal" });
  });

  describe("ask offers a redirected target as its rule redirects it (audit finding 11)", () => {
    const withProxy: SystemFacts = { domains: new Map([...system.domains, ["vault-proxy", dom("vault-proxy")]]) };
    // [policy, offered targets, answers that are allowed (-> where), answers that are denied]
    it.each([
      [
        "s * @anyvm vault allow target=vault-proxy\ns * @anyvm @anyvm ask",
        ["debian-12", "default-dvm", "personal", "vault-proxy", "@dispvm:default-dvm"],
        [["vault-proxy", "vault-proxy"]],
        ["vault"],
      ],
      [
        "s * @anyvm vault ask target=vault-proxy\ns * @anyvm @anyvm ask",
        ["debian-12", "default-dvm", "personal", "vault-proxy", "@dispvm:default-dvm"],
        [["vault-proxy", "vault-proxy"]],
        ["vault"],
      ],
      [
        "s * @anyvm vault allow target=@dispvm\ns * @anyvm personal deny\ns * @anyvm @anyvm ask",
        ["debian-12", "default-dvm", "vault-proxy", "@dispvm:default-dvm"],
        [["@dispvm:default-dvm", "@dispvm:default-dvm"]],
        ["vault", "personal"],
      ],
      [
        "s * @anyvm vault allow target=dom0\ns * @anyvm @anyvm ask",
        ["debian-12", "default-dvm", "personal", "vault-proxy", "dom0", "@dispvm:default-dvm"],
        [["dom0", "dom0"]],
        ["vault", "@adminvm"],
      ],
      // A redirect to the caller itself is offered nowhere.
      ["s * @anyvm vault allow target=work\ns * @anyvm @anyvm ask", ["debian-12", "default-dvm", "personal", "vault-proxy", "@dispvm:default-dvm"], [], ["vault", "work"]],
    ] as const)("%s", (policy, offered, allowed, denied) => {
      const q = call("s", "work", "@default");
      const d = evaluate(rules(policy), q, withProxy);
      if (d.action !== "ask") throw new Error(`expected ask, got ${JSON.stringify(d)}`);
      expect(d.targets).toEqual(offered);
      for (const [answer, where] of allowed) expect(decideAnswer(d, answer, q, withProxy)).toMatchObject({ action: "allow", target: where });
      for (const answer of denied) expect(decideAnswer(d, answer, q, withProxy)).toMatchObject({ action: "deny", reason: /not offered/ });
    });
  });

  describe("ask to dom0, as Qubes", () => {
    // [rule, requested target]: each asks with dom0 offered and preselected; answering dom0 runs it in dom0.
    it.each([
      ["* * work dom0 ask default_target=dom0", "dom0"],
      ["* * work dom0 ask default_target=dom0", "@adminvm"],
      ["* * work @adminvm ask default_target=dom0", "dom0"],
      ["* * work dom0 ask default_target=@adminvm", "dom0"],
      ["* * work @adminvm ask default_target=@adminvm", "@adminvm"],
      ["* * work @default ask target=dom0 default_target=dom0", "@default"],
      ["* * work @default ask target=@adminvm", "@default"],
    ])("%s, called to %s", (rule, target) => {
      const q = call("s", "work", target);
      const d = evaluate(rules(rule), q, system);
      expect(d).toMatchObject({ action: "ask", targets: ["dom0"] });
      if (d.action !== "ask") return;
      if (rule.includes("default_target")) expect(d.defaultTarget).toBe("dom0");
      expect(decideAnswer(d, "dom0", q, system)).toMatchObject({ action: "allow", target: "dom0" });
      expect(decideAnswer(d, "@adminvm", q, system)).toMatchObject({ action: "deny" });
    });

    it("@anyvm does not offer dom0; a rule naming dom0 does, and only it", () => {
      const anyvm = evaluate(rules("s * work @anyvm ask"), call("s", "work", "@default"), system);
      expect(anyvm.action === "ask" && anyvm.targets).not.toContain("dom0");
      const both = evaluate(rules("s * work dom0 ask\ns * work vault ask\ns * work @default ask"), call("s", "work", "@default"), system);
      expect(both).toMatchObject({ action: "ask", targets: ["vault", "dom0"], defaultTarget: undefined });
      const denied = evaluate(rules("s * work dom0 deny\ns * work @default ask"), call("s", "work", "@default"), system);
      expect(denied).toMatchObject({ action: "deny", reason: /no target is allowed/ });
    });

    it("the admin domain may not call itself", () => {
      expect(evaluate(rules("s * @adminvm @adminvm allow"), call("s", "dom0", "dom0"), system)).toMatchObject({ action: "deny", reason: /cannot call itself/ });
    });
  });

  it("ask with target= offers only that target; an answer outside the offer is denied", () => {
    const q = call("s", "work", "@default");
    const d = evaluate(rules("s * work @default ask target=vault"), q, system);
    expect(d).toMatchObject({ action: "ask", targets: ["vault"] });
    if (d.action !== "ask") return;
    expect(decideAnswer(d, "vault", q, system)).toMatchObject({ action: "allow", target: "vault" });
    expect(decideAnswer(d, "personal", q, system)).toMatchObject({ action: "deny", reason: /not offered/ });
  });

  it("an answer of a disposable template becomes a new disposable", () => {
    const q = call("s", "work", "@default");
    const d = evaluate(rules("s * work @anyvm ask"), q, system);
    if (d.action !== "ask") throw new Error("expected ask");
    expect(d.targets).toContain("@dispvm:default-dvm");
    expect(decideAnswer(d, "@dispvm:default-dvm", q, system)).toMatchObject({ action: "allow", target: "@dispvm:default-dvm" });
  });

  it("decides the README's example policy as the README says", () => {
    const readme = readFileSync(path.join(repoRoot(), "README.md"), "utf8");
    const block = readme.split("An example `30-user.policy`:\n\n")[1]!.split("\n\n")[0]!;
    const text = block.split("\n").map((l) => l.replace(/^    /, "")).join("\n");
    const r = parsePolicy(text, "30-user.policy") as PolicyRule[];
    expect(evaluate(r, call("qubes.Filecopy", "work", "vault"), system)).toMatchObject({ action: "allow", target: "vault", rule: { line: 2 } });
    expect(evaluate(r, call("my.Password", "work", "@default", "get"), system)).toMatchObject({ action: "ask", targets: ["vault"] });
    expect(evaluate(r, call("my.Password", "work", "vault", "set"), system).action).toBe("deny");
  });

  it("an unknown source is denied", () => {
    expect(evaluate(rules("s * @anyvm @anyvm allow"), call("s", "ghost", "vault"), system)).toMatchObject({ action: "deny", reason: /no such source/ });
  });

  it("the shipped default policy parses and decides the standard services as Qubes does", () => {
    const r = rules(DEFAULT_POLICY);
    expect(evaluate(r, call("qubes.Filecopy", "work", "@default"), system).action).toBe("ask");
    expect(evaluate(r, call("qubes.VMShell", "work", "vault"), system).action).toBe("deny");
    expect(evaluate(r, call("qubes.VMShell", "work", "@dispvm"), system)).toMatchObject({ action: "allow", target: "@dispvm:default-dvm" });
    expect(evaluate(r, call("qubes.OpenURL", "work", "@dispvm"), system).action).toBe("allow");
    expect(evaluate(r, call("qubes.OpenURL", "work", "vault"), system).action).toBe("ask");
    expect(evaluate(r, call("qubes.GetDate", "work", "@default"), system)).toMatchObject({ action: "allow", target: "dom0" });
    expect(evaluate(r, call("qubes.GetDate", "personal", "@default"), system).action).toBe("deny");
    expect(evaluate(r, call("qubes.VMRootShell", "work", "@dispvm"), system).action).toBe("deny");
    expect(evaluate(r, call("my.Unknown", "work", "vault"), system).action).toBe("deny");
  });
});

describe("qrexec policy directory", () => {
  let dir = "";
  afterEach(() => rmSync(dir, { recursive: true, force: true }));
  const setup = (files: Record<string, string>) => {
    dir = mkdtempSync(path.join(os.tmpdir(), "qvm-policy-"));
    const d = path.join(dir, "policy.d");
    mkdirSync(d);
    for (const [name, text] of Object.entries(files)) {
      mkdirSync(path.dirname(path.join(d, name)), { recursive: true });
      writeFileSync(path.join(d, name), text);
    }
    return d;
  };
  const decide = (d: string, source = "work", target = "vault") => evaluate(loadPolicy(d), call("s", source, target), system);

  it("reads *.policy files in C-locale order; the first match across files wins", () => {
    // "B" sorts before "a" in the C locale, but upper case is not a valid name; digits and "_" show the order.
    const d = setup({ "50-b.policy": "s * work vault deny", "30-a.policy": "s * work vault allow", "30_z.policy": "s * work vault deny" });
    expect(decide(d)).toMatchObject({ action: "allow", rule: { file: path.join(d, "30-a.policy") } });
  });

  it("ignores dot files and other suffixes (editor swap files)", () => {
    const d = setup({ ".30-a.policy.swp": "garbage", "30-a.policy~": "garbage", ".hidden.policy": "garbage", "README": "x", "50.policy": "s * work vault allow" });
    expect(decide(d).action).toBe("allow");
  });

  it.each([
    ["a file name with upper case", { "30-User.policy": "s * work vault allow" }, /30-User.policy: policy file names may use only/],
    ["a syntax error", { "30-a.policy": "s * work vault allow", "40-b.policy": "\n\ns * work vault permit" }, /40-b.policy:3: action must be/],
    ["a missing include", { "30-a.policy": "!include nothere.policy" }, /30-a.policy:1: cannot read .*nothere.policy: ENOENT/],
    ["a missing include-dir", { "30-a.policy": "!include-dir nothere" }, /30-a.policy:1: cannot read the policy directory/],
    ["an include loop", { "30-a.policy": "!include ../inc/x", "../inc/x": "!include ../policy.d/30-a.policy" }, /include loop/],
    ["an error in an included file", { "30-a.policy": "!include ../inc/x", "../inc/x": "s * work vault allow bogus=1" }, /inc\/x:1: allow takes no parameter "bogus"/],
  ])("fails closed on %s, naming the file and line", (_what, files, msg) => {
    const d = setup(files);
    expect(() => loadPolicy(d)).toThrow(msg);
  });

  it("a directory that cannot be read is an error, not an empty policy", () => {
    expect(() => loadPolicy(path.join(os.tmpdir(), "qvm-no-such-policy-dir"))).toThrow(/cannot read the policy directory/);
  });

  it("expands !include, !include-dir and !include-service in place, paths relative to the including file", () => {
    const d = setup({
      "30-a.policy": "!include ../inc/first\n!include-dir ../incdir\n!include-service s +x ../inc/legacy\ns * work vault deny",
      "../inc/first": "t * work vault allow",
      "../incdir/10-x.policy": "u * work vault allow",
      "../incdir/.ignored.policy": "garbage",
      "../inc/legacy": "# Qubes 4.0 syntax\n$anyvm\t$dispvm\tallow\nwork vault allow,target=personal,user=root\n@include:more",
      "../inc/more": "vault work deny",
    });
    const r = loadPolicy(d);
    expect(r.map((x) => `${x.service}+${x.argument ?? "*"}:${x.action}`)).toEqual(["t+*:allow", "u+*:allow", "s+x:allow", "s+x:allow", "s+x:deny", "s+*:deny"]);
    expect(evaluate(r, call("s", "work", "vault", "x"), system)).toMatchObject({ action: "allow", target: "personal", user: "root" });
    expect(evaluate(r, call("s", "work", "vault", "y"), system)).toMatchObject({ action: "deny" });
  });

  it("follows symlinked policy files", () => {
    const d = setup({ "../real": "s * work vault allow" });
    symlinkSync("../real", path.join(d, "40-link.policy"));
    expect(decide(d).action).toBe("allow");
  });

  it("installs the default policy and a user file, rewriting only the default", () => {
    dir = mkdtempSync(path.join(os.tmpdir(), "qvm-policy-"));
    const d = path.join(dir, "policy.d");
    installDefaultPolicy(d);
    writeFileSync(path.join(d, "90-default.policy"), "tampered");
    writeFileSync(path.join(d, "30-user.policy"), "s * work vault allow\n");
    installDefaultPolicy(d);
    const r = loadPolicy(d);
    expect(r[0]).toMatchObject({ service: "s", action: "allow" });
    expect(r.some((x) => x.service === "qubes.Filecopy")).toBe(true);
  });
});
