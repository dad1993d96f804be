// Integration tests of the admin API against a real qvmd process (no VMs: domains are defined,
// changed and removed, never started, except one start that must fail before any VMM runs).
import { chmodSync } from "node:fs";
import { execFileSync, spawnSync } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { adminSocketPath, adminV1, domainClassFromWord, domainInWords, eventTypeWord, powerStateWord } from "@qvm/protocol";
import { removeTestDaemonDirs, startTestDaemon, testDaemonDirs, qvmdBundle, type TestDaemon } from "../testing/test-daemon.js";

let d: TestDaemon;
beforeAll(async () => {
  d = await startTestDaemon(testDaemonDirs("admin-api"));
  const c = d.client;
  await c.createDomain({ name: "tmpl", class: domainClassFromWord("TemplateVM"), template: "", label: "black", properties: { memory: "700", vcpus: "3" } });
  await c.setProperty({ domain: "", name: "default_template", value: "tmpl" });
});
afterAll(async () => {
  expect(await d.stop()).toBe(0);
  removeTestDaemonDirs(d.dirs);
});

const create = (name: string, extra: Partial<adminV1.CreateDomainRequest> = {}) =>
  d.client.createDomain({ name, class: adminV1.DomainClass.DOMAIN_CLASS_UNSPECIFIED, template: "", label: "red", properties: {}, ...extra });

describe("admin API against a real qvmd", () => {
  it("creates an AppVM whose properties fall back to its template, then to the globals", async () => {
    const { domain } = await create("work", { template: "tmpl", properties: { vcpus: "1" } });
    expect(domainInWords(domain!)).toMatchObject({ name: "work", class: "AppVM", state: "Halted", label: "red", template: "tmpl", netvm: "" });
    const props = Object.fromEntries((await d.client.listProperties({ domain: "work" })).properties.map((p) => [p.name, p]));
    expect(props.vcpus).toMatchObject({ value: "1", source: "own" });
    expect(props.memory).toMatchObject({ value: "700", source: "template" });
    expect(props.qrexec_timeout).toMatchObject({ value: "60", source: "global" });
    expect(props.autostart).toMatchObject({ value: "false", source: "default" });

    await d.client.setProperty({ domain: "", name: "default_qrexec_timeout", value: "90" });
    expect((await d.client.getProperty({ domain: "work", name: "qrexec_timeout" })).property).toMatchObject({ value: "90", source: "global" });
    await d.client.setProperty({ domain: "work", name: "memory", value: "800" });
    expect((await d.client.getProperty({ domain: "work", name: "memory" })).property).toMatchObject({ value: "800", source: "own" });
    await d.client.resetProperty({ domain: "work", name: "memory" });
    expect((await d.client.getProperty({ domain: "work", name: "memory" })).property).toMatchObject({ value: "700", source: "template" });
  });

  it("an AppVM created without --template gets default_template", async () => {
    expect((await create("nodefault")).domain?.template).toBe("tmpl");
  });

  it("refuses bad input with typed errors that name the rule", async () => {
    const cases: Array<[Promise<unknown>, string, RegExp]> = [
      [create("../x"), "INVALID_ARGUMENT", /must start with a letter/],
      [create("dom0"), "INVALID_ARGUMENT", /reserved name/],
      [create("a".repeat(40)), "INVALID_ARGUMENT", /longer than 31/],
      [create("sys-dm"), "INVALID_ARGUMENT", /-dm/],
      [create("nolabel", { label: "" }), "INVALID_ARGUMENT", /label is required/],
      [create("badlabel", { label: "pink" }), "INVALID_ARGUMENT", /unknown label "pink"/],
      [create("badclass", { class: 99 as adminV1.DomainClass }), "INVALID_ARGUMENT", /unknown class 99/],
      [create("notmpl", { template: "work" }), "INVALID_ARGUMENT", /is a AppVM, not a TemplateVM/],
      [create("ghost", { template: "nope" }), "NOT_FOUND", /template "nope" does not exist/],
      [create("work", { template: "tmpl" }), "ALREADY_EXISTS", /already exists/],
      [d.client.setProperty({ domain: "work", name: "colour", value: "red" }), "INVALID_ARGUMENT", /unknown property "colour"; known: label/],
      [d.client.setProperty({ domain: "work", name: "memory", value: "lots" }), "INVALID_ARGUMENT", /must be an integer/],
      [d.client.setProperty({ domain: "work", name: "memory", value: "100" }), "INVALID_ARGUMENT", /between 128 and/],
      [d.client.setProperty({ domain: "work", name: "autostart", value: "maybe" }), "INVALID_ARGUMENT", /true or false/],
      [d.client.setProperty({ domain: "work", name: "template", value: "work" }), "INVALID_ARGUMENT", /not a TemplateVM/],
      [d.client.setProperty({ domain: "tmpl", name: "template", value: "tmpl" }), "INVALID_ARGUMENT", /cannot be set on a TemplateVM/],
      [d.client.setProperty({ domain: "work", name: "netvm", value: "tmpl" }), "INVALID_ARGUMENT", /does not provide network/],
      [d.client.setProperty({ domain: "", name: "default_template", value: "work" }), "INVALID_ARGUMENT", /not a TemplateVM/],
      [d.client.setProperty({ domain: "", name: "no_such_global", value: "1" }), "INVALID_ARGUMENT", /unknown property/],
      [d.client.getDomain({ name: "nope" }), "NOT_FOUND", /no domain named "nope"/],
      [d.client.addTag({ domain: "work", tag: "bad tag!" }), "INVALID_ARGUMENT", /invalid tag/],
      [d.client.setFeature({ domain: "work", name: "x".repeat(65), value: "1" }), "INVALID_ARGUMENT", /invalid feature name/],
      [d.client.removeDomain({ name: "tmpl" }), "FAILED_PRECONDITION", /in use: template of nodefault; template of work; global default_template/],
      [d.client.shutdownDomain({ name: "work", wait: true, force: false }), "FAILED_PRECONDITION", /work is not running/],
      [d.client.pauseDomain({ name: "work" }), "FAILED_PRECONDITION", /not running/],
    ];
    for (const [call, code, message] of cases) {
      await expect(call).rejects.toMatchObject({ name: "QvmError", code, message: expect.stringMatching(message) });
    }
    expect((await d.client.listDomains({})).domains.map((x) => x.name)).toEqual(["nodefault", "tmpl", "work"]);
  });

  it("refuses a netvm loop", async () => {
    await create("net1", { properties: { provides_network: "true" } });
    await create("net2", { properties: { provides_network: "true", netvm: "net1" } });
    await expect(d.client.setProperty({ domain: "net1", name: "netvm", value: "net2" })).rejects.toMatchObject({ code: "INVALID_ARGUMENT", message: expect.stringContaining("Loops in network are unsupported: net1 -> net2 -> net1") });
    await d.client.setProperty({ domain: "net2", name: "netvm", value: "" });
    await d.client.removeDomain({ name: "net2" });
    await d.client.removeDomain({ name: "net1" });
  });

  it("keeps features and tags, and clones a domain with them", async () => {
    await d.client.setFeature({ domain: "work", name: "service.cups", value: "1" });
    await d.client.addTag({ domain: "work", tag: "office" });
    await d.client.addTag({ domain: "work", tag: "office" }); // adding twice is a no-op
    expect((await d.client.listFeatures({ domain: "work" })).features).toEqual({ "service.cups": "1" });
    expect((await d.client.listTags({ domain: "work" })).tags).toEqual(["office"]);
    const { domain } = await d.client.cloneDomain({ source: "work", name: "work2" });
    expect(domain).toMatchObject({ name: "work2", tags: ["office"], template: "tmpl" });
    expect((await d.client.listFeatures({ domain: "work2" })).features).toEqual({ "service.cups": "1" });
    await d.client.removeFeature({ domain: "work2", name: "service.cups" });
    await d.client.removeTag({ domain: "work2", tag: "office" });
    expect((await d.client.getDomain({ name: "work2" })).domain?.tags).toEqual([]);
    await expect(d.client.removeTag({ domain: "work2", tag: "office" })).rejects.toMatchObject({ code: "NOT_FOUND" });
    await d.client.removeDomain({ name: "work2" });
  });

  it("streams events in order", async () => {
    const stream = d.client.watchEvents({ domain: "" });
    const seen: adminV1.Event[] = [];
    stream.on("data", (e: adminV1.Event) => seen.push(e));
    stream.on("error", () => {});
    await new Promise((r) => setTimeout(r, 100)); // the subscription is live once the call is up
    await create("evt");
    await d.client.setProperty({ domain: "evt", name: "vcpus", value: "2" });
    await d.client.addTag({ domain: "evt", tag: "t1" });
    await d.client.removeDomain({ name: "evt" });
    await new Promise((r) => setTimeout(r, 200));
    stream.cancel();
    expect(seen.map((e) => [eventTypeWord(e.type), e.domain])).toEqual([
      ["domain-add", "evt"],
      ["property-set", "evt"],
      ["tag-add", "evt"],
      ["domain-delete", "evt"],
    ]);
    expect(seen[1]!.fields).toMatchObject({ name: "vcpus", value: "2" });
    expect(seen.map((e) => e.seq)).toEqual([...seen.map((e) => e.seq)].sort((a, b) => a - b));
  });

  it("an AppVM whose template lost its root volume fails to start with an error naming `qvm template build`", async () => {
    const { rmSync } = await import("node:fs");
    await d.client.createDomain({ name: "tmpl2", class: domainClassFromWord("TemplateVM"), template: "", label: "black", properties: {} });
    await create("orphanapp", { template: "tmpl2" });
    rmSync(`${d.dirs.dataDir}/volumes/tmpl2/root.img`);
    await expect(d.client.startDomain({ name: "orphanapp" })).rejects.toMatchObject({ code: "MISSING_DEPENDENCY", message: expect.stringContaining("`qvm template build tmpl2`") });
    expect(powerStateWord((await d.client.getDomain({ name: "orphanapp" })).domain!.state)).toBe("Halted");
    await d.client.removeDomain({ name: "orphanapp" });
    await d.client.removeDomain({ name: "tmpl2" });
  });

  it("a domain fails to start without a kernel bundle, with an error that says what to do, and stays halted", async () => {
    await expect(d.client.startDomain({ name: "work" })).rejects.toMatchObject({ code: "NOT_FOUND", message: expect.stringMatching(/no kernel bundle in .*: run `.\/qvm-images build kernel`/) });
    expect(powerStateWord((await d.client.getDomain({ name: "work" })).domain!.state)).toBe("Halted");
  });

  it("refuses a second qvmd on the same runtime directory", () => {
    const r = spawnSync(process.execPath, [qvmdBundle(), "--foreground", "--data-dir", d.dirs.dataDir, "--runtime-dir", d.dirs.runtimeDir], { encoding: "utf8" });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/another qvmd \(pid \d+\) already serves/);
  });

  it("refuses a caller that is not root, qvmd's user or in group qvm, even when the socket lets it connect", async () => {
    // A raw HTTP/2 probe: a served connection gets the server's SETTINGS frame back, a refused
    // one is closed without a byte. Run once as root (control) and once as nobody (uid 65534).
    const sock = adminSocketPath(d.dirs.runtimeDir);
    const probe = `const s = require("net").connect(${JSON.stringify(sock)});
      let n = 0; s.on("data", (b) => (n += b.length)); s.on("error", (e) => console.error(e.message));
      s.write(Buffer.concat([Buffer.from("PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n"), Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0])]));
      setTimeout(() => { console.log(n); process.exit(0); }, 1000);`;
    chmodSync(d.dirs.base, 0o711);
    chmodSync(sock, 0o666);
    try {
      expect(Number(execFileSync(process.execPath, ["-e", probe], { encoding: "utf8" }))).toBeGreaterThan(0);
      const asNobody = spawnSync(process.execPath, ["-e", probe], { uid: 65534, gid: 65534, encoding: "utf8", cwd: "/" });
      expect(asNobody.stderr).toMatch(/ECONNRESET|EPIPE|^$/);
      expect(Number(asNobody.stdout)).toBe(0);
      // spawnSync blocked this process: let qvmd's stderr pipe be read before looking at it.
      await expect.poll(() => d.log(), { timeout: 2000 }).toMatch(/refused admin connection from pid \d+ uid 65534/);
    } finally {
      chmodSync(sock, 0o600);
      chmodSync(d.dirs.base, 0o700);
    }
  });

  it("keeps every domain across a daemon restart", async () => {
    const before = (await d.client.listDomains({})).domains.map((x) => x.name);
    expect(await d.stop()).toBe(0);
    // A domain stored by a qvmd older than the volume model gets its volumes at the next start.
    const { existsSync, rmSync } = await import("node:fs");
    rmSync(`${d.dirs.dataDir}/volumes/work`, { recursive: true });
    d = await startTestDaemon(d.dirs);
    expect(existsSync(`${d.dirs.dataDir}/volumes/work/private.qcow2`)).toBe(true);
    expect(d.log()).toContain("work: made the volumes it lacked");
    expect((await d.client.listDomains({})).domains.map((x) => x.name)).toEqual(before);
    expect((await d.client.getProperty({ domain: "", name: "default_qrexec_timeout" })).property?.value).toBe("90");
  });
});
