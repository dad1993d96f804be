import { describe, expect, it } from "vitest";
import { HOST_RESERVE_MIB, VMM_OVERHEAD_MIB, checkAdmission, defaultLimits } from "./admission.js";

const GIB = 1024 ** 3;
const MIB = 1024 ** 2;

describe("default limits", () => {
  it("run as many default-size domains as fit in the host's RAM less the reserve, each at its full RAM plus its VMM (37 on this 24 GiB machine)", () => {
    const l = defaultLimits(24105 * MIB);
    expect(l.maxRunning).toBe(37);
    expect(37 * (400 + VMM_OVERHEAD_MIB)).toBeLessThanOrEqual(24105 - HOST_RESERVE_MIB);
    expect(38 * (400 + VMM_OVERHEAD_MIB)).toBeGreaterThan(24105 - HOST_RESERVE_MIB);
  });

  it("leave guests only what the VMMs' overhead leaves, so a full host keeps its reserve whatever the domains' sizes", () => {
    for (const host of [1, 2, 4, 8, 16, 24, 64, 256]) {
      const l = defaultLimits(host * GIB);
      const hostMiB = host * 1024;
      expect(l.maxRunning).toBeGreaterThanOrEqual(1);
      expect(l.maxGuestMemoryMiB).toBeGreaterThanOrEqual(128);
      if (host >= 8) expect(l.maxGuestMemoryMiB + l.maxRunning * VMM_OVERHEAD_MIB).toBeLessThanOrEqual(hostMiB - HOST_RESERVE_MIB);
      // A small host keeps a quarter for itself instead of all of it.
      else expect(l.maxGuestMemoryMiB + l.maxRunning * VMM_OVERHEAD_MIB).toBeLessThanOrEqual(hostMiB - hostMiB / 4 + 128);
    }
  });

  it("admit the default count of default-size domains, and refuse one more by count", () => {
    const l = defaultLimits(24 * GIB);
    const names = Array.from({ length: l.maxRunning - 1 }, (_, i) => `d${i}`);
    const load = { names, memoryMiB: names.length * 400, growthBytes: 0, freeBytes: 100 * GIB };
    expect(() => checkAdmission(l, { name: "last", memoryMiB: 400, growthBytes: 0 }, load)).not.toThrow();
    const full = { ...load, names: [...names, "last"], memoryMiB: load.memoryMiB + 400 };
    expect(() => checkAdmission(l, { name: "over", memoryMiB: 400, growthBytes: 0 }, full)).toThrow(/--max-running/);
  });
});
