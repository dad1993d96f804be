// USB in a service domain (docs/usb.md), end to end with real VMs: sys-usb gets an emulated stick
// (`qvm usb plug --disk`: an ext4 image holding a file of known content, handed to its VMM as a
// file descriptor) on an emulated xHCI controller; `qvm usb` lists it from sys-usb's agent;
// `qvm usb attach work sys-usb:BUSID` carries it to work over USB/IP inside a qrexec call
// (qubes.USB, allowed by a one-shot grant), where work reads the file with the same SHA-256;
// detach takes it away; work asking sys-usb for it by itself is refused by policy; bad requests
// get typed errors and leave nothing half attached; a keyboard hot-plugged into sys-usb is refused
// by the input policy; a persistent assignment comes back when work starts again; killing sys-usb
// while attached leaves work running and the device gone.
import { createHash, randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { withDaemon, withDomain, type E2eDaemon } from "./qvmd-fixtures.js";

let d: E2eDaemon;
let tmp = "";
let stick = "";
let busid = "";
const content = randomBytes(2 * 1024 * 1024);
const sha = createHash("sha256").update(content).digest("hex");

/** A shell command in a domain as root: its exit code and output (trailing newline dropped). */
async function sh(domain: string, command: string) {
  return d.qvm(["run", "-p", "--no-pty", "-u", "root", domain, "--", "sh", "-c", command]);
}

async function poll<T>(what: string, fn: () => Promise<T>, ok: (v: T) => boolean, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (ok(v)) return v;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms; last: ${JSON.stringify(v)}`);
    await new Promise((r) => setTimeout(r, 1000));
  }
}

const devices = async () => (await d.client.listUsbDevices({ backend: "" })).devices;
/** The stick as sys-usb sees it: QEMU's usb-storage is 46f4:0001. */
const theStick = async () => (await devices()).find((x) => x.backend === "sys-usb" && x.vendorId === "46f4");

beforeAll(async () => {
  tmp = mkdtempSync(path.join(os.tmpdir(), "qvm-usb-e2e-"));
  const tree = path.join(tmp, "tree");
  mkdirSync(tree);
  writeFileSync(path.join(tree, "data.bin"), content);
  stick = path.join(tmp, "stick.img");
  await execa("mke2fs", ["-q", "-t", "ext4", "-L", "qvm-stick", "-d", tree, stick, "16M"]);
  d = await withDaemon("e2e-usb");
  await withDomain(d, "sys-usb", { label: "red", properties: { memory: "500", netvm: "" } });
  const plug = await d.qvm(["usb", "plug", "sys-usb", "--disk", stick]);
  expect(plug.exitCode, plug.stderr).toBe(0);
  await Promise.all([
    d.client.startDomain({ name: "sys-usb" }),
    withDomain(d, "work", { label: "blue", properties: { memory: "500", netvm: "" }, start: true }),
  ]);
}, 300_000);

afterAll(async () => {
  await d?.[Symbol.asyncDispose]();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

describe("USB in sys-usb", () => {
  it("lists the emulated stick under sys-usb, free", async () => {
    const dev = await poll("the stick listed", theStick, (x) => Boolean(x));
    busid = dev!.busid;
    expect(dev).toMatchObject({ backend: "sys-usb", productId: "0001", attachedTo: "", present: true });
    expect(dev!.kinds).toContain("storage");
    const ls = await d.qvm(["usb"]);
    expect(ls.exitCode, ls.stderr).toBe(0);
    expect(ls.stdout).toMatch(new RegExp(`sys-usb:${busid.replace(".", "\\.")}\\s+46f4:0001`));
    const json = await d.qvm(["usb", "list", "--json"]);
    expect(JSON.parse(json.stdout)).toContainEqual(expect.objectContaining({ backend: "sys-usb", busid }));
  });

  it("refuses bad attaches with typed errors, leaving nothing attached", async () => {
    const cases: Array<[string[], RegExp]> = [
      [["attach", "work", "sys-usb:9-9"], /no|unknown|not/i],
      [["attach", "sys-usb", `sys-usb:${busid}`], /itself|backend/i],
      [["attach", "nosuch", `sys-usb:${busid}`], /nosuch/],
    ];
    for (const [args, msg] of cases) {
      const r = await d.qvm(["usb", ...args]);
      expect(r.exitCode, args.join(" ")).not.toBe(0);
      expect(r.stderr).toMatch(msg);
    }
    expect((await theStick())!.attachedTo).toBe("");
  });

  it("attaches the stick to work, where the file reads back with the same SHA-256", async () => {
    const r = await d.qvm(["usb", "attach", "work", `sys-usb:${busid}`]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect((await theStick())!.attachedTo).toBe("work");
    // The device appears in work as a USB mass-storage disk.
    const disk = await poll("a USB disk in work", async () => (await sh("work", "for b in /sys/block/sd*; do readlink -f $b | grep -q usb && basename $b; done; true")).stdout.trim(), (s) => s.length > 0);
    const read = await sh("work", `mkdir -p /mnt/stick && mount -o ro /dev/${disk} /mnt/stick && sha256sum /mnt/stick/data.bin && umount /mnt/stick`);
    expect(read.exitCode, read.stderr).toBe(0);
    expect(read.stdout.split(" ")[0]).toBe(sha);
    // Attached elsewhere: refused.
    const again = await d.qvm(["usb", "attach", "sys-usb", `sys-usb:${busid}`]);
    expect(again.exitCode).not.toBe(0);
  });

  it("refuses work's own qubes.USB call to sys-usb (only a grant allows one)", async () => {
    const r = await sh("work", `qrexec-client-vm sys-usb qubes.USB+${busid} </dev/null`);
    expect(r.exitCode).toBe(126);
  });

  it("detaches: the disk leaves work and the stick is free again", async () => {
    const r = await d.qvm(["usb", "detach", "work", `sys-usb:${busid}`]);
    expect(r.exitCode, r.stderr).toBe(0);
    await poll("the USB disk gone from work", async () => (await sh("work", "ls /sys/block | grep -c '^sd' || true")).stdout.trim(), (s) => s === "0");
    await poll("the stick free", theStick, (x) => x?.attachedTo === "");
  });

  it("refuses to attach a keyboard under the shipped input policy (qubes.InputKeyboard deny), hot-plugged into sys-usb", async () => {
    const plug = await d.qvm(["usb", "plug", "sys-usb", "--keyboard"]);
    expect(plug.exitCode, plug.stderr).toBe(0);
    expect(plug.stdout).toMatch(/has it now/);
    const kbd = await poll("the keyboard listed", async () => (await devices()).find((x) => x.backend === "sys-usb" && x.kinds.includes("keyboard")), (x) => Boolean(x));
    const r = await d.qvm(["usb", "attach", "work", `sys-usb:${kbd!.busid}`]);
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toContain("qubes.InputKeyboard");
    expect((await devices()).find((x) => x.busid === kbd!.busid)?.attachedTo).toBe("");
    const id = /^(usb\d+) /.exec(plug.stdout)![1]!;
    expect((await d.qvm(["usb", "unplug", "sys-usb", id])).exitCode).toBe(0);
    await poll("the keyboard gone", async () => (await devices()).some((x) => x.busid === kbd!.busid), (v) => !v);
  });

  it("attaches a persistent assignment again when work starts again", async () => {
    const r = await d.qvm(["usb", "attach", "--persistent", "work", `sys-usb:${busid}`]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(await theStick()).toMatchObject({ attachedTo: "work", persistent: true });
    expect((await d.qvm(["kill", "work"])).exitCode).toBe(0);
    expect((await d.qvm(["start", "work"])).exitCode).toBe(0);
    await poll("the stick attached to work again", theStick, (x) => x?.attachedTo === "work" && x.present);
    await poll("a USB disk in work", async () => (await sh("work", "ls /sys/block | grep -c '^sd' || true")).stdout.trim(), (s) => s === "1");
    // A detach drops the assignment too.
    expect((await d.qvm(["usb", "detach", "work", `sys-usb:${busid}`])).exitCode).toBe(0);
    expect(await theStick()).toMatchObject({ attachedTo: "", persistent: false });
  });

  it("killing sys-usb while attached leaves work running, the device gone", async () => {
    expect((await d.qvm(["usb", "attach", "work", `sys-usb:${busid}`])).exitCode).toBe(0);
    await poll("a USB disk in work", async () => (await sh("work", "ls /sys/block | grep -c '^sd' || true")).stdout.trim(), (s) => s === "1");
    expect((await d.qvm(["kill", "sys-usb"])).exitCode).toBe(0);
    await poll("the USB disk gone from work", async () => (await sh("work", "ls /sys/block | grep -c '^sd' || true")).stdout.trim(), (s) => s === "0");
    expect((await d.client.listDomains({})).domains.find((x) => x.name === "work")?.state).toBeDefined();
    expect((await sh("work", "echo alive")).stdout).toBe("alive");
    expect((await devices()).filter((x) => x.attachedTo === "work")).toEqual([]);
  });
});
