// The link files on a real filesystem. Plain files stand in for the VMMs' sockets: what the
// wiring relies on (hard links share an inode, rename replaces atomically) is the same.
import { mkdtempSync, rmSync, statSync, writeFileSync, existsSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { NET_SLOTS, slotNic } from "./addresses.js";
import { LinkFiles, nicEnds } from "./link-files.js";

let root: string;
const files = new LinkFiles();
const dirOf = (n: string) => path.join(root, n);

/** A domain whose VMM has bound its sockets: eth0, and the slots when it is a net domain. */
function boot(name: string, netvm = false): string {
  const dir = dirOf(name);
  files.prepare(dir);
  writeFileSync(nicEnds(dir, "eth0").local, "");
  if (netvm) for (let s = 0; s < NET_SLOTS; s++) writeFileSync(nicEnds(dir, slotNic(s)).local, "");
  return dir;
}
const halt = (name: string) => rmSync(dirOf(name), { recursive: true, force: true });
const ino = (f: string) => statSync(f).ino;

beforeEach(() => (root = mkdtempSync(path.join(os.tmpdir(), "qvm-links-"))));
afterEach(() => rmSync(root, { recursive: true, force: true }));

describe("LinkFiles", () => {
  it("connects a client on the lowest free slot, each side sending to the other's socket", () => {
    const fw = boot("sys-firewall", true);
    const a = boot("a");
    const b = boot("b");
    expect(files.connect(a, fw, "sys-firewall")).toBe(0);
    expect(files.connect(b, fw, "sys-firewall")).toBe(1);
    expect(ino(nicEnds(fw, "vif0").remote)).toBe(ino(nicEnds(a, "eth0").local));
    expect(ino(nicEnds(a, "eth0").remote)).toBe(ino(nicEnds(fw, "vif0").local));
    expect(ino(nicEnds(b, "eth0").remote)).toBe(ino(nicEnds(fw, "vif1").local));
    expect(files.slotOf(b, fw)).toBe(1);
    // Connecting again keeps the slot.
    expect(files.connect(a, fw, "sys-firewall")).toBe(0);
  });

  it("reuses a freed slot and never gives one client's frames to another", () => {
    const fw = boot("fw", true);
    const a = boot("a");
    const b = boot("b");
    files.connect(a, fw, "fw");
    files.connect(b, fw, "fw");
    files.disconnect(a, fw);
    expect(existsSync(nicEnds(fw, "vif0").remote)).toBe(false);
    expect(existsSync(nicEnds(a, "eth0").remote)).toBe(false);
    const c = boot("c");
    expect(files.connect(c, fw, "fw")).toBe(0);
    expect(files.slotOf(b, fw)).toBe(1);
  });

  it("moves a client to another netvm", () => {
    const n1 = boot("n1", true);
    const n2 = boot("n2", true);
    const a = boot("a");
    files.connect(a, n1, "n1");
    files.disconnect(a, n1);
    expect(files.connect(a, n2, "n2")).toBe(0);
    expect(files.slotOf(a, n1)).toBeUndefined();
    expect(ino(nicEnds(a, "eth0").remote)).toBe(ino(nicEnds(n2, "vif0").local));
  });

  it("prunes slots whose client has stopped, from the files alone", () => {
    const fw = boot("fw", true);
    const a = boot("a");
    const b = boot("b");
    files.connect(a, fw, "fw");
    files.connect(b, fw, "fw");
    const live = new Set([files.clientSocketInode(b)!]);
    halt("a");
    expect(files.pruneSlots(fw, live)).toEqual([0]);
    expect(files.usedSlots(fw)).toEqual(new Map([[1, files.clientSocketInode(b)!]]));
  });

  it("refuses when every slot is taken, naming the fix", () => {
    const fw = boot("fw", true);
    for (let i = 0; i < NET_SLOTS; i++) files.connect(boot(`c${i}`), fw, "fw");
    expect(() => files.connect(boot("late"), fw, "fw")).toThrow(/fw has no free link: all \d+ serve running domains/);
  });

  it("refuses to link a domain whose VMM has not bound its socket", () => {
    const fw = boot("fw", true);
    files.prepare(dirOf("x"));
    expect(() => files.connect(dirOf("x"), fw, "fw")).toThrow(/is missing/);
    expect(() => files.connect(boot("y"), boot("plain"), "plain")).toThrow(/plain's VMM is not running/);
  });
});
