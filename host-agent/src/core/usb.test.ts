// USB devices as composed in qvmd (usb/usb-devices.ts), with fake VMs: sys-usb's agent reports a
// device table the tests change, the frontend's usb-attach makes its qubes.USB call through the
// real qrexec router (the one-shot grant) and prints the attached line, and the installed default
// policy decides input devices. Attach, detach, the ends an attachment can have, persistent
// assignments, refusals leaving nothing behind, and a qvmd restart.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { FrameType, QvmError, encodeFrame, qrexecV1 } from "@qvm/protocol";
import type { QvmEvent } from "../base/events.js";
import { DomainStore } from "../store/domain-store.js";
import { policyDirOf } from "../qrexec/policy/loader.js";
import { QREXEC_RUN } from "../qrexec/service-command.js";
import { FakeVmFactory, fakeImages, fakeUsbDevice, fakeVolumes, type FakeProgram, type FakeVm, fakeDriver } from "../testing/fake-vms.js";
import { USB_ATTACH, USB_RELEASE } from "../usb/usb-devices.js";
import { composeQvmd } from "./compose.js";
import type { Qvmd } from "./qvmd.js";

let dir: string;
let vms: FakeVmFactory;
let qvmd: Qvmd;
let events: QvmEvent[];
let logs: string[];

const TIMEOUTS = { attachMs: 1000, termMs: 200, killMs: 200, releaseMs: 500, signalMs: 200, watchRetryMs: 50, closeMs: 1000, listIntervalMs: 0 };
const stick = fakeUsbDevice("2-1");
const keyboard = fakeUsbDevice("2-2", { vendorId: "046d", productId: "c31c", manufacturer: "Logitech", product: "USB Keyboard", interfaces: [{ class: 3, subclass: 1, protocol: 1 }], driver: "usbhid" });
const mouse = fakeUsbDevice("2-3", { vendorId: "046d", productId: "c077", product: "USB Optical Mouse", interfaces: [{ class: 3, subclass: 1, protocol: 2 }], driver: "usbhid" });
const tablet = fakeUsbDevice("2-4", { vendorId: "0627", productId: "0001", product: "QEMU USB Tablet", interfaces: [{ class: 3, subclass: 0, protocol: 0 }], driver: "usbhid" });
const hub = fakeUsbDevice("1-1", { vendorId: "0409", productId: "55aa", product: "QEMU USB Hub", deviceClass: 9, interfaces: [{ class: 9, subclass: 0, protocol: 0 }], driver: "hub" });

function compose(timeouts = TIMEOUTS): Qvmd {
  return composeQvmd({
    dataDir: path.join(dir, "data"),
    runtimeDir: path.join(dir, "run"),
    images: fakeImages(),
    drivers: [fakeDriver("qemu")],
    accel: () => "tcg",
    store: DomainStore.open(path.join(dir, "data")),
    volumes: fakeVolumes(path.join(dir, "volumes"), { freeBytes: 1e15, overlayBytes: 0 }),
    vms,
    log: (m) => logs.push(m),
    usbTimeouts: timeouts,
  });
}

beforeEach(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), "qvm-usb-"));
  mkdirSync(path.join(dir, "data"), { recursive: true });
  vms = new FakeVmFactory();
  vms.vsockDir = path.join(dir, "v");
  mkdirSync(vms.vsockDir);
  logs = [];
  qvmd = compose();
  await qvmd.boot();
  await qvmd.create({ name: "tmpl", klass: "TemplateVM", label: "black" });
  await qvmd.setProperty("", "default_template", "tmpl");
  for (const name of ["sys-usb", "work", "vault"]) await qvmd.create({ name, label: "red" });
  events = [];
  qvmd.watchEvents((ev) => events.push(ev));
});

afterEach(async () => {
  await qvmd.close();
  rmSync(dir, { recursive: true, force: true });
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function until(what: string, cond: () => boolean, ms = 3000): Promise<void> {
  for (const t0 = Date.now(); !cond(); await sleep(5)) if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
}

/** A qrexec call from `source` (through its socket, as the domain would make it); resolves to the RESULT byte (-1: dropped). */
function qrexecCall(source: string, target: string, service: string, argument: string): Promise<number> {
  return new Promise((resolve) => {
    const c = net.connect(path.join(vms.vsockDir, `${source}.vsock_50`));
    let buf = Buffer.alloc(0);
    c.on("data", (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length >= 6 && buf[0] === FrameType.RESULT) {
        resolve(buf[5]!);
        c.destroy();
      }
    });
    c.on("error", () => resolve(-1));
    c.on("close", () => resolve(-1));
    c.write(Buffer.concat([encodeFrame(FrameType.REQUEST, qrexecV1.CallRequest.encode({ target, service, argument }).finish()), encodeFrame(FrameType.STDIN)]));
  });
}

/** usb-attach as the guest's would be: the qubes.USB call to the backend first (through the router), then the attached line. */
const attachViaQrexec: FakeProgram = (proc, vm) => {
  const [, backend, busid] = proc.argv;
  void qrexecCall(vm.name, backend!, "qubes.USB", busid!).then((result) => {
    if (result === 1) proc.stdout.write(`qvm-usb: attached to port ${vm.nextUsbPort++}\n`);
    else {
      proc.stderr.write("Request refused\n");
      proc.end(1);
    }
  });
};

const vm = (name: string): FakeVm => vms.vms.get(name)!;
const usbEvents = (): Array<Record<string, string>> => events.filter((e) => e.type.startsWith("device-")).map((e) => ({ type: e.type, domain: e.domain, ...e.fields }));
const execsOf = (name: string, argv0: string) => vm(name).execs.filter((e) => Array.isArray(e.command) && e.command[0] === argv0);

/** sys-usb with `devices`, and the frontends started, their usb-attach calling through qrexec. */
async function startAll(devices = [stick, keyboard, mouse, tablet, hub], frontends = ["work", "vault"]): Promise<void> {
  await qvmd.start("sys-usb");
  vm("sys-usb").setUsbDevices(devices);
  for (const f of frontends) {
    await qvmd.start(f);
    vm(f).programs.set(USB_ATTACH, attachViaQrexec);
  }
  events.length = 0;
}

describe("listing", () => {
  it("lists what a running backend reports, by backend then bus id, with kinds; device-added and device-removed follow its list", async () => {
    await qvmd.start("sys-usb");
    vm("sys-usb").setUsbDevices([stick, hub, keyboard, tablet, mouse, fakeUsbDevice("1-1.10"), fakeUsbDevice("1-1.9")]);
    const rows = qvmd.usbDevices();
    expect(rows.map((d) => d.busid)).toEqual(["1-1", "1-1.9", "1-1.10", "2-1", "2-2", "2-3", "2-4"]);
    expect(rows.find((d) => d.busid === "2-1")).toEqual({
      backend: "sys-usb",
      busid: "2-1",
      vendorId: "46f4",
      productId: "0001",
      description: "QEMU QEMU USB HARDDRIVE",
      serial: "1-0000:00:04.0-2-1",
      kinds: ["storage"],
      attachedTo: "",
      persistent: false,
      present: true,
    });
    expect(Object.fromEntries(rows.map((d) => [d.busid, d.kinds]))).toMatchObject({ "1-1": ["hub"], "2-2": ["keyboard"], "2-3": ["mouse"], "2-4": ["tablet"] });
    expect(usbEvents().filter((e) => e.type === "device-added")).toHaveLength(7);
    expect(usbEvents()[0]).toEqual({ type: "device-added", domain: "sys-usb", devclass: "usb", device: "sys-usb:2-1", description: "QEMU QEMU USB HARDDRIVE" });
    events.length = 0;
    vm("sys-usb").setUsbDevices([stick]);
    expect(qvmd.usbDevices().map((d) => d.busid)).toEqual(["2-1"]);
    expect(usbEvents().map((e) => [e.type, e.device])).toEqual([
      ["device-removed", "sys-usb:1-1"],
      ["device-removed", "sys-usb:2-2"],
      ["device-removed", "sys-usb:2-4"],
      ["device-removed", "sys-usb:2-3"],
      ["device-removed", "sys-usb:1-1.10"],
      ["device-removed", "sys-usb:1-1.9"],
    ]);
    // Another device on the same port is another device.
    events.length = 0;
    vm("sys-usb").setUsbDevices([{ ...stick, vendorId: "0951" }]);
    expect(usbEvents().map((e) => e.type)).toEqual(["device-removed", "device-added"]);
    expect(qvmd.usbDevices("work")).toEqual([]);
    expect(() => qvmd.usbDevices("nosuch")).toThrow(expect.objectContaining({ code: "NOT_FOUND" }));
  });

  it("takes at most one list per listIntervalMs from a domain, the latest: a flood of lists is not a flood of events", async () => {
    await qvmd.close();
    qvmd = compose({ ...TIMEOUTS, listIntervalMs: 200 });
    await qvmd.boot();
    qvmd.watchEvents((ev) => events.push(ev));
    await qvmd.start("sys-usb");
    await sleep(250); // past the start's (empty) list
    events.length = 0;
    for (let i = 0; i < 1000; i++) vm("sys-usb").setUsbDevices(i % 2 ? [stick] : [stick, mouse, keyboard, tablet]);
    // The first list at once; the rest wait, and only the last of them is taken.
    expect(usbEvents().map((e) => e.type)).toEqual(["device-added", "device-added", "device-added", "device-added"]);
    await until("the latest list", () => qvmd.usbDevices().length === 1);
    await sleep(450);
    expect(usbEvents()).toHaveLength(7);
  });

  it("logs a list with entries left out once, not at every list", async () => {
    await qvmd.start("sys-usb");
    vm("sys-usb").usbDropped = { dropped: 2, droppedWhy: "a bus id that is not sysfs' BUS-PORT[.PORT…]" };
    vm("sys-usb").setUsbDevices([stick]);
    vm("sys-usb").setUsbDevices([stick]);
    expect(logs.filter((l) => l.includes("left out"))).toEqual(["sys-usb: USB device list: 2 left out (a bus id that is not sysfs' BUS-PORT[.PORT…])"]);
  });

  it("a device list stream that breaks is opened again, a few times in a row at most", async () => {
    await qvmd.start("sys-usb");
    const backend = vm("sys-usb");
    backend.setUsbDevices([stick]);
    expect(backend.usbWatchCount).toBe(1);
    // The agent restarted: the stream ends with an error, and qvmd opens it again.
    backend.usbWatchError = new QvmError("AGENT_UNAVAILABLE", "the agent went away");
    backend.breakUsbWatches();
    await until("three tries", () => logs.filter((l) => l.includes("trying again")).length === 3);
    await until("giving up", () => logs.some((l) => l.includes("not followed any more (until sys-usb starts again)")));
    expect(qvmd.usbDevices().map((d) => d.busid)).toEqual(["2-1"]);
    // Fixed before the tries run out: followed again, and the count starts over.
    await qvmd.kill("sys-usb");
    await qvmd.start("sys-usb");
    vm("sys-usb").setUsbDevices([stick]);
    vm("sys-usb").usbWatchError = new Error("once");
    vm("sys-usb").breakUsbWatches();
    await sleep(20);
    vm("sys-usb").usbWatchError = undefined;
    await until("followed again", () => vm("sys-usb").usbWatchCount === 1);
    vm("sys-usb").setUsbDevices([stick, mouse]);
    expect(qvmd.usbDevices().map((d) => d.busid)).toEqual(["2-1", "2-3"]);
    // An agent that broke the protocol (or has no such RPC) is not asked again.
    logs.length = 0;
    vm("sys-usb").usbWatchError = new QvmError("AGENT_PROTOCOL", "guest agent broke the protocol during WatchUsbDevices: \"unimplemented\"");
    vm("sys-usb").breakUsbWatches();
    await sleep(TIMEOUTS.watchRetryMs * 3);
    expect(logs.filter((l) => l.startsWith("sys-usb: USB device list"))).toEqual([
      'sys-usb: USB device list: guest agent broke the protocol during WatchUsbDevices: "unimplemented"; not followed any more (until sys-usb starts again)',
    ]);
    expect(vm("sys-usb").usbWatchCount).toBe(0);
  });

  it("a halted backend reports nothing; its devices go with it (device-removed)", async () => {
    await startAll([stick], []);
    await qvmd.kill("sys-usb");
    await until("the devices gone", () => qvmd.usbDevices().length === 0);
    expect(usbEvents()).toEqual([{ type: "device-removed", domain: "sys-usb", devclass: "usb", device: "sys-usb:2-1" }]);
  });
});

describe("attach and detach", () => {
  it("attaches: usb-attach runs in the frontend as root and its qubes.USB call to the backend is allowed once, as root, by a grant", async () => {
    await startAll();
    const view = await qvmd.attachUsb("work", "sys-usb", "2-1", false);
    expect(view).toMatchObject({ backend: "sys-usb", busid: "2-1", attachedTo: "work", persistent: false, present: true });
    expect(execsOf("work", USB_ATTACH)).toEqual([{ command: [USB_ATTACH, "sys-usb", "2-1"], user: "root" }]);
    // The call went through the router to sys-usb, as root, and the grant is spent.
    expect(execsOf("sys-usb", QREXEC_RUN)).toMatchObject([{ command: [QREXEC_RUN, "qubes.USB", "2-1"], user: "root", env: { QREXEC_REMOTE_DOMAIN: "work" } }]);
    expect(logs).toContain("qrexec: work -> sys-usb qubes.USB+2-1: allowed by a one-shot grant (usb attach of sys-usb:2-1 to work), running in sys-usb as root");
    expect(await qrexecCall("work", "sys-usb", "qubes.USB", "2-1")).toBe(0);
    expect(usbEvents()).toEqual([{ type: "device-attach", domain: "work", devclass: "usb", device: "sys-usb:2-1" }]);
    expect(qvmd.usbDevices().find((d) => d.busid === "2-1")!.attachedTo).toBe("work");
    // usb-attach keeps running while attached.
    expect(vm("work").running(USB_ATTACH)).toHaveLength(1);
    expect(qvmd.attachmentsOf("work")).toContain("qvmd:usb devices");
  });

  it("refuses a domain's own qubes.USB call: only a grant allows one", async () => {
    await startAll();
    expect(await qrexecCall("work", "sys-usb", "qubes.USB", "2-1")).toBe(0);
    expect(execsOf("sys-usb", QREXEC_RUN)).toEqual([]);
  });

  it("detaches: SIGTERM to usb-attach, usb-release in the backend as root, device-detach; the device is free again", async () => {
    await startAll();
    await qvmd.attachUsb("work", "sys-usb", "2-1", false);
    const proc = vm("work").running(USB_ATTACH)[0]!;
    events.length = 0;
    await qvmd.detachUsb("work", "sys-usb", "2-1");
    expect(proc.signals).toEqual(["SIGTERM"]);
    expect(execsOf("sys-usb", USB_RELEASE)).toEqual([{ command: [USB_RELEASE, "2-1"], user: "root" }]);
    expect(usbEvents()).toEqual([{ type: "device-detach", domain: "work", devclass: "usb", device: "sys-usb:2-1", reason: "detached on request" }]);
    expect(qvmd.usbDevices().find((d) => d.busid === "2-1")!.attachedTo).toBe("");
    // Free: another domain may have it now.
    expect((await qvmd.attachUsb("vault", "sys-usb", "2-1", false)).attachedTo).toBe("vault");
    await expect(qvmd.detachUsb("work", "sys-usb", "2-1")).rejects.toMatchObject({ code: "NOT_FOUND", message: "sys-usb:2-1 is not attached to work (it is attached to vault); see `qvm usb list`" });
  });

  it("a usb-attach that ignores SIGTERM is killed, and the detach still returns in bounded time", async () => {
    await startAll();
    await qvmd.attachUsb("work", "sys-usb", "2-1", false);
    const proc = vm("work").running(USB_ATTACH)[0]!;
    proc.onSignal = () => {};
    const t0 = Date.now();
    await qvmd.detachUsb("work", "sys-usb", "2-1");
    expect(Date.now() - t0).toBeLessThan(TIMEOUTS.termMs + TIMEOUTS.killMs + TIMEOUTS.releaseMs + 500);
    expect(proc.signals).toEqual(["SIGTERM", "SIGKILL"]);
    expect(proc.cancelled).toBe(true);
    expect(qvmd.usbDevices().find((d) => d.busid === "2-1")!.attachedTo).toBe("");
  });

  it.each<[string, () => Promise<unknown>, string, RegExp]>([
    ["an unknown domain", () => qvmd.attachUsb("nosuch", "sys-usb", "2-1", false), "NOT_FOUND", /no domain named "nosuch"/],
    ["an unknown backend", () => qvmd.attachUsb("work", "nosuch", "2-1", false), "NOT_FOUND", /no domain named "nosuch"/],
    ["a halted domain", () => qvmd.attachUsb("vault", "sys-usb", "2-1", false), "FAILED_PRECONDITION", /^vault is not running: start it first \(`qvm start vault`\)/],
    ["the backend itself", () => qvmd.attachUsb("sys-usb", "sys-usb", "2-1", false), "INVALID_ARGUMENT", /^sys-usb:2-1 is sys-usb's own device: it cannot be attached to its backend/],
    ["a device the backend does not have", () => qvmd.attachUsb("work", "sys-usb", "9-9", false), "NOT_FOUND", /^sys-usb has no USB device 9-9; see `qvm usb list sys-usb`$/],
    ["a backend that has no devices (it does not run)", () => qvmd.attachUsb("work", "vault", "2-1", false), "FAILED_PRECONDITION", /^vault is not running/],
    ["a hub", () => qvmd.attachUsb("work", "sys-usb", "1-1", false), "FAILED_PRECONDITION", /^sys-usb:1-1 is a USB hub: attach the devices behind it one by one$/],
    ["a bus id of the wrong shape", () => qvmd.attachUsb("work", "sys-usb", "2-1:1.0", false), "INVALID_ARGUMENT", /is not a USB bus id/],
    ["a keyboard (denied by default)", () => qvmd.attachUsb("work", "sys-usb", "2-2", false), "PERMISSION_DENIED", /^sys-usb:2-2 is a keyboard, and the qubes.InputKeyboard policy does not allow input from sys-usb to work \(.*90-default.policy:\d+\): to allow it, add `qubes.InputKeyboard \* sys-usb work allow`/],
    ["a tablet, or any other HID device (denied by default)", () => qvmd.attachUsb("work", "sys-usb", "2-4", false), "PERMISSION_DENIED", /is a tablet, and the qubes.InputTablet policy/],
  ])("refuses %s with a typed error, leaving nothing started, granted or attached", async (_what, attempt, code, message) => {
    await startAll(undefined, ["work"]);
    await expect(attempt()).rejects.toMatchObject({ name: "QvmError", code, message: expect.stringMatching(message) });
    expect(execsOf("work", USB_ATTACH)).toEqual([]);
    expect(await qrexecCall("work", "sys-usb", "qubes.USB", "2-1")).toBe(0);
    expect(qvmd.usbDevices().filter((d) => d.attachedTo)).toEqual([]);
    expect(usbEvents()).toEqual([]);
  });

  it("refuses a device attached elsewhere or already here, and a paused domain", async () => {
    await startAll();
    await qvmd.attachUsb("work", "sys-usb", "2-1", false);
    await expect(qvmd.attachUsb("vault", "sys-usb", "2-1", false)).rejects.toMatchObject({
      code: "FAILED_PRECONDITION",
      message: "sys-usb:2-1 is attached to work: a device goes to one domain at a time; detach it there first (`qvm usb detach work sys-usb:2-1`)",
    });
    await expect(qvmd.attachUsb("work", "sys-usb", "2-1", false)).rejects.toMatchObject({ code: "ALREADY_EXISTS", message: "sys-usb:2-1 is already attached to work" });
    await qvmd.pause("vault");
    await expect(qvmd.attachUsb("vault", "sys-usb", "2-3", false)).rejects.toMatchObject({ code: "FAILED_PRECONDITION", message: expect.stringMatching(/^vault is paused: unpause it first/) });
    // Two attaches of one device at once: one wins, the other is refused.
    const both = await Promise.allSettled([qvmd.attachUsb("work", "sys-usb", "2-3", false), qvmd.attachUsb("sys-usb", "sys-usb", "2-3", false), qvmd.attachUsb("work", "sys-usb", "2-3", false)]);
    expect(both.map((r) => r.status)).toEqual(["fulfilled", "rejected", "rejected"]);
    expect(execsOf("work", USB_ATTACH)).toHaveLength(2);
  });

  it("input devices follow the input policy: a mouse is asked for (the command is the answer), a user rule allows a keyboard, a broken policy refuses", async () => {
    await startAll();
    expect((await qvmd.attachUsb("work", "sys-usb", "2-3", false)).kinds).toEqual(["mouse"]);
    const userPolicy = path.join(policyDirOf(path.join(dir, "data")), "30-user.policy");
    writeFileSync(userPolicy, "qubes.InputKeyboard * sys-usb vault allow\n");
    await expect(qvmd.attachUsb("work", "sys-usb", "2-2", false)).rejects.toMatchObject({ code: "PERMISSION_DENIED" });
    expect((await qvmd.attachUsb("vault", "sys-usb", "2-2", false)).attachedTo).toBe("vault");
    // A rule that sends the call elsewhere does not allow it here.
    writeFileSync(userPolicy, "qubes.InputTablet * sys-usb @anyvm allow target=vault\n");
    await expect(qvmd.attachUsb("work", "sys-usb", "2-4", false)).rejects.toMatchObject({ code: "PERMISSION_DENIED", message: expect.stringContaining("qubes.InputTablet") });
    writeFileSync(userPolicy, "qubes.InputTablet * sys-usb work permit\n");
    await expect(qvmd.attachUsb("work", "sys-usb", "2-4", false)).rejects.toMatchObject({ code: "POLICY_INVALID" });
    // A device that is not an input device needs no input policy, even with the policy broken.
    expect((await qvmd.attachUsb("work", "sys-usb", "2-1", false)).attachedTo).toBe("work");
  });
});

describe("an attach that fails leaves nothing behind", () => {
  async function failing(program: FakeProgram) {
    await startAll(undefined, ["work"]);
    vm("work").programs.set(USB_ATTACH, program);
  }
  const nothingLeft = async () => {
    expect(qvmd.usbDevices().filter((d) => d.attachedTo)).toEqual([]);
    expect(vm("work").running(USB_ATTACH)).toEqual([]);
    expect(execsOf("sys-usb", USB_RELEASE)).toEqual([{ command: [USB_RELEASE, "2-1"], user: "root" }]);
    expect(usbEvents()).toEqual([]);
    // The grant is gone with it.
    expect(await qrexecCall("work", "sys-usb", "qubes.USB", "2-1")).toBe(0);
  };

  it("usb-attach exits 1: the error carries its stderr's last line, escaped", async () => {
    await failing((proc) => {
      proc.stderr.write("connecting\nusbip: \u001b[31mno free port\u202e\n");
      proc.end(1);
    });
    await expect(qvmd.attachUsb("work", "sys-usb", "2-1", false)).rejects.toMatchObject({
      code: "FAILED_PRECONDITION",
      message: "attaching sys-usb:2-1 to work failed: /usr/lib/qvm/usb-attach exited with 1: usbip: \\u001b[31mno free port\\u202e",
    });
    await nothingLeft();
  });

  it("a persistent attach that fails stores no assignment", async () => {
    await failing((proc) => proc.end(1));
    await expect(qvmd.attachUsb("work", "sys-usb", "2-1", true)).rejects.toMatchObject({ code: "FAILED_PRECONDITION" });
    expect(JSON.parse(readFileSync(path.join(dir, "data", "qvm.json"), "utf8")).body.domains.work.usb).toBeUndefined();
    await nothingLeft();
  });

  it("a detach while the device is being attached is refused; the attach goes on", async () => {
    let attached!: () => void;
    await failing((proc, v) => {
      attached = () => proc.stdout.write(`qvm-usb: attached to port ${v.nextUsbPort++}\n`);
    });
    const attaching = qvmd.attachUsb("work", "sys-usb", "2-1", false);
    await until("usb-attach started", () => vm("work").running(USB_ATTACH).length === 1);
    await expect(qvmd.detachUsb("work", "sys-usb", "2-1")).rejects.toMatchObject({ code: "FAILED_PRECONDITION", message: "sys-usb:2-1 is being attached to work: wait for that to finish, then detach it" });
    await expect(qvmd.attachUsb("work", "sys-usb", "2-1", false)).rejects.toMatchObject({ code: "ALREADY_EXISTS", message: "sys-usb:2-1 is already being attached to work" });
    attached();
    expect((await attaching).attachedTo).toBe("work");
  });

  it("usb-attach is missing (127): MISSING_DEPENDENCY naming the fix", async () => {
    await failing((proc) => proc.end(127));
    await expect(qvmd.attachUsb("work", "sys-usb", "2-1", false)).rejects.toMatchObject({ code: "MISSING_DEPENDENCY", message: expect.stringContaining("work has no /usr/lib/qvm/usb-attach (qvm's USB tools): rebuild its template") });
    await nothingLeft();
  });

  it("usb-attach never says attached: AGENT_TIMEOUT after attachMs, and it is killed", async () => {
    let proc: { signals: string[]; cancelled: boolean } | undefined;
    await failing((p) => {
      proc = p;
      p.onSignal = () => {};
      p.stderr.write("waiting for sys-usb\n");
    });
    const t0 = Date.now();
    await expect(qvmd.attachUsb("work", "sys-usb", "2-1", false)).rejects.toMatchObject({
      code: "AGENT_TIMEOUT",
      message: "attaching sys-usb:2-1 to work failed: /usr/lib/qvm/usb-attach did not report it attached within 1 s: waiting for sys-usb",
    });
    expect(Date.now() - t0).toBeLessThan(TIMEOUTS.attachMs + TIMEOUTS.killMs + TIMEOUTS.releaseMs + 500);
    expect(proc!.signals).toEqual(["SIGKILL"]);
    expect(proc!.cancelled).toBe(true);
    await nothingLeft();
  });

  it("usb-attach prints something else: AGENT_PROTOCOL, the line escaped", async () => {
    await failing((p) => {
      p.onSignal = () => {};
      p.stdout.write("qvm-usb: attached to port 1\u001b]0;x\n");
    });
    await expect(qvmd.attachUsb("work", "sys-usb", "2-1", false)).rejects.toMatchObject({ code: "AGENT_PROTOCOL", message: expect.stringContaining('printed "qvm-usb: attached to port 1\\u001b]0;x", not the attached line') });
    await nothingLeft();
  });

  it("the backend refuses the qubes.USB call (no grant: the policy decides)", async () => {
    await startAll(undefined, ["work"]);
    // A usb-attach that asks for another bus id than it was given: its grant does not cover that.
    vm("work").programs.set(USB_ATTACH, (proc, v) => {
      void qrexecCall(v.name, "sys-usb", "qubes.USB", "2-3").then((r) => {
        if (r !== 1) proc.stderr.write("Request refused\n");
        proc.end(r === 1 ? 0 : 1);
      });
    });
    await expect(qvmd.attachUsb("work", "sys-usb", "2-1", false)).rejects.toMatchObject({ code: "FAILED_PRECONDITION", message: expect.stringMatching(/exited with 1: Request refused$/) });
    expect(execsOf("sys-usb", QREXEC_RUN)).toEqual([]);
    await nothingLeft();
  });
});

describe("how an attachment ends", () => {
  it("usb-attach ends by itself: forgotten, released in the backend, device-detach with why", async () => {
    await startAll();
    await qvmd.attachUsb("work", "sys-usb", "2-1", false);
    events.length = 0;
    const proc = vm("work").running(USB_ATTACH)[0]!;
    proc.stderr.write("usbip: connection reset\n");
    proc.end(3);
    await until("the detach", () => usbEvents().length > 0);
    expect(usbEvents()).toEqual([{ type: "device-detach", domain: "work", devclass: "usb", device: "sys-usb:2-1", reason: "/usr/lib/qvm/usb-attach in work exited with 3" }]);
    expect(execsOf("sys-usb", USB_RELEASE)).toHaveLength(1);
    expect(qvmd.usbDevices().find((d) => d.busid === "2-1")!.attachedTo).toBe("");
  });

  it("the backend stops: the frontend's usb-attach is stopped, device-detach says so, nothing runs in the stopped backend", async () => {
    await startAll();
    await qvmd.attachUsb("work", "sys-usb", "2-1", false);
    const proc = vm("work").running(USB_ATTACH)[0]!;
    events.length = 0;
    const releasesBefore = execsOf("sys-usb", USB_RELEASE).length;
    await qvmd.kill("sys-usb");
    await until("the detach", () => usbEvents().some((e) => e.type === "device-detach"));
    expect(proc.ended).toBe(true);
    expect(usbEvents()).toContainEqual({ type: "device-detach", domain: "work", devclass: "usb", device: "sys-usb:2-1", reason: "sys-usb stopped" });
    expect(usbEvents()).toContainEqual({ type: "device-removed", domain: "sys-usb", devclass: "usb", device: "sys-usb:2-1" });
    expect(execsOf("sys-usb", USB_RELEASE)).toHaveLength(releasesBefore);
    expect(qvmd.usbDevices()).toEqual([]);
    expect(qvmd.get("work").state).toBe("Running");
  });

  it("the frontend stops: released in the backend, device-detach says so", async () => {
    await startAll();
    await qvmd.attachUsb("work", "sys-usb", "2-1", false);
    events.length = 0;
    await qvmd.kill("work");
    await until("the detach", () => usbEvents().some((e) => e.type === "device-detach"));
    expect(usbEvents()).toEqual([{ type: "device-detach", domain: "work", devclass: "usb", device: "sys-usb:2-1", reason: "work stopped" }]);
    expect(execsOf("sys-usb", USB_RELEASE)).toHaveLength(1);
    expect(qvmd.usbDevices().find((d) => d.busid === "2-1")!.attachedTo).toBe("");
  });

  it("the device is pulled out of the backend: the attachment is stopped", async () => {
    await startAll();
    await qvmd.attachUsb("work", "sys-usb", "2-1", false);
    const proc = vm("work").running(USB_ATTACH)[0]!;
    events.length = 0;
    vm("sys-usb").setUsbDevices([keyboard]);
    await until("the detach", () => usbEvents().some((e) => e.type === "device-detach"));
    expect(proc.signals).toEqual(["SIGTERM"]);
    expect(usbEvents()).toContainEqual({ type: "device-detach", domain: "work", devclass: "usb", device: "sys-usb:2-1", reason: "the device was removed from sys-usb" });
  });
});

describe("persistent assignments", () => {
  const record = () => JSON.parse(readFileSync(path.join(dir, "data", "qvm.json"), "utf8")).body.domains.work as { usb?: unknown };

  it("attach --persistent stores the assignment with the domain; it is attached again at the domain's next start; detach drops it", async () => {
    await startAll();
    const view = await qvmd.attachUsb("work", "sys-usb", "2-1", true);
    expect(view).toMatchObject({ attachedTo: "work", persistent: true });
    expect(record().usb).toEqual([{ backend: "sys-usb", busid: "2-1" }]);
    expect(usbEvents()).toEqual([
      { type: "device-attach", domain: "work", devclass: "usb", device: "sys-usb:2-1" },
      { type: "device-assign", domain: "work", devclass: "usb", device: "sys-usb:2-1" },
    ]);
    // Assigned to work: another domain cannot have it, even while work is halted.
    await qvmd.kill("work");
    await until("the detach", () => usbEvents().some((e) => e.type === "device-detach"));
    expect(qvmd.usbDevices().find((d) => d.busid === "2-1")).toMatchObject({ attachedTo: "work", persistent: true, present: true });
    await expect(qvmd.attachUsb("vault", "sys-usb", "2-1", false)).rejects.toMatchObject({ code: "FAILED_PRECONDITION", message: expect.stringContaining("is assigned to work (persistent)") });
    // work starts: attached again, by qvmd itself.
    events.length = 0;
    await qvmd.start("work");
    await until("the attach at start", () => usbEvents().some((e) => e.type === "device-attach"));
    expect(vm("work").running(USB_ATTACH)).toHaveLength(1);
    // Detach drops the assignment too.
    events.length = 0;
    await qvmd.detachUsb("work", "sys-usb", "2-1");
    expect(record().usb).toBeUndefined();
    expect(usbEvents().map((e) => e.type)).toEqual(["device-detach", "device-unassign"]);
  });

  it("persistent on a device already attached here assigns it; an assignment alone is dropped by detach", async () => {
    await startAll();
    await qvmd.attachUsb("work", "sys-usb", "2-1", false);
    events.length = 0;
    expect(await qvmd.attachUsb("work", "sys-usb", "2-1", true)).toMatchObject({ persistent: true });
    expect(vm("work").execs.filter((e) => (e.command as string[])[0] === USB_ATTACH)).toHaveLength(1);
    expect(usbEvents().map((e) => e.type)).toEqual(["device-assign"]);
    await qvmd.kill("work");
    await until("detached", () => usbEvents().some((e) => e.type === "device-detach"));
    events.length = 0;
    await qvmd.detachUsb("work", "sys-usb", "2-1");
    expect(usbEvents().map((e) => e.type)).toEqual(["device-unassign"]);
    await expect(qvmd.detachUsb("work", "sys-usb", "2-1")).rejects.toMatchObject({ code: "NOT_FOUND" });
  });

  it("an assignment whose backend is halted is listed as not present; once the backend runs and reports the device, it is attached", async () => {
    await startAll();
    await qvmd.attachUsb("work", "sys-usb", "2-1", true);
    await qvmd.kill("sys-usb");
    await until("detached", () => usbEvents().some((e) => e.type === "device-detach"));
    expect(qvmd.usbDevices()).toEqual([
      { backend: "sys-usb", busid: "2-1", vendorId: "", productId: "", description: "", serial: "", kinds: [], attachedTo: "work", persistent: true, present: false },
    ]);
    events.length = 0;
    await qvmd.start("sys-usb");
    expect(logs.some((l) => l.includes("sys-usb does not report it now"))).toBe(false);
    vm("sys-usb").setUsbDevices([stick]);
    await until("attached again", () => usbEvents().some((e) => e.type === "device-attach"));
    expect(qvmd.usbDevices()[0]).toMatchObject({ attachedTo: "work", persistent: true, present: true });
  });

  it("a domain started while its backend is halted logs why the assignment is not attached", async () => {
    await startAll();
    await qvmd.attachUsb("work", "sys-usb", "2-1", true);
    await qvmd.kill("work");
    await qvmd.kill("sys-usb");
    await until("detached", () => usbEvents().some((e) => e.type === "device-detach"));
    await qvmd.start("work");
    await until("the note", () => logs.some((l) => l.includes("usb: work: sys-usb:2-1 not attached: sys-usb is not running")));
  });

  it("a keyboard assigned while the policy allowed it is not attached at start once the policy denies it (logged)", async () => {
    await startAll();
    const userPolicy = path.join(policyDirOf(path.join(dir, "data")), "30-user.policy");
    writeFileSync(userPolicy, "qubes.InputKeyboard * sys-usb work allow\n");
    await qvmd.attachUsb("work", "sys-usb", "2-2", true);
    await qvmd.kill("work");
    await until("detached", () => usbEvents().some((e) => e.type === "device-detach"));
    writeFileSync(userPolicy, "");
    await qvmd.start("work");
    await until("the refusal", () => logs.some((l) => l.includes("usb: work: assigned sys-usb:2-2 not attached") && l.includes("qubes.InputKeyboard")));
    expect(vm("work").running(USB_ATTACH)).toEqual([]);
  });
});

describe("a qvmd restart", () => {
  it("ends the attachments (the backends take their devices back), then attaches persistent assignments again and releases an export nobody holds", async () => {
    await startAll();
    await qvmd.attachUsb("work", "sys-usb", "2-1", true);
    await qvmd.attachUsb("vault", "sys-usb", "2-3", false);
    const procs = [...vm("work").running(USB_ATTACH), ...vm("vault").running(USB_ATTACH)];
    events.length = 0;
    await qvmd.close();
    expect(procs.every((p) => p.cancelled)).toBe(true);
    expect(execsOf("sys-usb", USB_RELEASE).map((e) => (e.command as string[])[1]).sort()).toEqual(["2-1", "2-3"]);
    expect(usbEvents()).toEqual([]);

    // The next qvmd finds the VMs running; sys-usb still exports 2-3 (as after a crash).
    for (const name of ["sys-usb", "work", "vault"]) {
      vms.leftRunning.set(name, vm(name));
      mkdirSync(path.join(dir, "run", "domains", name), { recursive: true });
    }
    vm("sys-usb").setUsbDevices([stick, { ...mouse, driver: "usbip-host" }]);
    const released = execsOf("sys-usb", USB_RELEASE).length;
    qvmd = compose();
    events = [];
    qvmd.watchEvents((ev) => events.push(ev));
    await qvmd.boot();
    await until("the assignment attached again", () => usbEvents().some((e) => e.type === "device-attach"));
    expect(usbEvents().filter((e) => e.type === "device-attach")).toEqual([{ type: "device-attach", domain: "work", devclass: "usb", device: "sys-usb:2-1" }]);
    expect(execsOf("sys-usb", USB_RELEASE).slice(released).map((e) => (e.command as string[])[1])).toEqual(["2-3"]);
    expect(logs).toContain("usb: sys-usb:2-3 was left exported by an earlier qvmd; releasing it");
    expect(qvmd.usbDevices().map((d) => [d.busid, d.attachedTo])).toEqual([
      ["2-1", "work"],
      ["2-3", ""],
    ]);
  });
});
