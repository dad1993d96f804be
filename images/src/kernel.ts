// The kernel bundle: Debian's generic kernel (downloaded and unpacked, never installed), an
// initramfs built here from busybox-static and images/initramfs/init, and the kernel's modules
// as an ext4 volume the initramfs mounts at /lib/modules.
import { copyFileSync, mkdirSync, readFileSync, writeFileSync, mkdtempSync, rmSync, readdirSync, chmodSync } from "node:fs";
import path from "node:path";
import os from "node:os";
import { QvmError } from "@qvm/protocol";
import { inputsHash, sha256File } from "./hash.js";
import { loadOrder, parseModulesDep } from "./modules.js";
import type { Progress } from "./progress.js";
import { run } from "./run.js";
import { extractVmlinux } from "./vmlinux.js";
import type { ImageStore, KernelBundle, KernelManifest } from "./store.js";
import { repoPath } from "./repo.js";

export const KERNEL_META_PACKAGE = "linux-image-amd64";

/** Loaded by the initramfs, in dependency order: enough to find and mount the root volume. */
export const INITRAMFS_MODULES = [
  "virtio_mmio", "virtio_pci", "virtio_blk", "virtio_net", "virtio_console",
  "vmw_vsock_virtio_transport", "crc32c_generic", "ext4",
];

export const initScript = () => process.env.QVM_INITRAMFS_INIT ?? repoPath("images/initramfs/init");

/** Resolves the versioned kernel package behind linux-image-amd64 from apt's local lists. */
export async function resolveKernelPackage(): Promise<{ name: string; version: string }> {
  const depends = await run("apt-cache", ["depends", KERNEL_META_PACKAGE]);
  const name = /Depends:\s+(linux-image-[0-9][^\s]*-amd64)/.exec(depends)?.[1];
  if (!name) throw new QvmError("MISSING_DEPENDENCY", `apt knows no ${KERNEL_META_PACKAGE}: run \`apt-get update\` as root`);
  const policy = await run("apt-cache", ["policy", name]);
  const version = /Candidate:\s+(\S+)/.exec(policy)?.[1];
  if (!version || version === "(none)") throw new QvmError("MISSING_DEPENDENCY", `apt has no candidate for ${name}: run \`apt-get update\``);
  return { name, version };
}

async function busyboxVersion(): Promise<string> {
  return run("dpkg-query", ["-W", "-f=${Version}", "busybox-static"]).catch(() => {
    throw new QvmError("MISSING_DEPENDENCY", "busybox-static is not installed: run `bash scripts/install-system-deps.sh`");
  });
}

export async function kernelInputs(): Promise<Record<string, unknown>> {
  return {
    // 2: the bundle also holds the uncompressed vmlinux (vmlinux.ts).
    format: 2,
    kernel: await resolveKernelPackage(),
    busybox: await busyboxVersion(),
    init: await sha256File(initScript()),
    modules: INITRAMFS_MODULES,
  };
}

export async function buildKernelBundle(store: ImageStore, progress: Progress, opts: { force?: boolean } = {}): Promise<KernelBundle> {
  const inputs = await kernelInputs();
  const hash = inputsHash(inputs);
  if (!opts.force && store.has("kernels", hash)) {
    store.setCurrent("kernels", hash);
    progress.info(`kernel bundle ${hash} is up to date`);
    return store.kernel();
  }
  const pkg = inputs.kernel as { name: string; version: string };
  const work = mkdtempSync(path.join(os.tmpdir(), "qvm-kernel-"));
  try {
    await store.publish("kernels", hash, async (out) => {
      await progress.step(`download ${pkg.name} ${pkg.version}`, () => run("apt-get", ["download", `${pkg.name}=${pkg.version}`], { cwd: work }));
      const deb = readdirSync(work).find((f) => f.endsWith(".deb"));
      if (!deb) throw new QvmError("IMAGE_BUILD_FAILED", `apt-get download left no .deb in ${work}`);
      const tree = path.join(work, "tree");
      await progress.step("unpack kernel package", () => run("dpkg-deb", ["-x", path.join(work, deb), tree]));
      const release = readdirSync(path.join(tree, "lib/modules"))[0];
      if (!release) throw new QvmError("IMAGE_BUILD_FAILED", `${deb} has no lib/modules`);
      await progress.step("index modules (depmod)", () => run("depmod", ["-b", tree, release]));

      copyFileSync(path.join(tree, "boot", `vmlinuz-${release}`), path.join(out, "vmlinuz"));
      const pvh = await progress.step("extract vmlinux (PVH boot)", () => extractVmlinux(path.join(out, "vmlinuz"), path.join(out, "vmlinux")));
      if (!pvh) progress.info("the kernel has no PVH entry point: domains boot the compressed vmlinuz");
      await progress.step("build initramfs", () => buildInitramfs(tree, release, path.join(work, "initramfs"), path.join(out, "initrd.img")));
      await progress.step("build modules volume", () => buildModulesVolume(path.join(tree, "lib/modules"), path.join(out, "modules.img")));
      const manifest: KernelManifest = {
        kind: "kernel",
        hash,
        kernelRelease: release,
        packageVersion: pkg.version,
        builtAt: new Date().toISOString(),
        files: { vmlinuz: "vmlinuz", ...(pvh ? { vmlinux: "vmlinux" } : {}), initrd: "initrd.img", modules: "modules.img" },
      };
      return manifest;
    });
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  return store.kernel();
}

async function buildInitramfs(tree: string, release: string, stage: string, outFile: string): Promise<void> {
  const modRoot = path.join(tree, "lib/modules", release);
  const { order, missing } = loadOrder(parseModulesDep(readFileSync(path.join(modRoot, "modules.dep"), "utf8")), INITRAMFS_MODULES);
  const builtin = readFileSync(path.join(modRoot, "modules.builtin"), "utf8");
  const reallyMissing = missing.filter((m) => !builtin.includes(`/${m}.ko`));
  if (reallyMissing.length) throw new QvmError("IMAGE_BUILD_FAILED", `kernel ${release} lacks modules: ${reallyMissing.join(", ")}`);

  for (const d of ["bin", "lib/modules", "dev", "proc", "sys", "newroot"]) mkdirSync(path.join(stage, d), { recursive: true });
  copyFileSync("/bin/busybox", path.join(stage, "bin/busybox"));
  copyFileSync(initScript(), path.join(stage, "init"));
  chmodSync(path.join(stage, "init"), 0o755);
  chmodSync(path.join(stage, "bin/busybox"), 0o755);
  const loadList: string[] = [];
  for (const rel of order) {
    const dest = path.join(stage, "lib/modules", rel);
    mkdirSync(path.dirname(dest), { recursive: true });
    copyFileSync(path.join(modRoot, rel), dest);
    // busybox insmod cannot read compressed modules (trixie's kernels ship .ko.xz).
    if (rel.endsWith(".xz")) await run("xz", ["-d", dest]);
    else if (rel.endsWith(".zst")) await run("zstd", ["-d", "--rm", "-q", dest]);
    loadList.push(rel.replace(/\.(xz|zst)$/, ""));
  }
  writeFileSync(path.join(stage, "lib/modules/load-order"), `${loadList.join("\n")}\n`);
  await run("sh", ["-c", `find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet | gzip -6 > "$1"`, "sh", outFile], { cwd: stage });
}

async function buildModulesVolume(modulesDir: string, outFile: string): Promise<void> {
  const bytes = Number((await run("du", ["-sb", modulesDir])).split(/\s/)[0]);
  const sizeMiB = Math.ceil((bytes * 1.25) / (1024 * 1024)) + 32;
  await run("mke2fs", ["-q", "-t", "ext4", "-L", "qvm-modules", "-m", "0", "-d", modulesDir, outFile, `${sizeMiB}M`]);
}
