// Encrypted domains as users handle them: the real ./qvm (the CLI bundle) against a real qvmd,
// no VM booted. `qvm create --prop encrypted=True` takes the passphrase from --passphrase-file
// (and without a terminal or file says how to give one); a halted encrypted domain's private
// volume is resized or reverted only through it: none is PASSPHRASE_REQUIRED with the hint, a
// wrong one PERMISSION_DENIED. (Starts need a VM; lib/unlock.test.ts covers the asking.)
import { writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { domainClassFromWord } from "@qvm/protocol";
import { removeTestDaemonDirs, startTestDaemon, testDaemonDirs, type TestDaemon } from "@qvm/host-agent/testing";
import { buildCli, runQvm } from "../test-support/run-qvm.js";

let d: TestDaemon;
let right: string;
let wrong: string;

beforeAll(async () => {
  buildCli();
  d = await startTestDaemon(testDaemonDirs("cli-encrypted"));
  await d.client.createDomain({ name: "tmpl", class: domainClassFromWord("TemplateVM"), template: "", label: "black", properties: {} });
  right = path.join(d.dirs.base, "right");
  wrong = path.join(d.dirs.base, "wrong");
  writeFileSync(right, "correct horse\n");
  writeFileSync(wrong, "not it\n");
}, 120_000);
afterAll(async () => {
  expect(await d?.stop()).toBe(0);
  if (d) removeTestDaemonDirs(d.dirs);
});
const qvm = (args: string[]) => runQvm(args, { runtimeDir: d.dirs.runtimeDir, cwd: d.dirs.base });


describe("encrypted domains through qvm", { timeout: 60_000 }, () => {
  it("create: --passphrase-file only with encrypted=True; without a terminal or file, the hint", async () => {
    const plain = await qvm(["create", "-t", "tmpl", "-l", "red", "plain", "--passphrase-file", right]);
    expect(plain).toMatchObject({ code: 2, stderr: "qvm: --passphrase-file is for an encrypted domain: add --prop encrypted=True\n" });
    const none = await qvm(["create", "-t", "tmpl", "-l", "black", "vault", "--prop", "encrypted=True"]);
    expect(none).toMatchObject({ code: 2, stderr: expect.stringMatching(/no terminal to ask the passphrase on: give it in a file with --passphrase-file FILE/) });
    expect((await d.client.listDomains({})).domains.map((x) => x.name)).toEqual(["tmpl"]);
  });

  it("create with a passphrase file; resize and revert then need that passphrase", async () => {
    const c = await qvm(["create", "-t", "tmpl", "-l", "black", "vault", "--prop", "encrypted=True", "--passphrase-file", right]);
    expect(c).toMatchObject({ code: 0, stderr: "" });
    expect((await qvm(["prefs", "vault", "encrypted"])).stdout).toMatch(/^True\n$/i);

    const none = await qvm(["volume", "resize", "vault:private", "4G"]);
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/^qvm: vault is encrypted: its passphrase is needed.*; no terminal to ask it on: give it in a file with --passphrase-file FILE\n$/);
    const bad = await qvm(["volume", "resize", "vault:private", "4G", "--passphrase-file", wrong]);
    expect(bad).toMatchObject({ code: 1, stderr: expect.stringMatching(/^qvm: wrong passphrase for vault: /) });
    const good = await qvm(["volume", "resize", "vault:private", "4G", "--passphrase-file", right]);
    expect(good).toMatchObject({ code: 0, stderr: "" });
    expect((await d.client.listVolumes({ domain: "vault" })).volumes.find((v) => v.name === "private")?.sizeBytes).toBe(4 * 2 ** 30);

    const badRevert = await qvm(["volume", "revert", "vault:private", "--passphrase-file", wrong]);
    expect(badRevert).toMatchObject({ code: 1, stderr: expect.stringMatching(/^qvm: wrong passphrase for vault: /) });
    // Unlocked; then there is simply nothing to revert to before a first start.
    const revert = await qvm(["volume", "revert", "vault:private", "--passphrase-file", right]);
    expect(revert).toMatchObject({ code: 1, stderr: "qvm: vault:private has no revisions yet (one is taken before each start)\n" });
  });

  it("passphrase: a new one from files; the old one then fails, the new one opens", async () => {
    const next = path.join(d.dirs.base, "next");
    writeFileSync(next, "battery staple\n");
    const bad = await qvm(["volume", "passphrase", "vault", "--passphrase-file", wrong, "--new-passphrase-file", next]);
    expect(bad).toMatchObject({ code: 1, stderr: expect.stringMatching(/^qvm: wrong passphrase for vault: /) });
    const ok = await qvm(["volume", "passphrase", "vault", "--passphrase-file", right, "--new-passphrase-file", next]);
    expect(ok).toMatchObject({ code: 0, stderr: expect.stringContaining("vault: passphrase changed (backups made before keep the old one)") });
    expect(await qvm(["volume", "resize", "vault:private", "5G", "--passphrase-file", right])).toMatchObject({ code: 1, stderr: expect.stringMatching(/wrong passphrase for vault/) });
    expect(await qvm(["volume", "resize", "vault:private", "5G", "--passphrase-file", next])).toMatchObject({ code: 0 });
  });

  it("--passphrase-file is refused where no passphrase goes", async () => {
    const r = await qvm(["volume", "list", "vault", "--passphrase-file", right]);
    expect(r).toMatchObject({ code: 2, stderr: "qvm: --passphrase-file is for revert, resize and passphrase\n" });
  });
});
