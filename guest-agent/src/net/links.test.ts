import { describe, expect, it } from "vitest";
import { planLinks } from "./links.js";

const A = "52:54:00:00:00:0a";
const B = "52:54:00:00:00:0b";
const C = "52:54:00:00:00:0c";
const OTHER = "52:54:00:00:00:99";

describe("planLinks", () => {
  it("renames nothing when every link already has its name", () => {
    const plan = planLinks(
      [
        { name: "eth0", mac: A },
        { name: "vif0", mac: B },
      ],
      new Map([
        [A, "eth0"],
        [B, "vif0"],
      ]),
    );
    expect(plan.steps).toEqual([]);
    expect([...plan.found]).toEqual([
      [A, "eth0"],
      [B, "vif0"],
    ]);
  });

  it("renames straight to a free name", () => {
    const plan = planLinks([{ name: "ens3", mac: A }], new Map([[A, "eth0"]]));
    expect(plan.steps).toEqual([{ from: "ens3", to: "eth0" }]);
  });

  it("swaps names through temporary ones", () => {
    const plan = planLinks(
      [
        { name: "eth0", mac: B },
        { name: "eth1", mac: A },
        { name: "eth2", mac: C },
      ],
      new Map([
        [A, "eth0"],
        [B, "vif0"],
        [C, "vif1"],
      ]),
    );
    expect(plan.steps).toEqual([
      { from: "eth0", to: "vif0" },
      { from: "eth1", to: "qvmtmp0" },
      { from: "eth2", to: "vif1" },
      { from: "qvmtmp0", to: "eth0" },
    ]);
  });

  it("moves an unmanaged link off a wanted name first", () => {
    const plan = planLinks(
      [
        { name: "eth0", mac: OTHER },
        { name: "eth1", mac: A },
      ],
      new Map([[A, "eth0"]]),
    );
    expect(plan.steps).toEqual([
      { from: "eth0", to: "qvmu0" },
      { from: "eth1", to: "eth0" },
    ]);
  });

  it("reports what it did not find, and refuses two links with one wanted MAC", () => {
    const plan = planLinks([{ name: "eth0", mac: A }], new Map([[A, "eth0"], [B, "vif0"]]));
    expect(plan.found.has(B)).toBe(false);
    expect(() => planLinks([{ name: "eth0", mac: A }, { name: "eth1", mac: A }], new Map([[A, "eth0"]]))).toThrow(
      expect.objectContaining({ code: "FAILED_PRECONDITION", message: expect.stringContaining("two network interfaces (eth0, eth1)") }),
    );
  });
});
