// A domain encrypted at rest, as a user runs it (README, "Encrypted domains"): made under a
// passphrase, started only with it, what it writes (home and /) never on the host's disk in
// clear, and a backup of it restored beside it and started under the same passphrase.
// Three boots. The volume operations, the key file and the vault's handling are unit tests
// (host-agent/src/storage/encrypted-volumes.test.ts, host-agent/src/vault/vault-encrypted.test.ts).
import { spawnSync } from "node:child_process";
import { scryptSync } from "node:crypto";
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { withDaemon, type E2eDaemon } from "./qvmd-fixtures.js";

let d: E2eDaemon;
let pass = "";
let wrong = "";
const PASSPHRASE = "an encrypted domain's passphrase";
// The guest joins the marker from two halves: neither a command line nor a log holds it whole.
const HALVES = ["encmark-", `${Date.now()}-q7`] as const;
const MARKER = HALVES.join("");

async function ok(...args: string[]): Promise<string> {
  const r = await d.qvm(args);
  expect(r.exitCode, `qvm ${args.join(" ")}: ${r.stderr}`).toBe(0);
  return r.stdout;
}

/**
 * Files under `dir` (or `dir` itself) holding `needle`: grep, which reads sparse volumes quickly
 * (the data directory holds the template's 4 GiB root).
 */
function filesContaining(dir: string, needle: string): string[] {
  const r = spawnSync("grep", ["-rlF", "--binary-files=binary", needle, dir], { encoding: "utf8" });
  expect(r.status === 0 || r.status === 1, r.stderr).toBe(true);
  return r.stdout.split("\n").filter(Boolean);
}

/**
 * The private volume in clear, the way docs/security.md tells a user to rescue it with stock
 * tools: key = scrypt(passphrase, salt) from private.key.json, its base64 as the LUKS secret.
 */
function decrypt(volumeDir: string, out: string): void {
  const k = JSON.parse(readFileSync(path.join(volumeDir, "private.key.json"), "utf8")) as { logN: number; r: number; p: number; salt: string };
  const key = scryptSync(PASSPHRASE, Buffer.from(k.salt, "base64"), 32, { N: 2 ** k.logN, r: k.r, p: k.p, maxmem: 256 * 1024 ** 2 });
  const secret = path.join(d.dirs.base, "luks-secret");
  writeFileSync(secret, key.toString("base64"), { mode: 0o600 });
  const r = spawnSync("qemu-img", [
    "convert", "-U", "--object", `secret,id=k,file=${secret}`, "--image-opts",
    `driver=qcow2,file.filename=${path.join(volumeDir, "private.qcow2")},encrypt.key-secret=k`, "-O", "raw", out,
  ], { encoding: "utf8" });
  rmSync(secret);
  expect(r.status, r.stderr).toBe(0);
}

beforeAll(async () => {
  d = await withDaemon("e2e-encrypted");
  pass = path.join(d.dirs.base, "pass");
  wrong = path.join(d.dirs.base, "wrong");
  writeFileSync(pass, `${PASSPHRASE}\n`, { mode: 0o600 });
  writeFileSync(wrong, "not the passphrase\n", { mode: 0o600 });
  await ok("create", "--class", "AppVM", "--template", "debian-12", "--label", "black", "--prop", "encrypted=True", "--passphrase-file", pass, "vault");
});

afterAll(async () => {
  await d?.[Symbol.asyncDispose]();
});

describe("a domain encrypted at rest", () => {
  it("does not start without its passphrase or with a wrong one, and changes nothing trying", async () => {
    const priv = path.join(d.dirs.dataDir, "volumes", "vault", "private.qcow2");
    const before = readFileSync(priv);
    const none = await d.qvm(["start", "vault"]);
    expect(none.exitCode).toBe(1);
    expect(none.stderr).toMatch(/vault is encrypted.*passphrase/);
    const bad = await d.qvm(["start", "vault", "--passphrase-file", wrong]);
    expect(bad.exitCode).toBe(1);
    expect(bad.stderr).toMatch(/wrong passphrase for vault/);
    expect(await ok("prefs", "vault", "encrypted")).toMatch(/True|true/);
    expect(readFileSync(priv).equals(before)).toBe(true);
    expect((JSON.parse(await ok("ls", "--json")) as { name: string; state: string }[]).find((x) => x.name === "vault")?.state).toBe("Halted");
  });

  it("starts with it; what it writes to its home and to / is nowhere on the host's disk in clear", async () => {
    await ok("start", "vault", "--passphrase-file", pass);
    // 64 KiB of the marker in the home (private volume) and in /var/tmp (the volatile root overlay).
    const write = `m=${HALVES[0]}; m="$m"${HALVES[1]}; for f in ~/marker /var/tmp/marker; do yes "$m" | head -c 65536 > $f; done; sync`;
    await ok("run", "--pass-io", "vault", "--", "sh", "-c", write);
    // A backup while it runs reads its last revision through the key qvmd holds.
    const running = await d.qvm(["backup", "create", path.join(d.dirs.base, "running.vault"), "vault", "--passphrase-file", pass]);
    expect(running.exitCode, running.stderr).toBe(0);
    expect(running.stdout + running.stderr).toMatch(/vault is running: backed up as of its last start .*still encrypted/);
    expect(filesContaining(d.dirs.dataDir, MARKER)).toEqual([]);
    // / is the volatile overlay, itself encrypted (under a key of this run only).
    const overlay = spawnSync("qemu-img", ["info", "-U", "--output=json", path.join(d.dirs.dataDir, "volatile", "vault", "root.qcow2")], { encoding: "utf8" });
    expect(JSON.parse(overlay.stdout)).toMatchObject({ encrypted: true });
    // …and it is there, in the volume, for whoever has the passphrase.
    const clear = path.join(d.dirs.base, "clear.raw");
    decrypt(path.join(d.dirs.dataDir, "volumes", "vault"), clear);
    expect(filesContaining(clear, MARKER)).toEqual([clear]);
    rmSync(clear);
    await ok("shutdown", "--wait", "vault");
    expect(existsSync(path.join(d.dirs.dataDir, "volatile", "vault"))).toBe(false);
    await ok("backup", "create", path.join(d.dirs.base, "vault.vault"), "vault", "--passphrase-file", pass);
  });

  it("starts again on the root overlay made when it stopped: its home kept, its / fresh", async () => {
    // The stop made the next run's encrypted overlay in the background; wait for it (at most a few seconds).
    const spare = path.join(d.dirs.dataDir, "volatile", ".spare");
    const ready = () => (existsSync(spare) ? readdirSync(spare).filter((f) => f.startsWith("vault.") && f.endsWith(".qcow2")) : []);
    for (let i = 0; i < 150 && ready().length === 0; i++) await new Promise((r) => setTimeout(r, 100));
    expect(ready()).toHaveLength(1);
    await ok("start", "vault", "--passphrase-file", pass);
    expect(readdirSync(spare)).toEqual([]);
    const out = await ok("run", "--pass-io", "vault", "--", "sh", "-c", "head -c 200 ~/marker; test -e /var/tmp/marker && echo root-kept || echo root-fresh");
    expect(out).toContain(MARKER);
    expect(out).toContain("root-fresh");
    await ok("shutdown", "--wait", "vault");
  });

  it("restores a backup of it beside itself, still encrypted, opened by the same passphrase", async () => {
    await ok("backup", "restore", path.join(d.dirs.base, "vault.vault"), "--rename-conflicts", "--passphrase-file", pass);
    const restored = path.join(d.dirs.dataDir, "volumes", "vault-1");
    expect(existsSync(path.join(restored, "private.key.json"))).toBe(true);
    expect(filesContaining(restored, MARKER)).toEqual([]);
    const r = await d.qvm(["start", "vault-1", "--passphrase-file", wrong]);
    expect(r.stderr).toMatch(/wrong passphrase for vault-1/);
    await ok("start", "vault-1", "--passphrase-file", pass);
    const home = await ok("run", "--pass-io", "vault-1", "--", "sh", "-c", "head -c 200 ~/marker; test -e /var/tmp/marker && echo root-kept || echo root-fresh");
    expect(home).toContain(MARKER);
    expect(home).toContain("root-fresh"); // the volatile root is not backed up: it never outlives a run
    await ok("kill", "vault-1");
  });
});
