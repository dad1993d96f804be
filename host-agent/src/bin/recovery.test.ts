// Recovery loses nothing (audit finding 8): after a torn store, following qvmd's own advice
// (`cp qvm.json.prev qvm.json`), or restoring an older backup of qvm.json, the volumes of domains
// the store no longer knows are kept aside, listed, restored and purged with `qvm volume
// orphans`, byte for byte. A real qvmd (no VMs) and the real qvm CLI; "guest writes" are qemu-io.
import { execFileSync, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { repoRoot } from "@qvm/images";
import { domainClassFromWord, domainClassWord } from "@qvm/protocol";
import { removeTestDaemonDirs, startTestDaemon, testDaemonDirs, type TestDaemon } from "../testing/test-daemon.js";

const dirs = testDaemonDirs("recovery");
afterAll(() => removeTestDaemonDirs(dirs));

const volumes = path.join(dirs.dataDir, "volumes");
const store = path.join(dirs.dataDir, "qvm.json");
const sha = (file: string) => createHash("sha256").update(readFileSync(file)).digest("hex");

/** Writes `byte` over 4 KiB at 1 MiB of a volume, as a guest would. */
function guestWrite(file: string, format: "raw" | "qcow2", byte: number): void {
  execFileSync("qemu-io", ["-f", format, "-c", `write -P ${byte} 1M 4k`, file], { stdio: "ignore" });
}

function holds(file: string, format: "raw" | "qcow2", byte: number): boolean {
  return !/Pattern verification failed/.test(execFileSync("qemu-io", ["-f", format, "-c", `read -P ${byte} 1M 4k`, file], { encoding: "utf8" }));
}

/** The qvm CLI of this checkout, against this qvmd. */
function qvm(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const env: NodeJS.ProcessEnv = { ...process.env, QVM_RUNTIME_DIR: dirs.runtimeDir };
  delete env.NODE_ENV;
  const r = spawnSync(path.join(repoRoot(), "qvm"), args, { encoding: "utf8", env, timeout: 30_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

async function names(d: TestDaemon): Promise<string[]> {
  return (await d.client.listDomains({})).domains.map((x) => x.name).sort();
}

const orphanIds = () => (existsSync(path.join(volumes, ".orphans")) ? readdirSync(path.join(volumes, ".orphans")).sort() : []);

describe("recovery after a torn store", () => {
  it("following qvmd's advice, or restoring an older backup, loses no volume", async () => {
    let d = await startTestDaemon(dirs);
    const create = (name: string, klass: string, template = "") => d.client.createDomain({ name, class: domainClassFromWord(klass), template, label: "blue", properties: {} });
    await create("tmpl", "TemplateVM");
    await d.client.setProperty({ domain: "", name: "default_template", value: "tmpl" });
    const backup = path.join(dirs.base, "qvm.json.backup");
    copyFileSync(store, backup); // an admin's backup: it knows tmpl only
    await create("app", "AppVM", "tmpl");
    await create("work", "StandaloneVM");
    expect(await d.stop()).toBe(0);
    guestWrite(path.join(volumes, "app/private.qcow2"), "qcow2", 0x11);
    guestWrite(path.join(volumes, "work/private.qcow2"), "qcow2", 0x22);
    guestWrite(path.join(volumes, "work/root.img"), "raw", 0x33);
    const appPrivate = sha(path.join(volumes, "app/private.qcow2"));
    const workPrivate = sha(path.join(volumes, "work/private.qcow2"));

    // qvm.json is damaged; qvmd says to use the previous generation, which predates work.
    writeFileSync(store, readFileSync(store, "utf8").slice(0, 100));
    await expect(startTestDaemon(dirs, 5000)).rejects.toThrow(`\`cp ${store}.prev ${store}\``);
    copyFileSync(`${store}.prev`, store);
    mkdirSync(path.join(volumes, "half.partial-4242")); // and a create a crash cut short
    d = await startTestDaemon(dirs);
    expect(await names(d)).toEqual(["app", "tmpl"]);
    const [workId] = orphanIds();
    expect(workId).toMatch(/^work-\d{8}T\d{6}Z$/);
    expect(d.log()).toContain(`volumes of "work" have no domain in the store: kept aside as ${workId}, nothing deleted`);
    expect(d.log()).toContain(`\`qvm volume orphans restore ${workId}\``);
    expect(d.log()).toContain("removed half.partial-4242");
    expect(readdirSync(volumes).sort()).toEqual([".orphans", "app", "tmpl"]);
    expect(sha(path.join(volumes, ".orphans", workId!, "private.qcow2"))).toBe(workPrivate);

    // Listed, then restored as it was: a StandaloneVM (it has a root of its own), red.
    let r = qvm("volume", "orphans");
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^${workId}\\s+work\\s+\\d{4}-\\d\\d-\\d\\dT\\S+Z\\s+\\S+\\s+root, private$`, "m"));
    const listed = JSON.parse(qvm("volume", "orphans", "--json").stdout) as Array<{ id: string; hasRoot: boolean; hasPrivate: boolean; files: string[] }>;
    expect(listed).toMatchObject([{ id: workId, hasRoot: true, hasPrivate: true }]);
    expect(listed[0]!.files).toEqual(["private.qcow2", "root.img"]);
    r = qvm("volume", "orphans", "restore", workId!);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain(`work restored from ${workId} as a StandaloneVM`);
    const work = (await d.client.getDomain({ name: "work" })).domain!;
    expect([domainClassWord(work.class), work.label]).toEqual(["StandaloneVM", "red"]);
    expect(sha(path.join(volumes, "work/private.qcow2"))).toBe(workPrivate);
    expect(holds(path.join(volumes, "work/root.img"), "raw", 0x33)).toBe(true);
    expect(orphanIds()).toEqual([]);
    expect(await d.stop()).toBe(0);

    // An older backup of qvm.json: app and work are both unknown to it.
    copyFileSync(backup, store);
    d = await startTestDaemon(dirs);
    expect(await names(d)).toEqual(["tmpl"]);
    const ids = orphanIds();
    const appId = ids.find((i) => i.startsWith("app-"))!;
    const workId2 = ids.find((i) => i.startsWith("work-"))!;
    expect(ids).toHaveLength(2);
    // An AppVM's private alone: its template is not recorded, so it must be named.
    r = qvm("volume", "orphans", "restore", appId);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`${appId} holds an AppVM's private volume and no root: which template it ran on is not recorded; name one with --template TEMPLATE (default_template is tmpl)`);
    r = qvm("volume", "orphans", "restore", appId, "--class", "StandaloneVM");
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("restore it as an AppVM (--template TEMPLATE)");
    r = qvm("volume", "orphans", "restore", appId, "--template", "tmpl", "--label", "green");
    expect(r.code, r.stderr).toBe(0);
    const app = (await d.client.getDomain({ name: "app" })).domain!;
    expect([domainClassWord(app.class), app.template, app.label]).toEqual(["AppVM", "tmpl", "green"]);
    expect(sha(path.join(volumes, "app/private.qcow2"))).toBe(appPrivate);
    // Under another name and class; the name it had is taken meanwhile.
    await create("work", "StandaloneVM");
    r = qvm("volume", "orphans", "restore", workId2);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("a domain named work exists: restore");
    r = qvm("volume", "orphans", "restore", workId2, "--as", "work-old", "--class", "TemplateVM");
    expect(r.code, r.stderr).toBe(0);
    expect(domainClassWord((await d.client.getDomain({ name: "work-old" })).domain!.class)).toBe("TemplateVM");
    expect(sha(path.join(volumes, "work-old/private.qcow2"))).toBe(workPrivate);
    expect(await d.stop()).toBe(0);

    // Something that is not a domain's volumes: kept aside too, not restorable, purged on request.
    mkdirSync(path.join(volumes, "stray"));
    writeFileSync(path.join(volumes, "stray/notes.txt"), "mine");
    d = await startTestDaemon(dirs);
    const [strayId] = orphanIds();
    expect(strayId).toMatch(/^stray-/);
    r = qvm("volume", "orphans", "restore", strayId!);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`${strayId} holds no private.qcow2 (notes.txt): not a domain's volumes`);
    r = qvm("volume", "orphans", "purge", strayId!);
    expect(r.code, r.stderr).toBe(0);
    expect(orphanIds()).toEqual([]);
    r = qvm("volume", "orphans", "purge", strayId!);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`no kept-aside volumes "${strayId}"`);
    expect(qvm("volume", "orphans").stderr).toContain("no volumes are kept aside");
    expect(await names(d)).toEqual(["app", "tmpl", "work", "work-old"]);
    expect(await d.stop()).toBe(0);

    // Back and forth: the old backup again, then the full store. The domains come back with new,
    // empty volumes (the migration path), and qvmd says where their own ones are.
    const full = path.join(dirs.base, "qvm.json.full");
    copyFileSync(store, full);
    copyFileSync(backup, store);
    d = await startTestDaemon(dirs);
    expect(await d.stop()).toBe(0);
    copyFileSync(full, store);
    d = await startTestDaemon(dirs);
    const appAgain = orphanIds().find((i) => i.startsWith("app-"))!;
    expect(d.log()).toContain(`app: volumes kept aside under its name: ${appAgain}; if they are its own, \`qvm remove app\` (its new, empty volumes go with it) and \`qvm volume orphans restore ${appAgain}\``);
    expect(sha(path.join(volumes, "app/private.qcow2"))).not.toBe(appPrivate);
    expect(qvm("remove", "app").code).toBe(0);
    r = qvm("volume", "orphans", "restore", appAgain, "--template", "tmpl");
    expect(r.code, r.stderr).toBe(0);
    expect(sha(path.join(volumes, "app/private.qcow2"))).toBe(appPrivate);
    expect(await d.stop()).toBe(0);
  }, 120_000);
});
