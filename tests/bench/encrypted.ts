// Encrypted domains (issue 19): what encryption at rest costs. Two figures, no VM boots:
// - a start's volume work (unlock: scrypt and the LUKS check; the revision; the encrypted root
//   overlay, made ahead when the domain last stopped, as qvmd does) for an encrypted AppVM, next
//   to the same for a plain AppVM on the same template, through qvmd's own VolumeStore;
// - writes into an encrypted qcow2 volume (AES-XTS in QEMU's block layer, as the VMM does it),
//   next to a plain qcow2 volume.
import { execFileSync } from "node:child_process";
import { mkdtempSync, openSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { ImageStore, defaultImagesDir } from "@qvm/images";
import { VolumeStore } from "@qvm/host-agent";
import type { Figure } from "./admin.js";

const ROUNDS = 3;
const WRITE_MIB = 256;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/**
 * MiB/s of `qemu-img convert` writing WRITE_MIB of random data (a raw file, in the page cache)
 * into a new qcow2 file, encrypted under `keyFile`'s secret or plain: the writes go through the
 * same qcow2 and LUKS layers a VMM's do (qemu-img bench takes no --object in QEMU 7.2).
 */
function writeRate(source: string, out: string, keyFile?: string): number {
  const target = keyFile ? ["--object", `secret,id=k,file=${keyFile}`, "-o", "encrypt.format=luks,encrypt.key-secret=k,encrypt.iter-time=10"] : [];
  for (let attempt = 1; ; attempt++) {
    const t0 = performance.now();
    try {
      execFileSync("qemu-img", ["convert", "-q", "-t", "none", ...target, "-f", "raw", "-O", "qcow2", source, out], { stdio: ["ignore", "ignore", "pipe"] });
      return WRITE_MIB / ((performance.now() - t0) / 1000);
    } catch (err) {
      // qemu-img's PBKDF2 timing for a new LUKS header fails now and then here (storage/qemu-img.ts, creatingLuks).
      if (attempt >= 30 || !/Unable to get accurate CPU usage/.test(String((err as { stderr?: Buffer }).stderr))) throw err;
      rmSync(out, { force: true });
    }
  }
}

export async function encryptedFigures(log: (m: string) => void): Promise<Record<string, Figure>> {
  const templates = new ImageStore(defaultImagesDir()).listTemplates();
  if (!templates.length) throw new Error("no template image: build one with ./qvm-images build template debian-12");
  const templateRoot = templates[0]!.root;
  const data = mkdtempSync(path.join(os.tmpdir(), "qvm-bench-enc-"));
  const volumes = new VolumeStore(data);
  try {
    await volumes.create("plain", "AppVM");
    await volumes.create("vault", "AppVM", { passphrase: "bench passphrase" });
    const plain: number[] = [];
    const encrypted: number[] = [];
    await volumes.makeSpareOverlay("vault", templateRoot); // as after a first run
    for (let i = 0; i < ROUNDS; i++) {
      let t0 = performance.now();
      await volumes.prepareStart("plain", "AppVM", { templateRoot, revisionsToKeep: 1 });
      plain.push(performance.now() - t0);
      t0 = performance.now();
      const key = await volumes.unlock("vault", "bench passphrase");
      const disks = await volumes.prepareStart("vault", "AppVM", { templateRoot, revisionsToKeep: 1, key });
      encrypted.push(performance.now() - t0);
      for (const d of disks) d.key?.wipe();
      await volumes.makeSpareOverlay("vault", templateRoot); // what qvmd does when the domain stops
    }
    // The first start after qvmd's start (no overlay made ahead): made at start.
    volumes.discardSpareOverlay("vault");
    const coldKey = await volumes.unlock("vault", "bench passphrase");
    const t1 = performance.now();
    for (const d of await volumes.prepareStart("vault", "AppVM", { templateRoot, revisionsToKeep: 1, key: coldKey })) d.key?.wipe();
    const cold = performance.now() - t1;
    log(`first start after qvmd's start: ${cold.toFixed(0)} ms (overlay made at start)`);
    log(`start volume work: encrypted ${encrypted.map((t) => t.toFixed(0)).join(", ")} ms; plain ${plain.map((t) => t.toFixed(0)).join(", ")} ms`);

    // The write figure: the same random data into a new volume of each kind (the LUKS secret in a
    // 0600 scratch file here only: a bench's throwaway key). Plain first, encrypted second, twice.
    const keyFile = path.join(data, "bench.key");
    writeFileSync(keyFile, "YmVuY2gta2V5LWJlbmNoLWtleS1iZW5jaC1rZXktMDE=", { mode: 0o600 });
    const source = path.join(data, "source.raw");
    execFileSync("head", ["-c", String(WRITE_MIB * 1024 * 1024), "/dev/urandom"], { stdio: ["ignore", openSync(source, "w"), "inherit"] });
    const plainRates: number[] = [];
    const encRates: number[] = [];
    for (let i = 0; i < 2; i++) {
      plainRates.push(writeRate(source, path.join(data, `plain-${i}.qcow2`)));
      encRates.push(writeRate(source, path.join(data, `enc-${i}.qcow2`), keyFile));
      rmSync(path.join(data, `plain-${i}.qcow2`));
      rmSync(path.join(data, `enc-${i}.qcow2`));
    }
    const encRate = Math.max(...encRates);
    const plainRate = Math.max(...plainRates);
    log(`writes: encrypted ${encRate.toFixed(0)} MiB/s, plain ${plainRate.toFixed(0)} MiB/s`);
    return {
      "encrypted start": {
        qvm: median(encrypted),
        baseline: median(plain),
        unit: "ms",
        qvmLabel: "a start's volume work, encrypted AppVM (scrypt unlock, revision; root overlay made at the last stop)",
        baselineLabel: "the same for a plain AppVM",
        note: `The extra time is one scrypt and the LUKS checks. The first start after qvmd's start makes its encrypted root overlay then: ${(cold / 1000).toFixed(2)} s, mostly qemu-img timing PBKDF2 for the new LUKS header (about 2 s here, whatever encrypt.iter-time says).`,
      },
      "encrypted write": {
        qvm: encRate,
        baseline: plainRate,
        unit: "MiB/s",
        qvmLabel: `${WRITE_MIB} MiB written into a new encrypted qcow2 volume (qemu-img convert, O_DIRECT; best of 2)`,
        baselineLabel: "the same into a plain qcow2 volume",
        note: "Debian's QEMU 7.2 does AES-XTS through nettle one 16-byte block at a time (its own xts.c), not with the CPU's AES instructions in bulk: `openssl speed -evp aes-256-xts` does 6.7 GB/s on this CPU.",
      },
    };
  } finally {
    rmSync(data, { recursive: true, force: true });
  }
}
