// The USB calls of the admin API against a real qvmd process (no VM: domains are defined, never
// started, so every attach stops at a check; attaching itself is tested with fake VMs in
// core/usb.test.ts): ListUsbDevices, AttachUsbDevice and DetachUsbDevice refusing malformed and
// impossible requests with typed errors, the plug calls reaching UsbPlugs, and the shipped
// policy that lets no domain call qubes.USB by itself.
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { adminV1 } from "@qvm/protocol";
import { removeTestDaemonDirs, startTestDaemon, testDaemonDirs, type TestDaemon } from "../testing/test-daemon.js";

let d: TestDaemon;

beforeAll(async () => {
  d = await startTestDaemon(testDaemonDirs("usb-api"));
  for (const name of ["sys-usb", "work"]) {
    await d.client.createDomain({ name, class: adminV1.DomainClass.DOMAIN_CLASS_STANDALONE_VM, template: "", label: "red", properties: {} });
  }
});
afterAll(async () => {
  expect(await d.stop()).toBe(0);
  removeTestDaemonDirs(d.dirs);
});

const attach = (domain: string, backend: string, busid: string, persistent = false) => d.client.attachUsbDevice({ domain, backend, busid, persistent });

describe("the USB calls of the admin API", () => {
  it("lists nothing while no backend runs; an unknown or malformed backend is refused", async () => {
    expect(await d.client.listUsbDevices({ backend: "" })).toEqual({ devices: [] });
    expect(await d.client.listUsbDevices({ backend: "sys-usb" })).toEqual({ devices: [] });
    await expect(d.client.listUsbDevices({ backend: "nosuch" })).rejects.toMatchObject({ code: "NOT_FOUND" });
    await expect(d.client.listUsbDevices({ backend: "../x" })).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
  });

  it.each<[string, () => Promise<unknown>, string, RegExp]>([
    ["a malformed domain", () => attach("../work", "sys-usb", "2-1"), "INVALID_ARGUMENT", /must start with a letter/],
    ["no backend", () => attach("work", "", "2-1"), "INVALID_ARGUMENT", /name the device's backend/],
    ["a malformed backend", () => attach("work", "sys usb", "2-1"), "INVALID_ARGUMENT", /./],
    ["no bus id", () => attach("work", "sys-usb", ""), "INVALID_ARGUMENT", /^"" is not a USB bus id \(2-1, 1-1.4\)/],
    ["an interface for a bus id", () => attach("work", "sys-usb", "2-1:1.0"), "INVALID_ARGUMENT", /^"2-1:1.0" is not a USB bus id/],
    ["a path for a bus id", () => attach("work", "sys-usb", "../../sys"), "INVALID_ARGUMENT", /is not a USB bus id/],
    ["a bus id with control characters", () => attach("work", "sys-usb", "2-1\u001b[2J"), "INVALID_ARGUMENT", /^"2-1\\u001b\[2J" is not a USB bus id/],
    ["a very long bus id", () => attach("work", "sys-usb", `1-1${".1".repeat(500)}`), "INVALID_ARGUMENT", /…" is not a USB bus id/],
    ["an unknown domain", () => attach("nosuch", "sys-usb", "2-1"), "NOT_FOUND", /no domain named "nosuch"/],
    ["an unknown backend", () => attach("work", "nosuch", "2-1"), "NOT_FOUND", /no domain named "nosuch"/],
    ["the backend itself", () => attach("sys-usb", "sys-usb", "2-1"), "INVALID_ARGUMENT", /^sys-usb:2-1 is sys-usb's own device/],
    ["a halted domain", () => attach("work", "sys-usb", "2-1", true), "FAILED_PRECONDITION", /^work is not running: start it first \(`qvm start work`\)/],
  ])("AttachUsbDevice refuses %s with a typed error", async (_what, call, code, message) => {
    await expect(call()).rejects.toMatchObject({ name: "QvmError", code, message: expect.stringMatching(message) });
    expect(await d.client.listUsbDevices({ backend: "" })).toEqual({ devices: [] });
  });

  it("DetachUsbDevice refuses what is not attached, and malformed names", async () => {
    await expect(d.client.detachUsbDevice({ domain: "work", backend: "sys-usb", busid: "2-1" })).rejects.toMatchObject({
      code: "NOT_FOUND",
      message: "sys-usb:2-1 is not attached to work; see `qvm usb list`",
    });
    await expect(d.client.detachUsbDevice({ domain: "work", backend: "sys-usb", busid: "x" })).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
    await expect(d.client.detachUsbDevice({ domain: "nosuch", backend: "sys-usb", busid: "2-1" })).rejects.toMatchObject({ code: "NOT_FOUND" });
  });

  it("plugs, lists and unplugs emulated devices of a halted domain (they arrive at its next start)", async () => {
    expect(await d.client.listUsbPlugs({ domain: "sys-usb" })).toEqual({ plugs: [] });
    const image = path.join(d.dirs.base, "stick.img");
    writeFileSync(image, Buffer.alloc(1024 * 1024));
    expect(await d.client.plugUsbDevice({ domain: "sys-usb", kind: "disk", path: image, readOnly: true })).toEqual({ plug: { id: "usb1", kind: "disk", path: image, readOnly: true, live: false } });
    expect(await d.client.plugUsbDevice({ domain: "sys-usb", kind: "keyboard", path: "", readOnly: false })).toEqual({ plug: { id: "usb2", kind: "keyboard", path: "", readOnly: false, live: false } });
    expect((await d.client.listUsbPlugs({ domain: "sys-usb" })).plugs.map((p) => p.id)).toEqual(["usb1", "usb2"]);
    await expect(d.client.plugUsbDevice({ domain: "sys-usb", kind: "mouse", path: "", readOnly: false })).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
    await expect(d.client.plugUsbDevice({ domain: "nosuch", kind: "keyboard", path: "", readOnly: false })).rejects.toMatchObject({ code: "NOT_FOUND" });
    await expect(d.client.unplugUsbDevice({ domain: "sys-usb", id: "../usb1" })).rejects.toMatchObject({ code: "INVALID_ARGUMENT", message: expect.stringContaining("is not a USB plug id") });
    await expect(d.client.unplugUsbDevice({ domain: "sys-usb", id: "usb7" })).rejects.toMatchObject({ code: "NOT_FOUND" });
    await d.client.unplugUsbDevice({ domain: "sys-usb", id: "usb1" });
    await d.client.unplugUsbDevice({ domain: "sys-usb", id: "usb2" });
    expect(await d.client.listUsbPlugs({ domain: "sys-usb" })).toEqual({ plugs: [] });
  });

  it("ships a policy that denies qubes.USB to every domain, keyboards and tablets, and asks for a mouse", async () => {
    const policy = readFileSync(path.join(d.dirs.dataDir, "policy.d", "90-default.policy"), "utf8");
    expect(policy).toMatch(/^qubes\.USB +\* +@anyvm +@anyvm +deny$/m);
    for (const [service, action] of [
      ["qubes.InputKeyboard", "deny"],
      ["qubes.InputMouse", "ask"],
      ["qubes.InputTablet", "deny"],
    ] as const) {
      expect(policy).toMatch(new RegExp(`^${service.replace(".", "\\.")} +\\* +@anyvm +@anyvm +${action}$`, "m"));
    }
    const check = await d.client.checkPolicy({ service: "qubes.USB", argument: "2-1", source: "work", target: "sys-usb" });
    expect(check).toMatchObject({ action: adminV1.PolicyAction.POLICY_ACTION_DENY, reason: "the policy denies it" });
  });
});
