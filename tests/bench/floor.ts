// The boot floor: what booting this kernel costs before qvm adds anything. Plain QEMU boots the
// kernel file qvm boots, with qvm's machine, accelerator, CPU, memory and kernel command line, but
// no devices and a busybox initramfs whose /init is a shell script that prints a marker on the
// serial console and reboots (QEMU exits: -no-reboot). Timed from spawning QEMU to the marker.
// qvm's start → agent Ping over this is what the distribution's initramfs, systemd and the agent
// cost on top of the kernel itself.
import { spawn } from "node:child_process";
import { closeSync, openSync, readSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import type { KernelBundle } from "@qvm/images";
import { QemuDriver, type VmSpec } from "@qvm/host-agent";

const MARKER = "qvm-bench-floor: shell up";
const BOOT_LIMIT_MS = 120_000;

/** Whether an ELF executable has no program interpreter (PT_INTERP): /init runs before any libc is there. */
export function isStaticElf(file: string): boolean {
  const fd = openSync(file, "r");
  try {
    const head = Buffer.alloc(64);
    readSync(fd, head, 0, 64, 0);
    if (head.toString("latin1", 0, 4) !== "\x7fELF" || head[4] !== 2) return false; // 64-bit ELF only
    const phoff = Number(head.readBigUInt64LE(0x20));
    const phentsize = head.readUInt16LE(0x36);
    const phnum = head.readUInt16LE(0x38);
    const table = Buffer.alloc(phentsize * phnum);
    readSync(fd, table, 0, table.length, phoff);
    for (let i = 0; i < phnum; i++) if (table.readUInt32LE(i * phentsize) === 3) return false;
    return true;
  } finally {
    closeSync(fd);
  }
}

interface CpioEntry {
  name: string;
  mode: number;
  data?: Buffer;
  /** For a device node. */
  rdev?: [number, number];
}

/** An uncompressed newc cpio archive (what the kernel unpacks as initramfs), written here so no root is needed for /dev/console. */
export function newcCpio(entries: readonly CpioEntry[]): Buffer {
  const pad4 = (n: number) => Buffer.alloc((4 - (n % 4)) % 4);
  const hex = (n: number) => n.toString(16).padStart(8, "0");
  const parts: Buffer[] = [];
  [...entries, { name: "TRAILER!!!", mode: 0 }].forEach((e: CpioEntry, i) => {
    const data = e.data ?? Buffer.alloc(0);
    const name = Buffer.from(`${e.name}\0`);
    const [major, minor] = e.rdev ?? [0, 0];
    const fields = [i + 1, e.mode, 0, 0, 1, 0, data.length, 0, 0, major, minor, name.length, 0];
    const header = Buffer.from(`070701${fields.map(hex).join("")}`, "latin1");
    parts.push(header, name, pad4(header.length + name.length), data, pad4(data.length));
  });
  return Buffer.concat(parts);
}

/** The floor's initramfs: /init (a busybox shell script), /bin/busybox (static), /dev/console. */
export function writeFloorInitramfs(file: string, busybox = "/bin/busybox"): void {
  if (!isStaticElf(busybox)) throw new Error(`${busybox} is not a static executable: install busybox-static (scripts/setup.sh)`);
  const init = `#!/bin/busybox sh\n/bin/busybox echo "${MARKER}"\n/bin/busybox reboot -f\n`;
  writeFileSync(file, newcCpio([
    { name: "bin", mode: 0o040755 },
    { name: "bin/busybox", mode: 0o100755, data: readFileSync(busybox) },
    { name: "dev", mode: 0o040755 },
    { name: "dev/console", mode: 0o020600, rdev: [5, 1] },
    { name: "init", mode: 0o100755, data: Buffer.from(init) },
  ]));
}

/** qvm's own options that describe the machine and the kernel; devices, sockets and the sandbox are left out. */
const KEEP_WITH_VALUE = new Set(["-machine", "-accel", "-cpu", "-m", "-smp", "-object", "-display", "-kernel", "-append"]);
const KEEP_FLAG = new Set(["-nodefaults", "-no-user-config", "-no-reboot"]);
const FLAGS = new Set([...KEEP_FLAG, "-no-shutdown", "-S"]);

/** The floor's QEMU arguments, cut from the command line qvm's driver builds for the same kernel, memory and CPUs. */
export function floorArgs(qvmCommand: readonly string[], initramfs: string): string[] {
  const out: string[] = [];
  for (let i = 1; i < qvmCommand.length; i++) {
    const opt = qvmCommand[i]!;
    if (FLAGS.has(opt)) {
      if (KEEP_FLAG.has(opt)) out.push(opt);
      continue;
    }
    if (KEEP_WITH_VALUE.has(opt)) out.push(opt, qvmCommand[i + 1]!);
    i++;
  }
  return [...out, "-initrd", initramfs, "-serial", "stdio"];
}

export interface Floor {
  /** Boots the floor once: ms from spawning QEMU to the marker on its serial console. */
  boot(): Promise<number>;
  args: string[];
}

/** Prepares the floor in `dir`: the initramfs, and the arguments from qvm's driver (its TCG translation cache size included). */
export async function prepareFloor(dir: string, kernel: KernelBundle, memoryMiB: number, vcpus: number): Promise<Floor> {
  const initramfs = path.join(dir, "floor-initramfs.cpio");
  writeFloorInitramfs(initramfs);
  const spec: VmSpec = {
    name: "floor", runtimeDir: path.join(dir, "run-floor"), logDir: path.join(dir, "logs-floor"),
    kernel: { image: kernel.image, initrd: kernel.initrd }, memoryMiB, vcpus, guestCid: 3, disks: [],
  };
  const [qemu, ...rest] = (await new QemuDriver().prepare(spec)).command;
  const args = floorArgs([qemu!, ...rest], initramfs);
  return { args, boot: () => bootOnce(qemu!, args) };
}

function bootOnce(qemu: string, args: string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(qemu, args, { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let ms: number | undefined;
    const timer = setTimeout(() => child.kill("SIGKILL"), BOOT_LIMIT_MS);
    child.stdout.on("data", (c: Buffer) => {
      if (ms !== undefined) return;
      out = (out + c.toString("latin1")).slice(-4096);
      if (!out.includes(MARKER)) return;
      ms = performance.now() - t0;
      // The guest reboots, which ends QEMU; a few seconds' grace, then it is killed.
      setTimeout(() => child.kill("SIGKILL"), 5000).unref();
    });
    child.stderr.on("data", (c: Buffer) => (out = (out + c.toString("latin1")).slice(-4096)));
    child.on("error", reject);
    child.on("exit", () => {
      clearTimeout(timer);
      if (ms !== undefined) resolve(ms);
      else reject(new Error(`the floor's QEMU ended without printing its marker; its last output:\n${out}`));
    });
  });
}
