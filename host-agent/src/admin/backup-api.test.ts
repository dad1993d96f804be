// Backups through the admin API against a real qvmd (no VMs): create streams progress and a
// result, verify tells a wrong passphrase from damage, restore refuses a taken name or renames
// it, paths must be absolute, and the passphrase never reaches qvmd's log.
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import type { ClientReadableStream } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { adminV1, domainClassFromWord, type QvmError } from "@qvm/protocol";
import { removeTestDaemonDirs, startTestDaemon, testDaemonDirs, type TestDaemon } from "../testing/test-daemon.js";
import { collectStream } from "../testing/streams.js";

const PASS = "a passphrase that is never logged";
let d: TestDaemon;
let file: string;

beforeAll(async () => {
  d = await startTestDaemon(testDaemonDirs("backup-api"));
  await d.client.createDomain({ name: "tmpl", class: domainClassFromWord("TemplateVM"), template: "", label: "black", properties: {} });
  await d.client.createDomain({ name: "work", class: domainClassFromWord("AppVM"), template: "tmpl", label: "red", properties: { memory: "600" } });
  await d.client.setFeature({ domain: "work", name: "backup-test", value: "1" });
  file = path.join(d.dirs.base, "work.vault");
}, 30_000);
afterAll(async () => {
  expect(await d.stop()).toBe(0);
  removeTestDaemonDirs(d.dirs);
});

const collect = (stream: ClientReadableStream<adminV1.BackupProgress>): Promise<adminV1.BackupProgress[]> => collectStream(stream, (e) => d.client.errorOf(e));

async function refused(p: Promise<unknown>): Promise<QvmError> {
  return p.then(
    () => {
      throw new Error("expected a refusal");
    },
    (e: QvmError) => e,
  );
}

describe("backups through the admin API", { timeout: 60_000 }, () => {
  it("creates a backup: progress, then the result", async () => {
    const msgs = await collect(d.client.createBackup({ file, domains: ["work"], passphrase: PASS, includeRoot: false, incrementalFrom: "", chain: [] }));
    const last = msgs.at(-1)!;
    expect(last.result).toMatchObject({ file, parentId: "", policyFiles: ["30-user.policy"] }); // the commented user file qvmd makes once
    expect(last.result!.domains.map((x) => [x.name, x.volumes])).toEqual([["work", ["private"]]]);
    const progress = msgs.filter((m) => m.phase === "write");
    expect(progress.length).toBeGreaterThan(0);
    expect(progress.at(-1)!.bytesDone).toBe(progress.at(-1)!.bytesTotal);
    expect(existsSync(file)).toBe(true);
  });

  it("refuses relative paths, an existing file and an empty passphrase", async () => {
    const base = { domains: ["work"], passphrase: PASS, includeRoot: false, incrementalFrom: "", chain: [] };
    expect(await refused(collect(d.client.createBackup({ ...base, file: "rel.vault" })))).toMatchObject({ code: "INVALID_ARGUMENT", message: expect.stringMatching(/absolute path/) });
    expect(await refused(collect(d.client.createBackup({ ...base, file })))).toMatchObject({ code: "ALREADY_EXISTS", message: expect.stringMatching(/exists: choose another/) });
    expect(await refused(collect(d.client.createBackup({ ...base, file: `${file}.2`, passphrase: "" })))).toMatchObject({ code: "INVALID_ARGUMENT" });
    expect(await refused(collect(d.client.createBackup({ ...base, file: `${file}.3`, domains: ["nope"] })))).toMatchObject({ code: "NOT_FOUND" });
    expect(existsSync(`${file}.3`)).toBe(false);
  });

  it("verifies: lists what the backup holds; a wrong passphrase and damage are told apart", async () => {
    const msgs = await collect(d.client.verifyBackup({ file, chain: [], passphrase: PASS }));
    expect(msgs.at(-1)!.result!.domains.map((x) => x.name)).toEqual(["work"]);
    expect(await refused(collect(d.client.verifyBackup({ file, chain: [], passphrase: "wrong" })))).toMatchObject({ code: "PERMISSION_DENIED" });
    const damaged = `${file}.damaged`;
    const bytes = readFileSync(file);
    bytes[200]! ^= 1;
    writeFileSync(damaged, bytes);
    expect(await refused(collect(d.client.verifyBackup({ file: damaged, chain: [], passphrase: PASS })))).toMatchObject({ code: "CORRUPT_STATE" });
  });

  it("restores: a taken name is refused, or renamed with rename_conflicts", async () => {
    const req = { file, chain: [], passphrase: PASS, domains: [], renameConflicts: false };
    expect(await refused(collect(d.client.restoreBackup(req)))).toMatchObject({ code: "ALREADY_EXISTS", message: expect.stringMatching(/--rename-conflicts/) });
    const msgs = await collect(d.client.restoreBackup({ ...req, renameConflicts: true }));
    expect(msgs.at(-1)!.result!.domains.map((x) => [x.name, x.restoredFrom])).toEqual([["work-1", "work"]]);
    expect((await d.client.getDomain({ name: "work-1" })).domain).toMatchObject({ template: "tmpl", label: "red" });
    expect((await d.client.getProperty({ domain: "work-1", name: "memory" })).property).toMatchObject({ value: "600", source: "own" });
    expect((await d.client.listFeatures({ domain: "work-1" })).features).toEqual({ "backup-test": "1" });
    expect((await d.client.listVolumes({ domain: "work-1" })).volumes.map((v) => v.name)).toContain("private");
  });

  it("never logs the passphrase", () => {
    expect(d.log()).not.toContain(PASS);
  });
});
