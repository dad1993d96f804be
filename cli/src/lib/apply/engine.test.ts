// `qvm apply` against a real qvmd (no VMs: domains are defined and changed, never started): a
// file that makes a TemplateVM and an AppVM on it with label, memory, features, tags and a
// firewall, checked through the admin client; applying it again does nothing; a dry run changes
// nothing; a changed memory is one action; policy files are written into qvmd's policy.d, and one
// qvmd cannot read is taken back; a failure stops with the rest not applied; nothing is deleted.
// Needs qvmd's bundle (host-agent/dist/qvmd.js: `npm run build`).
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { domainClassFromWord, domainInWords, policyActionWord } from "@qvm/protocol";
import { removeTestDaemonDirs, startTestDaemon, testDaemonDirs, type TestDaemon } from "@qvm/host-agent/testing";
import { applyDeclared } from "./engine.js";
import { parseDeclaredFile } from "./load.js";
import { describeAction } from "./plan.js";

let d: TestDaemon;
beforeAll(async () => {
  d = await startTestDaemon(testDaemonDirs("apply"));
});
afterAll(async () => {
  expect(await d.stop()).toBe(0);
  removeTestDaemonDirs(d.dirs);
});

const file = (memory: number, extra = "") =>
  parseDeclaredFile(
    `version: 1
domains:
  tpl:
    class: TemplateVM
    label: black
  work:
    label: blue
    template: tpl
    netvm: ""
    memory: ${memory}
    features:
      gui: "1"
      service.cups: ""
    tags: [office, project-x]
    firewall:
      - accept example.com tcp 443
      - accept specialtarget=dns
      - drop
${extra}`,
    "apply.yaml",
  );

const apply = (f: ReturnType<typeof file>, dryRun = false) => applyDeclared(d.client, f, { dryRun });
const props = async (domain: string) => Object.fromEntries((await d.client.listProperties({ domain })).properties.map((p) => [p.name, p]));

describe("qvm apply against a real qvmd", () => {
  it("creates a TemplateVM and an AppVM on it, with everything the file declares", async () => {
    const { plan, outcome } = await apply(file(800));
    expect(outcome.error).toBeUndefined();
    expect(outcome.actions.map((a) => a.status)).toEqual(plan.actions.map(() => "applied"));
    expect(plan.actions.map((a) => a.kind)).toEqual(["create-domain", "set-feature", "create-domain", "set-feature", "set-feature", "set-feature", "add-tag", "add-tag", "set-firewall"]);

    const domains = Object.fromEntries((await d.client.listDomains({})).domains.map((x) => [x.name, domainInWords(x)]));
    expect(domains.tpl).toMatchObject({ class: "TemplateVM", label: "black" });
    expect(domains.work).toMatchObject({ class: "AppVM", label: "blue", template: "tpl", netvm: "" });
    expect([...domains.work!.tags].sort()).toEqual(["office", "project-x"]);
    expect((await props("work")).memory).toMatchObject({ value: "800", source: "own" });
    expect((await d.client.listFeatures({ domain: "work" })).features).toEqual({
      gui: "1",
      "service.cups": "",
      "qvm-apply.declared": "properties=memory,netvm,template features=gui,service.cups tags=office,project-x",
    });
    expect((await d.client.listFeatures({ domain: "tpl" })).features).toEqual({ "qvm-apply.declared": "1" });
    expect((await d.client.getFirewall({ domain: "work" })).rules).toEqual(["action=accept dsthost=example.com proto=tcp dstports=443-443", "action=accept specialtarget=dns", "action=drop"]);
  });

  it("applying the same file again does nothing", async () => {
    const { plan, outcome } = await apply(file(800));
    expect(plan.actions).toEqual([]);
    expect(outcome.actions).toEqual([]);
  });

  it("a dry run plans and changes nothing", async () => {
    const { plan, outcome } = await apply(file(1000), true);
    expect(plan.actions.map(describeAction)).toEqual(["~ work memory 800 → 1000"]);
    expect(outcome.actions.map((a) => a.status)).toEqual(["planned"]);
    expect((await props("work")).memory).toMatchObject({ value: "800", source: "own" });
  });

  it("a changed memory is one action", async () => {
    const { plan, outcome } = await apply(file(1000));
    expect(plan.actions).toEqual([{ kind: "set-property", domain: "work", name: "memory", value: "1000", old: "800" }]);
    expect(outcome.error).toBeUndefined();
    expect((await props("work")).memory).toMatchObject({ value: "1000", source: "own" });
    expect((await apply(file(1000))).plan.actions).toEqual([]);
  });

  it("writes policy files into qvmd's policy.d, where qvmd reads them; one qvmd cannot read gets its old text back", async () => {
    const dir = path.join(d.dirs.dataDir, "policy.d");
    const good = `policy:\n  30-user.policy: |\n    my.Service * work tpl allow\n`;
    const { plan, outcome } = await apply(file(1000, good));
    expect(plan.actions.map(describeAction)).toEqual(["~ policy 30-user.policy (changed, 1 line)"]);
    expect(plan.undeclaredPolicyFiles).toEqual([]);
    expect(outcome.error).toBeUndefined();
    expect(readFileSync(path.join(dir, "30-user.policy"), "utf8")).toBe("my.Service * work tpl allow\n");
    const decision = await d.client.checkPolicy({ service: "my.Service", argument: "", source: "work", target: "tpl" });
    expect([policyActionWord(decision.action), decision.ruleFile]).toEqual(["allow", path.join(dir, "30-user.policy")]);

    const broken = `policy:\n  30-user.policy: |\n    my.Service * work tpl allow\n    my.Other * work tpl perhaps\n  40-new.policy: |\n    my.New * work tpl allow\n`;
    const second = await apply(file(1000, broken));
    expect(second.plan.actions.map(describeAction)).toEqual(["~ policy 30-user.policy (changed, 2 lines)", "+ policy 40-new.policy (new, 1 line)"]);
    expect(second.outcome.error).toMatchObject({ code: "POLICY_INVALID", message: expect.stringMatching(/^qvmd refused the new 30-user\.policy: .*30-user\.policy:2.*; it keeps its previous text$/) });
    expect(second.outcome.actions.map((a) => a.status)).toEqual(["failed", "not-applied"]);
    expect(readFileSync(path.join(dir, "30-user.policy"), "utf8")).toBe("my.Service * work tpl allow\n");
    expect(existsSync(path.join(dir, "40-new.policy"))).toBe(false);
    // The policy works as before: nothing was left broken.
    expect(policyActionWord((await d.client.checkPolicy({ service: "my.Service", argument: "", source: "work", target: "tpl" })).action)).toBe("allow");
  });

  it("stops at a failure, with what came before applied and the rest not; applying a fixed file goes on from there", async () => {
    await d.client.createDomain({ name: "plain", class: domainClassFromWord("AppVM"), template: "tpl", label: "red", properties: {} });
    // plain does not provide network: qvmd refuses it as a netvm when `client` is created.
    const extra = `  other:\n    label: green\n    template: tpl\n    netvm: ""\n  client:\n    label: red\n    template: tpl\n    netvm: plain\n`;
    const withClient = (netvm: string) => parseDeclaredFile(`version: 1\ndomains:\n  tpl: { class: TemplateVM, label: black }\n${extra.replace("netvm: plain", `netvm: ${netvm}`)}`, "apply.yaml");
    const { plan, outcome } = await applyDeclared(d.client, withClient("plain"), { dryRun: false });
    expect(plan.actions.map((a) => `${a.kind} ${"domain" in a ? a.domain : ""}`)).toEqual(["create-domain client", "set-feature client", "create-domain other", "set-feature other"]);
    expect(outcome.error).toMatchObject({ code: "INVALID_ARGUMENT", message: expect.stringMatching(/plain qube does not provide network/) });
    expect(outcome.actions.map((a) => a.status)).toEqual(["failed", "not-applied", "not-applied", "not-applied"]);
    expect((await d.client.listDomains({})).domains.map((x) => x.name)).not.toContain("client");

    const fixed = await applyDeclared(d.client, withClient('""'), { dryRun: false });
    expect(fixed.outcome.error).toBeUndefined();
    expect((await applyDeclared(d.client, withClient('""'), { dryRun: false })).plan.actions).toEqual([]);
  });

  it("never deletes: domains not in the file are listed, as not declared or as no longer declared", async () => {
    const { plan, outcome } = await apply(parseDeclaredFile("version: 1\ndomains:\n  tpl: { class: TemplateVM, label: black }\n", "apply.yaml"));
    expect(plan.actions).toEqual([]);
    expect(outcome.error).toBeUndefined();
    expect(plan.notDeclared).toEqual(["plain"]);
    expect(plan.noLongerDeclared).toEqual(["client", "other", "work"]);
    expect((await d.client.listDomains({})).domains.map((x) => x.name).sort()).toEqual(["client", "other", "plain", "tpl", "work"]);
  });

  it("refuses to change a domain's class before changing anything", async () => {
    await expect(apply(parseDeclaredFile("version: 1\ndomains:\n  tpl: { class: StandaloneVM, label: red }\n", "apply.yaml"))).rejects.toMatchObject({
      code: "FAILED_PRECONDITION",
      message: expect.stringMatching(/^tpl is a TemplateVM and the file declares a StandaloneVM/),
    });
    expect((await props("tpl")).label).toMatchObject({ value: "black" });
  });
});
