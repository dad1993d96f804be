// Chooses hardware acceleration: KVM when the CPU advertises vmx/svm and /dev/kvm opens, TCG
// otherwise. PLATFORM.md: the development machines expose /dev/kvm for PVM guests only, where a
// stock kernel hangs, so the CPU flags are checked, not just the device. QVM_ACCEL overrides.
import { openSync, closeSync, readFileSync } from "node:fs";
import { QvmError } from "@qvm/protocol";
import type { Accel } from "./driver.js";

export interface AccelChoice {
  accel: Accel;
  why: string;
}

export interface AccelProbe {
  cpuinfo(): string;
  kvmOpens(): boolean;
  env(): string | undefined;
}

export const hostAccelProbe: AccelProbe = {
  cpuinfo: () => readFileSync("/proc/cpuinfo", "utf8"),
  kvmOpens: () => {
    try {
      closeSync(openSync("/dev/kvm", "r+"));
      return true;
    } catch {
      return false;
    }
  },
  env: () => process.env.QVM_ACCEL,
};

export function chooseAccel(probe: AccelProbe = hostAccelProbe): AccelChoice {
  const forced = probe.env();
  if (forced) {
    if (forced !== "kvm" && forced !== "tcg") throw new QvmError("INVALID_ARGUMENT", `QVM_ACCEL must be kvm or tcg, not ${JSON.stringify(forced)}`);
    return { accel: forced, why: "QVM_ACCEL" };
  }
  const flags = /^flags\s*:(.*)$/m.exec(probe.cpuinfo())?.[1]?.split(/\s+/) ?? [];
  if (!flags.includes("vmx") && !flags.includes("svm")) return { accel: "tcg", why: "the CPU has no vmx/svm flag" };
  if (!probe.kvmOpens()) return { accel: "tcg", why: "/dev/kvm cannot be opened" };
  return { accel: "kvm", why: "hardware virtualization available" };
}

/** The host's TSC rate in kHz from /proc/cpuinfo, or undefined when it cannot be read. */
export function hostTscKhz(cpuinfo: string = hostAccelProbe.cpuinfo()): number | undefined {
  const mhz = Number(/^cpu MHz\s*:\s*([\d.]+)/m.exec(cpuinfo)?.[1]);
  return Number.isFinite(mhz) && mhz > 100 ? Math.round(mhz * 1000) : undefined;
}
