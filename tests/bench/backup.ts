// Backup figures (issue 19): `qvm backup create` and `restore` of a domain holding 256 MiB of data
// (half random, half text) in a 1 GiB private volume, as throughput next to reading the same volume
// out raw (`qemu-img convert -O raw`) and writing it back (`qemu-img convert -O qcow2`); and the
// size of an incremental backup after 1 MiB changed, next to the full one. No VM boots: the
// domain is halted, its volume filled from the host.
import { execFileSync } from "node:child_process";
import { mkdtempSync, openSync, closeSync, rmSync, statSync, writeFileSync, writeSync } from "node:fs";
import { randomBytes } from "node:crypto";
import os from "node:os";
import path from "node:path";
import { defaultImagesDir, repoRoot } from "@qvm/images";
import { adminV1 } from "@qvm/protocol";
import { removeTestDaemonDirs, startTestDaemon, testDaemonDirs } from "@qvm/host-agent/testing";
import type { Figure } from "./admin.js";

const MiB = 1024 * 1024;
const DATA_MIB = 256;

export async function backupFigures(log: (m: string) => void): Promise<Record<string, Figure>> {
  const dirs = testDaemonDirs("bench-backup", defaultImagesDir());
  const d = await startTestDaemon(dirs);
  const scratch = mkdtempSync(path.join(os.tmpdir(), "qvm-bench-backup-"));
  const cli = path.join(repoRoot(), "cli/dist/qvm.js");
  const env = { ...process.env, QVM_RUNTIME_DIR: dirs.runtimeDir, NO_COLOR: "1" };
  const qvm = (...args: string[]) => execFileSync(process.execPath, [cli, ...args], { env, encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] });
  const timed = (f: () => void) => {
    const t0 = performance.now();
    f();
    return performance.now() - t0;
  };
  try {
    const template = (await d.client.listDomains({})).domains.find((x) => x.class === adminV1.DomainClass.DOMAIN_CLASS_TEMPLATE_VM)!.name;
    qvm("create", "--template", template, "--label", "blue", "bk");
    const priv = (await d.client.listVolumes({ domain: "bk" })).volumes.find((v) => v.name === "private")!.path;
    log(`filling bk's private volume with ${DATA_MIB} MiB (half random, half text) from the host`);
    const raw = path.join(scratch, "fill.raw");
    const fd = openSync(raw, "w");
    for (let i = 0; i < DATA_MIB / 2; i++) writeSync(fd, randomBytes(MiB), 0, MiB, i * 2 * MiB);
    const text = Buffer.from("the quick brown fox jumps over the lazy dog, ".repeat(Math.ceil(MiB / 45)).slice(0, MiB));
    for (let i = 0; i < DATA_MIB / 2; i++) writeSync(fd, text, 0, MiB, (i * 2 + 1) * MiB);
    closeSync(fd);
    execFileSync("truncate", ["-s", "1G", raw]);
    execFileSync("qemu-img", ["convert", "-f", "raw", "-O", "qcow2", raw, priv]);
    rmSync(raw);
    const pass = path.join(scratch, "pass");
    writeFileSync(pass, "bench passphrase\n", { mode: 0o600 });

    const full = path.join(scratch, "full.vault");
    const backup = timed(() => qvm("backup", "create", full, "bk", "--passphrase-file", pass));
    const rawOut = path.join(scratch, "out.raw");
    const readRaw = timed(() => execFileSync("qemu-img", ["convert", "-O", "raw", priv, rawOut]));
    const restore = timed(() => qvm("backup", "restore", full, "--rename-conflicts", "--passphrase-file", pass));
    const writeRaw = timed(() => execFileSync("qemu-img", ["convert", "-f", "raw", "-O", "qcow2", rawOut, path.join(scratch, "back.qcow2")]));
    log(`backup ${backup.toFixed(0)} ms (raw read ${readRaw.toFixed(0)} ms), restore ${restore.toFixed(0)} ms (raw write ${writeRaw.toFixed(0)} ms), vault ${(statSync(full).size / MiB).toFixed(1)} MiB`);

    log("changing 1 MiB of bk's volume and making an incremental backup");
    const changed = path.join(scratch, "changed.bin");
    writeFileSync(changed, randomBytes(MiB));
    execFileSync("qemu-io", ["-f", "qcow2", "-c", `write -s ${changed} ${64 * MiB} ${MiB}`, priv], { stdio: "ignore" });
    const incr = path.join(scratch, "incr.vault");
    qvm("backup", "create", "--incremental-from", full, incr, "bk", "--passphrase-file", pass);
    const mibps = (ms: number) => DATA_MIB / (ms / 1000);
    return {
      backup: { qvm: mibps(backup), baseline: mibps(readRaw), unit: "MiB/s", qvmLabel: `qvm backup create, ${DATA_MIB} MiB of data`, baselineLabel: "qemu-img convert -O raw of the same volume" },
      restore: { qvm: mibps(restore), baseline: mibps(writeRaw), unit: "MiB/s", qvmLabel: "qvm backup restore (verify, then write)", baselineLabel: "qemu-img convert of the raw back to qcow2" },
      "backup incr": {
        qvm: statSync(incr).size / MiB,
        baseline: statSync(full).size / MiB,
        unit: "MiB",
        qvmLabel: "incremental backup after 1 MiB changed",
        baselineLabel: "the full backup",
        note: "The backup figures include one scrypt derivation (about 0.5-1 s here) and, for restore, a full verify before writing.",
      },
    };
  } finally {
    rmSync(scratch, { recursive: true, force: true });
    await d.stop();
    removeTestDaemonDirs(dirs);
  }
}
