// Template root images. `debian-12`: mmdebstrap (minbase + systemd + what the agent needs, Node
// from Debian, the net domain's tools: nftables, conntrack, tinyproxy for the updates proxy,
// curl, ping; usbip for USB), the bundled guest agent, its pty helper and systemd units, the
// qrexec tools and services, the USB scripts, the network services switch (qvm-net-services) and
// its files, written as a sparse ext4 image with `mke2fs -d` (no loop devices). mmdebstrap itself
// needs root (it chroots to run maintainer scripts). `debian-12-gui`: the same plus GUI_PACKAGES,
// for windows (built on demand).
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync, existsSync, statSync } from "node:fs";
import path from "node:path";
import os from "node:os";
import { QvmError } from "@qvm/protocol";
import { inputsHash, sha256File } from "./hash.js";
import type { Progress } from "./progress.js";
import { run } from "./run.js";
import type { ImageStore, TemplateImage, TemplateManifest } from "./store.js";
import { repoPath } from "./repo.js";

export interface TemplateRecipe {
  suite: string;
  packages: string[];
  rootSizeMiB: number;
  /** Built only when named (`qvm-images build template NAME`), not by `qvm-images build [all]`. */
  onDemand?: boolean;
}

const DEBIAN_12_PACKAGES = [
  "systemd-sysv", "udev", "nodejs", "socat", "util-linux", "iproute2", "procps", "kmod",
  "ca-certificates", "sudo", "bash", "less", "coreutils",
  // For domains that provide network (sys-net): the agent's firewall and NAT rules, dropping
  // tracked connections, the updates proxy for templates (qvm-updates-proxy.service), checks.
  "nftables", "conntrack", "tinyproxy", "curl", "iputils-ping",
  // USB over qrexec (USB/IP, as Qubes): the usbip tools; the modules (usbip-host, vhci-hcd) come
  // with the kernel's modules volume.
  "usbip",
];

/**
 * What `debian-12-gui` adds for windows (docs/gui.md): the headless compositor the agent starts
 * per window, its VNC server, a terminal, a font and the Wayland clipboard tools. sway's hard
 * Depends bring mesa (libllvm15), swaybg, polkitd and dbus; Xwayland (a Recommends) stays out,
 * and the agent's sway configuration starts neither swaybg nor Xwayland.
 */
export const GUI_PACKAGES = ["sway", "wayvnc", "foot", "fonts-dejavu-core", "wl-clipboard"];

export const TEMPLATES: Record<string, TemplateRecipe> = {
  // The recipe objects are hashed as they are (templateInputs): a new key here rebuilds the image.
  "debian-12": {
    suite: "bookworm",
    packages: DEBIAN_12_PACKAGES,
    rootSizeMiB: 4096,
  },
  "debian-12-gui": {
    suite: "bookworm",
    packages: [...DEBIAN_12_PACKAGES, ...GUI_PACKAGES],
    rootSizeMiB: 4096,
    onDemand: true,
  },
};

/** The templates `qvm-images build [all]` builds: every one not built on demand. */
export const DEFAULT_TEMPLATES = Object.keys(TEMPLATES).filter((t) => !TEMPLATES[t]!.onDemand);

export const DEFAULT_USER = "user";

export function guestAgentFiles() {
  return {
    agent: repoPath("guest-agent/dist/qvm-agent.cjs"),
    /** Starts the agent with the V8 code cache made at build time (makeAgentCodeCache). */
    agentLoader: repoPath("guest-agent/loader/qvm-agent-loader.cjs"),
    qrexecTools: repoPath("guest-agent/dist/qvm-qrexec.cjs"),
    ptySource: repoPath("guest-agent/native/qvm-pty.c"),
    /** Exec data channels: a program's stdio over a connection of its own (docs/agent-protocol.md). */
    execDataSource: repoPath("guest-agent/native/qvm-exec-data.c"),
    /** Every unit here goes to /etc/systemd/system; only the agent's (qvm-agent.service) is enabled. */
    systemdDir: repoPath("guest-agent/systemd"),
    /** qrexec-run (the service lookup) and the standard services, installed in /etc/qubes-rpc. */
    rpcDir: repoPath("guest-agent/rpc"),
    /** qvm-net-services (the switch the agent runs) and the updates proxy's tinyproxy files. */
    netServicesDir: repoPath("guest-agent/net-services"),
    /** The USB scripts (usb-attach, usb-import, usb-release), installed in /usr/lib/qvm. */
    usbDir: repoPath("guest-agent/usb"),
    /** Services' qrexec configuration (qvm-socket=yes), installed in /etc/qubes/rpc-config. */
    rpcConfigDir: repoPath("guest-agent/rpc-config"),
  };
}

export type GuestAgentFiles = ReturnType<typeof guestAgentFiles>;

/** Where the files of guest-agent/net-services go in a domain (absolute paths), and their modes. */
export const NET_SERVICES_FILES: Record<string, { dest: string; mode: number }> = {
  "qvm-net-services": { dest: "/usr/lib/qvm/qvm-net-services", mode: 0o755 },
  "tinyproxy-updates.conf": { dest: "/etc/tinyproxy/qvm-updates-proxy.conf", mode: 0o644 },
  "tinyproxy-updates.filter": { dest: "/etc/tinyproxy/qvm-updates-proxy.filter", mode: 0o644 },
};

/**
 * Units masked in every domain: nothing in a domain needs them, and they cost boot time under
 * emulation; the distribution's tinyproxy and nftables must never run by themselves (the updates
 * proxy is our own unit, started only where the agent turns it on; the agent loads the nft rules,
 * and nftables.service would load /etc/nftables.conf, which flushes the whole ruleset). Domains
 * have no VGA console: only the serial getty (for `qvm console`) is kept.
 */
export const MASKED_UNITS = [
  "apt-daily.timer", "apt-daily-upgrade.timer", "dpkg-db-backup.timer", "e2scrub_all.timer", "fstrim.timer",
  "e2scrub_reap.service", "systemd-timesyncd.service", "getty-static.service",
  ...[1, 2, 3, 4, 5, 6].map((n) => `getty@tty${n}.service`),
  "tinyproxy.service", "nftables.service", "logrotate.timer",
  // Boot time (docs/performance.md): each of these loads a module or mounts a debug filesystem a
  // domain never uses, at 0.4-0.8 s of emulated CPU apiece while the agent starts.
  "modprobe@efi_pstore.service", "modprobe@dm_mod.service", "modprobe@loop.service", "systemd-pstore.service",
  "sys-kernel-debug.mount", "sys-kernel-tracing.mount",
];

/**
 * Modules udev would load at boot for the virtual CPU's features and absent hardware: KVM (no
 * nested virtualization in a domain), CPU crypto drivers whose load-time self-tests cost seconds
 * under emulation, the PC speaker, EFI pstore, cpufreq. Listed in /etc/modprobe.d as
 * `install M /bin/true` so neither udev nor a dependency loads them; a domain's root can still
 * `modprobe --ignore-install`.
 */
/** What the agent's rulesets use (guest-agent/src/net/rules.ts), loaded at boot; their dependencies follow. */
export const NFT_MODULES = ["nf_tables", "nft_ct", "nft_reject_ipv4", "nft_masq", "nft_chain_nat"];

export const UNUSED_MODULES = [
  "kvm", "kvm_amd", "kvm_intel", "irqbypass", "ccp", "crct10dif_pclmul", "crc32_pclmul", "ghash_clmulni_intel",
  "sha1_ssse3", "sha256_ssse3", "sha512_ssse3", "aesni_intel", "crypto_simd", "cryptd", "pcspkr", "efi_pstore",
  "powernow_k8", "acpi_cpufreq", "qemu_fw_cfg",
];

async function hashDir(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const name of readdirSync(dir).sort()) out[name] = await sha256File(path.join(dir, name));
  return out;
}

/** The in-domain qrexec tools: /usr/bin wrappers around the qvm-qrexec bundle. */
export const QREXEC_TOOLS = ["qrexec-client-vm", "qvm-copy", "qvm-move", "qvm-copy-to-vm", "qvm-move-to-vm", "qvm-open-in-vm", "qvm-open-in-dvm"];

export async function templateInputs(name: string): Promise<Record<string, unknown>> {
  const recipe = TEMPLATES[name];
  if (!recipe) throw new QvmError("NOT_FOUND", `unknown template "${name}"; known: ${Object.keys(TEMPLATES).join(", ")}`);
  const files = guestAgentFiles();
  for (const f of [files.agent, files.qrexecTools]) {
    if (!existsSync(f)) throw new QvmError("MISSING_DEPENDENCY", `${f} is missing: run \`npm run build\``);
  }
  return {
    format: 1,
    name,
    recipe,
    agent: await sha256File(files.agent),
    agentLoader: await sha256File(files.agentLoader),
    qrexecTools: await sha256File(files.qrexecTools),
    rpc: await hashDir(files.rpcDir),
    tools: QREXEC_TOOLS,
    pty: await sha256File(files.ptySource),
    execData: await sha256File(files.execDataSource),
    unusedModules: UNUSED_MODULES,
    nftModules: NFT_MODULES,
    units: await hashDir(files.systemdDir),
    netServices: await hashDir(files.netServicesDir),
    usb: await hashDir(files.usbDir),
    rpcConfig: await hashDir(files.rpcConfigDir),
    customize: CUSTOMIZE_VERSION,
  };
}

/** Bump when customize() changes what it writes. */
export const CUSTOMIZE_VERSION = 6;

export async function buildTemplate(store: ImageStore, name: string, progress: Progress, opts: { force?: boolean; mirror?: string } = {}): Promise<TemplateImage> {
  const inputs = await templateInputs(name);
  const recipe = TEMPLATES[name]!;
  const hash = inputsHash(inputs);
  const kind = `templates/${name}` as const;
  if (!opts.force && store.has(kind, hash)) {
    store.setCurrent(kind, hash);
    progress.info(`template ${name} ${hash} is up to date`);
    return store.template(name);
  }
  if (process.getuid?.() !== 0) throw new QvmError("PERMISSION_DENIED", "building a template runs mmdebstrap, which needs root: run as root");
  const work = mkdtempSync(path.join(os.tmpdir(), "qvm-template-"));
  try {
    await store.publish(kind, hash, async (out) => {
      const rootfs = path.join(work, "rootfs");
      const args = ["--variant=minbase", `--include=${recipe.packages.join(",")}`, "--quiet", recipe.suite, rootfs];
      if (opts.mirror ?? process.env.QVM_DEBIAN_MIRROR) args.push(opts.mirror ?? process.env.QVM_DEBIAN_MIRROR!);
      await progress.step(`mmdebstrap ${recipe.suite} (${recipe.packages.length} packages)`, () => run("mmdebstrap", args, { timeout: 30 * 60_000 }));
      await progress.step("install guest agent", () => customize(rootfs, work));
      const rootImg = path.join(out, "root.img");
      await progress.step(`write ext4 image (${recipe.rootSizeMiB} MiB, sparse)`, () =>
        run("mke2fs", ["-q", "-t", "ext4", "-L", "qvm-root", "-d", rootfs, rootImg, `${recipe.rootSizeMiB}M`]),
      );
      const manifest: TemplateManifest = {
        kind: "template",
        name,
        hash,
        suite: recipe.suite,
        builtAt: new Date().toISOString(),
        sizeBytes: statSync(rootImg).size,
        files: { root: "root.img" },
      };
      return manifest;
    });
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  return store.template(name);
}

async function customize(rootfs: string, work: string): Promise<void> {
  const files = guestAgentFiles();
  installGuestFiles(rootfs, files);
  const lib = path.join(rootfs, "usr/lib/qvm");
  // The native helpers: static, so they need nothing from the domain's libc.
  for (const [name, source, libs] of [["qvm-pty", files.ptySource, ["-lutil"]], ["qvm-exec-data", files.execDataSource, []]] as const) {
    const binary = path.join(work, name);
    await run("gcc", ["-O2", "-static", "-s", "-o", binary, source, ...libs]);
    copyFileSync(binary, path.join(lib, name));
    chmodSync(path.join(lib, name), 0o755);
  }
  await makeAgentCodeCache(rootfs);

  writeFileSync(path.join(rootfs, "etc/hostname"), "qvm\n");
  writeFileSync(path.join(rootfs, "etc/hosts"), "127.0.0.1 localhost\n127.0.1.1 qvm\n");
  writeFileSync(path.join(rootfs, "etc/fstab"), "# root and /lib/modules are mounted by the qvm initramfs\n");
  // As in Qubes: the domain's user has passwordless sudo; isolation is between domains.
  writeFileSync(path.join(rootfs, "etc/sudoers.d/qvm"), `${DEFAULT_USER} ALL=(ALL:ALL) NOPASSWD: ALL\n`, { mode: 0o440 });
  await run("chroot", [rootfs, "useradd", "--create-home", "--shell", "/bin/bash", "--groups", "sudo", DEFAULT_USER]);
  // Root logs in without a password on the serial console, which only the host can reach.
  await run("chroot", [rootfs, "passwd", "--delete", "root"]);
}

/**
 * The agent's V8 code cache, made by the domain's own Node (V8 accepts a cache only from the same
 * version and flags): the loader runs the agent in the new root until it listens on a scratch
 * socket, then writes what V8 compiled by then. Without a cache the agent starts all the same,
 * only slower, so a failure here is reported and the build goes on.
 */
async function makeAgentCodeCache(rootfs: string): Promise<void> {
  try {
    await run("chroot", [rootfs, "env", "QVM_AGENT_WRITE_CACHE=1", "QVM_AGENT_NO_VSOCK=1", "QVM_AGENT_SOCKET=/tmp/qvm-agent-cache.sock", "node", "/usr/lib/qvm/qvm-agent-loader.cjs"], { timeout: 120_000 });
  } catch (err) {
    process.stderr.write(`qvm-images: warning: no code cache for the agent (it will start more slowly): ${(err as Error).message}\n`);
  } finally {
    rmSync(path.join(rootfs, "tmp/qvm-agent-cache.sock"), { force: true });
  }
}

/**
 * The guest agent, the qrexec tools and services (and their rpc-config), the USB scripts, the
 * systemd units (only the agent's enabled, MASKED_UNITS masked) and the network services' files,
 * written into a bootstrapped root.
 * Plain file operations, no chroot: the tests run it on an empty directory.
 */
export function installGuestFiles(rootfs: string, files: GuestAgentFiles = guestAgentFiles()): void {
  const lib = path.join(rootfs, "usr/lib/qvm");
  mkdirSync(lib, { recursive: true });
  copyFileSync(files.agent, path.join(lib, "qvm-agent.cjs"));
  copyFileSync(files.agentLoader, path.join(lib, "qvm-agent-loader.cjs"));
  copyFileSync(files.qrexecTools, path.join(lib, "qvm-qrexec.cjs"));
  const rpcDir = path.join(rootfs, "etc/qubes-rpc");
  mkdirSync(rpcDir, { recursive: true });
  mkdirSync(path.join(rootfs, "usr/local/etc/qubes-rpc"), { recursive: true });
  for (const name of readdirSync(files.rpcDir)) {
    const dest = name === "qrexec-run" ? path.join(lib, name) : path.join(rpcDir, name);
    copyFileSync(path.join(files.rpcDir, name), dest);
    chmodSync(dest, 0o755);
  }
  const rpcConfigDir = path.join(rootfs, "etc/qubes/rpc-config");
  mkdirSync(rpcConfigDir, { recursive: true });
  for (const name of readdirSync(files.rpcConfigDir)) {
    copyFileSync(path.join(files.rpcConfigDir, name), path.join(rpcConfigDir, name));
    chmodSync(path.join(rpcConfigDir, name), 0o644);
  }
  for (const name of readdirSync(files.usbDir)) {
    copyFileSync(path.join(files.usbDir, name), path.join(lib, name));
    chmodSync(path.join(lib, name), 0o755);
  }
  mkdirSync(path.join(rootfs, "usr/bin"), { recursive: true });
  for (const tool of QREXEC_TOOLS) {
    writeFileSync(path.join(rootfs, "usr/bin", tool), `#!/bin/sh\nexec node /usr/lib/qvm/qvm-qrexec.cjs ${tool} "$@"\n`, { mode: 0o755 });
  }

  for (const [name, { dest, mode }] of Object.entries(NET_SERVICES_FILES)) {
    const to = path.join(rootfs, dest);
    mkdirSync(path.dirname(to), { recursive: true });
    copyFileSync(path.join(files.netServicesDir, name), to);
    chmodSync(to, mode);
  }

  const modprobe = path.join(rootfs, "etc/modprobe.d");
  mkdirSync(modprobe, { recursive: true });
  writeFileSync(
    path.join(modprobe, "qvm-domain.conf"),
    `# Written by qvm (images/src/template.ts, UNUSED_MODULES): modules a domain never needs.\n${UNUSED_MODULES.map((m) => `blacklist ${m}\ninstall ${m} /bin/true\n`).join("")}`,
  );

  // The agent loads nft rules into every domain right after boot (docs/network.md); loading their
  // modules then took about a second of emulated CPU. systemd-modules-load loads them early
  // instead, on the CPU the agent's start leaves idle.
  const modulesLoad = path.join(rootfs, "etc/modules-load.d");
  mkdirSync(modulesLoad, { recursive: true });
  writeFileSync(path.join(modulesLoad, "qvm-nftables.conf"), `# Written by qvm (images/src/template.ts): the modules of the agent's nft rules.\n${NFT_MODULES.join("\n")}\n`);

  const systemd = path.join(rootfs, "etc/systemd/system");
  mkdirSync(systemd, { recursive: true });
  // Every unit is installed; none but the agent's is enabled: the updates proxy and its
  // forwarder are started by qvm-net-services where the agent turns them on.
  for (const name of readdirSync(files.systemdDir)) {
    copyFileSync(path.join(files.systemdDir, name), path.join(systemd, name));
    chmodSync(path.join(systemd, name), 0o644);
  }
  mkdirSync(path.join(systemd, "sysinit.target.wants"), { recursive: true });
  symlinkSync("../qvm-agent.service", path.join(systemd, "sysinit.target.wants/qvm-agent.service"));
  // Masked, and the links their packages made to enable them are removed.
  const wants = readdirSync(systemd).filter((d) => /\.(wants|requires)$/.test(d));
  for (const unit of MASKED_UNITS) {
    for (const dir of wants) rmSync(path.join(systemd, dir, unit), { force: true });
    rmSync(path.join(systemd, unit), { force: true });
    symlinkSync("/dev/null", path.join(systemd, unit));
  }
}
