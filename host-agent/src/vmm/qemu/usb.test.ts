// Emulated USB devices in the QEMU driver, without booting a guest: how qvmd opens a stick's image
// (never through a symbolic link, never hanging on a FIFO, in the stick's access mode), how the
// VMM inherits the descriptors at start (a stand-in QEMU records what it got), and hot-plug
// against a real QEMU with an xHCI controller and no guest: qvm-qmp-add-fd (compiled here) hands
// the image over on the second monitor, blockdev-add/device_add take it, device_del/
// blockdev-del/remove-fd give it back, and a failure leaves nothing open in QEMU.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { chmodSync, closeSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { UsbDeviceSpec, VmSpec } from "../driver.js";
import { childStdio, spawnDetached } from "../process.js";
import { QemuDriver } from "./qemu-driver.js";
import { USB_CONTROLLER_DEVICE } from "./qemu-args.js";
import { QmpClient } from "./qmp.js";
import { checkUsbDevices, initialUsbState, openUsbImage, openUsbImages, QemuUsb, type UsbState } from "./usb.js";

let dir: string;
let helper: string;
const children: ChildProcess[] = [];

beforeAll(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), "qvm-usb-"));
  helper = path.join(dir, "qvm-qmp-add-fd");
  execFileSync("gcc", ["-O2", "-Wall", "-Werror", "-o", helper, path.join(import.meta.dirname, "../../../native/qvm-qmp-add-fd.c")]);
});
afterEach(() => children.splice(0).forEach((c) => c.kill("SIGKILL")));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function image(name: string, size = 1 << 20): string {
  const f = path.join(dir, name);
  writeFileSync(f, Buffer.alloc(size));
  return f;
}

/** The access mode of one of this process's descriptors (O_RDONLY 0, O_RDWR 2), from /proc. */
function accessMode(pid: number | "self", fd: number): number {
  const flags = /flags:\s+([0-7]+)/.exec(readFileSync(`/proc/${pid}/fdinfo/${fd}`, "utf8"))![1]!;
  return parseInt(flags, 8) & 3;
}

/** Descriptors of `pid` that are open on `file`. */
function fdsOn(pid: number, file: string): number[] {
  return readdirSync(`/proc/${pid}/fd`).filter((fd) => {
    try {
      return readlinkSync(`/proc/${pid}/fd/${fd}`) === file;
    } catch {
      return false;
    }
  }).map(Number);
}

describe("opening a stick's image for the VMM", () => {
  it("opens read-write or read-only, as the stick is", () => {
    const f = image("mode.img");
    for (const [readonly, mode] of [[false, 2], [true, 0]] as const) {
      const fd = openUsbImage("sys-usb", "usb1", f, readonly);
      try {
        expect(accessMode("self", fd)).toBe(mode);
      } finally {
        closeSync(fd);
      }
    }
  });

  it("refuses a symbolic link, a FIFO (without hanging), a directory and a missing file, naming the unplug", () => {
    const f = image("target.img");
    const link = path.join(dir, "link.img");
    symlinkSync(f, link);
    const fifo = path.join(dir, "fifo.img");
    execFileSync("mkfifo", [fifo]);
    expect(() => openUsbImage("sys-usb", "usb2", link, false)).toThrow(expect.objectContaining({ code: "FAILED_PRECONDITION", message: expect.stringMatching(/is a symbolic link.*qvm usb unplug sys-usb usb2/) }));
    expect(() => openUsbImage("sys-usb", "usb2", fifo, true)).toThrow(expect.objectContaining({ code: "FAILED_PRECONDITION", message: expect.stringContaining("not a regular file") }));
    expect(() => openUsbImage("sys-usb", "usb2", dir, true)).toThrow(expect.objectContaining({ code: "FAILED_PRECONDITION" }));
    expect(() => openUsbImage("sys-usb", "usb2", path.join(dir, "absent.img"), true)).toThrow(expect.objectContaining({ code: "NOT_FOUND", message: expect.stringContaining("qvm usb unplug sys-usb usb2") }));
  });

  it("opens all of a start's sticks or none", () => {
    const before = readdirSync("/proc/self/fd").length;
    const sticks = [
      { id: "usb1", image: image("all1.img"), readonly: false, fd: 3, fdset: 1 },
      { id: "usb2", image: path.join(dir, "absent.img"), readonly: false, fd: 4, fdset: 2 },
    ];
    expect(() => openUsbImages("sys-usb", sticks)).toThrow(/does not exist/);
    expect(readdirSync("/proc/self/fd").length).toBe(before);
  });

  it("checks what the VMM is given: ids, ports, images", () => {
    const kbd = (id: string, address: string): UsbDeviceSpec => ({ id, kind: "usb", address, device: "keyboard" });
    expect(() => checkUsbDevices("d", [kbd("usb1", "1"), kbd("usb2", "2")])).not.toThrow();
    expect(() => checkUsbDevices("d", [kbd("usb1", "1"), kbd("usb1", "2")])).toThrow(/used twice/);
    expect(() => checkUsbDevices("d", [kbd("usb1", "1"), kbd("usb2", "1")])).toThrow(/taken twice/);
    expect(() => checkUsbDevices("d", [kbd("usb1", "9")])).toThrow(/not one of the controller's 1..8/);
    expect(() => checkUsbDevices("d", [kbd("x,y", "1")])).toThrow(/id is not/);
    expect(() => checkUsbDevices("d", [{ id: "usb1", kind: "usb", address: "1", device: "disk", image: "rel.img" }])).toThrow(/absolute image path/);
    expect(() => checkUsbDevices("d", [{ ...kbd("usb1", "1"), image: "/a.img" }])).toThrow(/has no image/);
  });
});

describe("descriptors a VMM inherits", () => {
  it("places each at its number after stdio, asking for nothing at the places between", () => {
    expect(childStdio(9, [{ at: 5, fd: 20 }, { at: 3, fd: 21 }])).toEqual(["ignore", 9, 9, 21, "ignore", 20]);
    expect(() => childStdio(9, [{ at: 2, fd: 20 }])).toThrow(RangeError);
    expect(() => childStdio(9, [{ at: 4, fd: 20 }, { at: 4, fd: 21 }])).toThrow(/twice/);
  });

  it("spawnDetached hands them over in their access mode", async () => {
    const rw = openUsbImage("d", "usb1", image("inherit-rw.img"), false);
    const ro = openUsbImage("d", "usb2", image("inherit-ro.img"), true);
    const log = path.join(dir, "inherit.log");
    try {
      const script = 'for n in 3 4 5; do echo "$n $(readlink /proc/$$/fd/$n) $(grep flags /proc/$$/fdinfo/$n 2>/dev/null | tr -s "\\t " " ")"; done';
      const p = await spawnDetached("/bin/sh", ["-c", script], log, { inherit: [{ at: 3, fd: rw }, { at: 5, fd: ro }] });
      await p.exited;
    } finally {
      closeSync(rw);
      closeSync(ro);
    }
    const lines = readFileSync(log, "utf8").trim().split("\n");
    expect(lines[0]).toMatch(new RegExp(`^3 ${path.join(dir, "inherit-rw.img")} flags: [0-7]*2$`));
    // Between them: not an image (a test runner may leave its own descriptors there; qvmd has none).
    expect(lines[1]).not.toContain(".img");
    expect(lines[2]).toMatch(new RegExp(`^5 ${path.join(dir, "inherit-ro.img")} flags: [0-7]*0$`));
  });
});

describe("a QEMU start with USB devices (a stand-in QEMU)", () => {
  it("opens the sticks as qvmd, gives them to QEMU only, after stdio, and records the controller in vmm.json", async () => {
    const base = mkdtempSync(path.join(dir, "start-"));
    for (const f of ["vmlinuz", "initrd"]) writeFileSync(path.join(base, f), "");
    const rw = image("start-rw.img");
    const ro = image("start-ro.img");
    const seen = path.join(base, "seen");
    const fakeQemu = path.join(base, "qemu");
    writeFileSync(fakeQemu, `#!/bin/sh\nfor n in 3 4 5; do echo "$n $(readlink /proc/$$/fd/$n)" >> ${seen}; done\necho "$@" >> ${seen}.args\nwhile :; do sleep 1; done\n`);
    const fakeVhost = path.join(base, "vhost");
    // Its socket is its 4th argument (--guest-cid N --socket PATH); it must not see the sticks.
    writeFileSync(fakeVhost, `#!/bin/sh\n: > "$4"\nls /proc/$$/fd > ${seen}.vhost\nwhile :; do sleep 1; done\n`);
    chmodSync(fakeQemu, 0o755);
    chmodSync(fakeVhost, 0o755);
    const spec: VmSpec = {
      name: "sys-usb",
      runtimeDir: path.join(base, "run/domains/sys-usb"),
      logDir: path.join(base, "logs/sys-usb"),
      kernel: { image: path.join(base, "vmlinuz"), initrd: path.join(base, "initrd") },
      disks: [],
      memoryMiB: 256,
      vcpus: 1,
      guestCid: 3,
      devices: [
        { id: "usb1", kind: "usb", address: "1", device: "disk", image: rw, readonly: false },
        { id: "usb2", kind: "usb", address: "2", device: "keyboard" },
        { id: "usb3", kind: "usb", address: "3", device: "disk", image: ro, readonly: true },
      ],
    };
    const driver = new QemuDriver({ qemuBinary: fakeQemu, vhostVsockBinary: fakeVhost, accel: { accel: "tcg", why: "test" }, allowTcg: true, cgroups: false });
    const prepared = await driver.prepare(spec);
    expect(prepared.command.join(" ")).not.toContain("start-r");
    const vm = await driver.start(prepared);
    try {
      for (let i = 0; i < 200 && !existsSync(`${seen}.args`); i++) await new Promise((r) => setTimeout(r, 10));
      const got = readFileSync(seen, "utf8").trim().split("\n");
      expect(got.slice(0, 2)).toEqual([`3 ${rw}`, `4 ${ro}`]);
      expect(got[2]).not.toContain(".img");
      expect(readFileSync(`${seen}.args`, "utf8")).toContain("-add-fd fd=3,set=1");
      expect(readFileSync(`${seen}.vhost`, "utf8").trim().split("\n").map(Number).filter((n) => n >= 3 && n <= 4)).toEqual([]);
      const state = JSON.parse(readFileSync(path.join(spec.runtimeDir, "vmm.json"), "utf8"));
      expect(state.usb).toEqual({
        controller: true,
        devices: [
          { id: "usb1", device: "disk", fdset: 1 },
          { id: "usb2", device: "keyboard" },
          { id: "usb3", device: "disk", fdset: 2 },
        ],
        nextFdset: 3,
      });
      expect(vm.capabilities.usb?.controller).toBe(true);
      expect(vm.capabilities.usb?.devices()).toEqual(["usb1", "usb2", "usb3"]);
      // qvmd keeps none of them open.
      expect(fdsOn(process.pid, rw)).toEqual([]);
      // A qvmd restarted meanwhile knows the controller and the devices from vmm.json.
      vm.detach();
      const again = await driver.attach(spec.runtimeDir, spec.logDir);
      expect(again?.capabilities.usb?.controller).toBe(true);
      expect(again?.capabilities.usb?.devices()).toEqual(["usb1", "usb2", "usb3"]);
      await again!.stop({ force: true });
    } finally {
      await vm.stop({ force: true }).catch(() => {});
    }
  });

  it("refuses a start whose stick is gone, before anything runs", async () => {
    const base = mkdtempSync(path.join(dir, "gone-"));
    for (const f of ["vmlinuz", "initrd"]) writeFileSync(path.join(base, f), "");
    const spec: VmSpec = {
      name: "sys-usb",
      runtimeDir: path.join(base, "run"),
      logDir: path.join(base, "logs"),
      kernel: { image: path.join(base, "vmlinuz"), initrd: path.join(base, "initrd") },
      disks: [],
      memoryMiB: 256,
      vcpus: 1,
      guestCid: 3,
      devices: [{ id: "usb4", kind: "usb", address: "4", device: "disk", image: path.join(base, "gone.img"), readonly: false }],
    };
    await expect(new QemuDriver({ accel: { accel: "tcg", why: "test" }, allowTcg: true }).prepare(spec)).rejects.toMatchObject({ code: "NOT_FOUND", message: expect.stringContaining("qvm usb unplug sys-usb usb4") });
  });
});

describe("hot-plug into a running QEMU (no guest)", () => {
  let rt: string;
  let qemuPid: number;
  let qmp: QmpClient;
  let state: UsbState | undefined;
  let saved: number;

  async function qemu(controller: boolean): Promise<void> {
    rt = mkdtempSync(path.join(dir, "rt-"));
    const args = ["-machine", "microvm,pcie=on", "-accel", "tcg", "-nodefaults", "-display", "none", "-serial", "none", "-m", "64M", "-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"];
    if (controller) args.push("-device", USB_CONTROLLER_DEVICE);
    args.push("-qmp", `unix:${rt}/qmp.sock,server=on,wait=off`, "-qmp", `unix:${rt}/qmp-fd.sock,server=on,wait=off`);
    const c = spawn("qemu-system-x86_64", args, { stdio: "ignore" });
    children.push(c);
    qemuPid = c.pid!;
    for (let i = 0; i < 500 && !existsSync(`${rt}/qmp-fd.sock`); i++) await new Promise((r) => setTimeout(r, 10));
    qmp = await QmpClient.connect(`${rt}/qmp.sock`);
    state = controller ? initialUsbState([{ id: "usb1", kind: "usb", address: "1", device: "keyboard" }], []) : undefined;
    if (controller) await qmp.execute("device_add", { driver: "usb-kbd", id: "usb1", bus: "xhci.0", port: "1" });
    saved = 0;
  }

  const usb = (addFdHelper: () => string | undefined = () => helper) =>
    new QemuUsb({ name: "sys-usb", qemuPid, state, qmp: async () => qmp, qmpFdSocket: `${rt}/qmp-fd.sock`, addFdHelper, save: () => saved++, log: () => {} });
  const stick = (id: string, port: string, file: string, readonly = false): UsbDeviceSpec => ({ id, kind: "usb", address: port, device: "disk", image: file, readonly });
  const fdsets = async () => (await qmp.execute<{ "fdset-id": number; fds: { fd: number }[] }[]>("query-fdsets")).map((s) => s["fdset-id"]).sort();
  const peripherals = async () => (await qmp.execute<{ name: string }[]>("qom-list", { path: "/machine/peripheral" })).map((p) => p.name).filter((n) => n.startsWith("usb")).sort();

  afterEach(() => qmp?.close());

  it("adds a stick through qvm-qmp-add-fd and a keyboard, in the stick's access mode, and removes them leaving nothing open", async () => {
    await qemu(true);
    const cap = usb();
    const rw = image("hot-rw.img");
    const ro = image("hot-ro.img");
    await cap.add(stick("usb2", "2", rw));
    await cap.add(stick("usb7", "7", ro, true));
    await cap.add({ id: "usb4", kind: "usb", address: "4", device: "tablet" });
    expect(cap.devices()).toEqual(["usb1", "usb2", "usb7", "usb4"]);
    expect(await peripherals()).toEqual(["usb1", "usb2", "usb4", "usb7"]);
    expect(state!.devices.find((d) => d.id === "usb2")).toEqual({ id: "usb2", device: "disk", fdset: 1 });
    expect(state!.nextFdset).toBe(3);
    expect(saved).toBeGreaterThan(0);
    // QEMU holds each image (the set's descriptor and the block layer's dup), rw and ro as plugged.
    const held = fdsOn(qemuPid, rw);
    expect(held.length).toBeGreaterThan(0);
    expect(held.every((fd) => accessMode(qemuPid, fd) === 2)).toBe(true);
    expect(fdsOn(qemuPid, ro).every((fd) => accessMode(qemuPid, fd) === 0)).toBe(true);
    expect(await fdsets()).toEqual([1, 2]);

    await cap.remove("usb2");
    await cap.remove("usb7");
    await cap.remove("usb4");
    await cap.remove("usb1");
    expect(cap.devices()).toEqual([]);
    expect(await peripherals()).toEqual([]);
    expect(fdsOn(qemuPid, rw)).toEqual([]);
    expect(fdsOn(qemuPid, ro)).toEqual([]);
    expect(await fdsets()).toEqual([]);
    await expect(cap.remove("usb2")).rejects.toMatchObject({ code: "NOT_FOUND" });
  });

  it("leaves nothing in QEMU when a step fails, and never reuses a set", async () => {
    await qemu(true);
    const cap = usb();
    const rw = image("fail.img");
    // device_add fails: the port is the keyboard's.
    await expect(cap.add(stick("usb2", "1", rw))).rejects.toMatchObject({ code: "VMM_FAILED" });
    expect(cap.devices()).toEqual(["usb1"]);
    expect(fdsOn(qemuPid, rw)).toEqual([]);
    expect(await fdsets()).toEqual([]);
    expect(await peripherals()).toEqual(["usb1"]);
    // The helper refuses a symbolic link: nothing reaches QEMU.
    const link = path.join(dir, "hot-link.img");
    symlinkSync(rw, link);
    await expect(cap.add(stick("usb2", "2", link))).rejects.toMatchObject({ code: "FAILED_PRECONDITION", message: expect.stringContaining("is a symbolic link") });
    expect(await fdsets()).toEqual([]);
    // A good one afterwards gets a set never used before.
    await cap.add(stick("usb2", "2", rw));
    expect(state!.devices.find((d) => d.id === "usb2")?.fdset).toBe(3);
    await expect(cap.add({ id: "usb2", kind: "usb", address: "5", device: "keyboard" })).rejects.toMatchObject({ code: "ALREADY_EXISTS" });
  });

  it("hands the descriptor only to the domain's own QEMU", async () => {
    await qemu(true);
    const cap = new QemuUsb({ name: "sys-usb", qemuPid: process.pid, state, qmp: async () => qmp, qmpFdSocket: `${rt}/qmp-fd.sock`, addFdHelper: () => helper, save: () => {}, log: () => {} });
    await expect(cap.add(stick("usb2", "2", image("peer.img")))).rejects.toThrow(/is served by pid \d+, not QEMU's/);
  });

  it("refuses without a controller (the device waits for the next start), and a stick without the helper", async () => {
    await qemu(false);
    await expect(usb().add({ id: "usb2", kind: "usb", address: "2", device: "keyboard" })).rejects.toMatchObject({ code: "FAILED_PRECONDITION", message: expect.stringContaining("without a USB controller") });
    expect(usb().controller).toBe(false);
    qmp.close();
    await qemu(true);
    await expect(usb(() => undefined).add(stick("usb2", "2", image("nohelper.img")))).rejects.toMatchObject({ code: "MISSING_DEPENDENCY", message: expect.stringMatching(/npm run build.*halted/) });
    await usb(() => undefined).add({ id: "usb2", kind: "usb", address: "2", device: "keyboard" });
    expect(await peripherals()).toEqual(["usb1", "usb2"]);
  });

  it("qvm-qmp-add-fd checks its arguments", () => {
    const run = (args: string[]) => {
      try {
        execFileSync(helper, args, { stdio: "pipe" });
        return "";
      } catch (err) {
        return String((err as { stderr: Buffer }).stderr);
      }
    };
    for (const args of [[], ["/s", "1", "1", "rx", "/a"], ["/s", "0", "1", "ro", "/a"], ["/s", "1", "-1", "ro", "/a"], ["/s", "1", "1", "ro", "rel.img"]]) {
      expect(run(args)).toMatch(/^usage: qvm-qmp-add-fd SOCKET QEMU-PID FDSET/);
    }
    mkdirSync(path.join(dir, "nosock"), { recursive: true });
    expect(run([path.join(dir, "nosock/qmp.sock"), "1", "1", "ro", image("args.img")])).toMatch(/No such file or directory/);
  });
});
