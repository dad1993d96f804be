// The canary through qvmd: a domain does not boot from a kernel bundle whose file changed after
// it was made (images/src/integrity.ts), and says which file and what to do. Fakes behind the VM
// and volume seams; a real image store in a temporary directory.
import { mkdtempSync, mkdirSync, openSync, rmSync, writeFileSync, writeSync, closeSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ImageStore } from "@qvm/images";
import { DomainStore } from "../store/domain-store.js";
import { FakeVmFactory, fakeDriver, fakeVolumes } from "../testing/fake-vms.js";
import { composeQvmd } from "./compose.js";
import type { Qvmd } from "./qvmd.js";

let dir: string;
let vms: FakeVmFactory;
let qvmd: Qvmd;
let images: ImageStore;
const logs: string[] = [];

beforeEach(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), "qvm-canary-"));
  mkdirSync(path.join(dir, "data"), { recursive: true });
  images = new ImageStore(path.join(dir, "images"));
  await images.publish("kernels", "k1", async (d) => {
    for (const f of ["vmlinuz", "initrd.img", "modules.img"]) writeFileSync(path.join(d, f), `${f} bytes`);
    return { kind: "kernel", hash: "k1", kernelRelease: "6.1", packageVersion: "1", builtAt: "2026-11-30T00:00:00Z", files: { vmlinuz: "vmlinuz", initrd: "initrd.img", modules: "modules.img" } };
  });
  vms = new FakeVmFactory();
  vms.vsockDir = path.join(dir, "v");
  mkdirSync(vms.vsockDir);
  qvmd = composeQvmd({
    dataDir: path.join(dir, "data"),
    runtimeDir: path.join(dir, "run"),
    images,
    drivers: [fakeDriver("qemu")],
    accel: () => "tcg",
    store: DomainStore.open(path.join(dir, "data")),
    volumes: fakeVolumes(path.join(dir, "volumes")),
    vms,
    random: () => 0.5,
    log: (m) => logs.push(m),
  });
  await qvmd.boot();
  await qvmd.create({ name: "tmpl", klass: "TemplateVM", label: "black" });
});

afterEach(async () => {
  await qvmd.close();
  rmSync(dir, { recursive: true, force: true });
});

describe("what boots is what was built", () => {
  it("boots from an intact kernel bundle", async () => {
    await qvmd.start("tmpl");
    expect(qvmd.get("tmpl").state).toBe("Running");
  });

  it("refuses to boot from a kernel bundle changed behind qvm's back, naming the file and the fix; nothing starts", async () => {
    const fd = openSync(images.kernel().initrd, "r+");
    writeSync(fd, Buffer.from("X"), 0, 1, 0);
    closeSync(fd);
    await expect(qvmd.start("tmpl")).rejects.toMatchObject({
      code: "CORRUPT_STATE",
      message: expect.stringMatching(/kernel bundle k1: .*initrd\.img does not match its manifest.*qvm-images build kernel --force/),
    });
    expect(qvmd.get("tmpl").state).toBe("Halted");
    expect([...vms.vms.keys()]).toEqual([]);
  });
});
