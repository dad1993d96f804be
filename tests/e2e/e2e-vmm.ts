// Which VMM the e2e suite runs its domains on: QVM_VMM=qemu (the default) or cloud-hypervisor.
// The same tests run on either; those that test what only the QEMU backend has are listed here
// with the reason, and left out of a cloud-hypervisor run (vitest.config.ts). On a host that
// cannot run the chosen VMM, the domain tests are left out and vmm-guard.test.ts says why.
// Read by vitest.config.ts too, so it imports nothing of the project.
import { accessSync, constants, openSync, closeSync, readFileSync } from "node:fs";
import path from "node:path";

export type E2eVmm = "qemu" | "cloud-hypervisor";

export function e2eVmm(): E2eVmm {
  const v = process.env.QVM_VMM ?? "qemu";
  if (v !== "qemu" && v !== "cloud-hypervisor") throw new Error(`QVM_VMM must be qemu or cloud-hypervisor, not ${JSON.stringify(v)}`);
  return v;
}

/** Test files that need the QEMU backend, and what of it they test. */
export const QEMU_ONLY: Record<string, string> = {
  "usb.test.ts": "emulated USB devices (the cloud-hypervisor driver has none)",
  "network.test.ts": "links over datagram sockets, which cloud-hypervisor cannot carry (it takes tap devices)",
  "network-moves.test.ts": "links over datagram sockets, which cloud-hypervisor cannot carry",
  "test-internet.test.ts": "the passt uplink of the network tests",
  "hostile.test.ts": "the jail of QEMU and vhost-device-vsock processes, by name",
  "lifecycle.test.ts": "QemuDriver's re-attach and its two processes",
};

/** Files that boot no domain: they run whatever the VMM. */
const NO_DOMAINS = ["gui-windows.test.ts", "test-internet.test.ts"];

function executable(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** Why this host cannot run the chosen VMM's domains, or undefined when it can. */
export function vmmMissing(vmm: E2eVmm = e2eVmm()): string | undefined {
  if (vmm === "qemu") return undefined;
  const bin = process.env.QVM_CLOUD_HYPERVISOR ?? (process.env.PATH ?? "").split(":").map((d) => path.join(d, "cloud-hypervisor")).find(executable);
  if (!bin || !executable(bin)) return "no cloud-hypervisor binary (install the static release as /usr/local/bin/cloud-hypervisor, or set QVM_CLOUD_HYPERVISOR)";
  const flags = /^flags\s*:(.*)$/m.exec(readFileSync("/proc/cpuinfo", "utf8"))?.[1]?.split(/\s+/) ?? [];
  if (!flags.includes("vmx") && !flags.includes("svm")) return "no hardware KVM (the CPU has no vmx/svm flag), which cloud-hypervisor needs";
  try {
    closeSync(openSync("/dev/kvm", "r+"));
  } catch {
    return "/dev/kvm cannot be opened, and cloud-hypervisor needs KVM";
  }
  return undefined;
}

/** The e2e files (names) a run leaves out, with why. */
export function excludedFiles(all: readonly string[]): Record<string, string> {
  const vmm = e2eVmm();
  if (vmm === "qemu") return {};
  const missing = vmmMissing(vmm);
  const out: Record<string, string> = {};
  for (const f of all) {
    if (f === "vmm-guard.test.ts") continue;
    if (missing && !NO_DOMAINS.includes(f)) out[f] = `QVM_VMM=${vmm}: ${missing}`;
    else if (QEMU_ONLY[f]) out[f] = `QEMU backend only: ${QEMU_ONLY[f]}`;
  }
  return out;
}
