import { describe, expect, it } from "vitest";
import { chooseAccel, hostTscKhz, type AccelProbe } from "./accel.js";

const probe = (flags: string, kvm: boolean, env?: string): AccelProbe => ({
  cpuinfo: () => `processor\t: 0\nflags\t\t: fpu sse2 ${flags} avx\n`,
  kvmOpens: () => kvm,
  env: () => env,
});

describe("accelerator choice", () => {
  it("uses KVM when the CPU has vmx or svm and /dev/kvm opens", () => {
    expect(chooseAccel(probe("vmx", true)).accel).toBe("kvm");
    expect(chooseAccel(probe("svm", true)).accel).toBe("kvm");
  });
  it("falls back to TCG on a PVM-only host where /dev/kvm exists but the CPU has no vmx/svm", () => {
    expect(chooseAccel(probe("", true))).toEqual({ accel: "tcg", why: "the CPU has no vmx/svm flag" });
  });
  it("falls back to TCG when /dev/kvm cannot be opened", () => {
    expect(chooseAccel(probe("vmx", false)).accel).toBe("tcg");
  });
  it("obeys QVM_ACCEL and rejects nonsense in it", () => {
    expect(chooseAccel(probe("vmx", true, "tcg")).accel).toBe("tcg");
    expect(() => chooseAccel(probe("", false, "xen"))).toThrow(/QVM_ACCEL must be kvm or tcg/);
  });
});

describe("host TSC rate", () => {
  it("reads cpu MHz as kHz", () => expect(hostTscKhz("cpu MHz\t\t: 2596.132\n")).toBe(2596132));
  it("gives up on nonsense", () => expect(hostTscKhz("cpu MHz : n/a\n")).toBeUndefined());
});
