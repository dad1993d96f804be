// The USB RPCs over real gRPC (a Unix socket, no VM) on a fake sysfs tree: ListUsbDevices,
// the WatchUsbDevices stream (a list at once, then changes only), and the watchers' bound.
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Server, ServerCredentials, credentials, status, type ClientReadableStream } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { agentV1 } from "@qvm/protocol";
import { createGuestAgentService } from "../service.js";
import { fakeGui } from "../gui/testing.js";
import { WindowManager } from "../gui/windows.js";
import { MAX_USB_WATCHERS, UsbMonitor } from "./monitor.js";
import { STICK_ATTRS, addDevice, removeDevice } from "./testing.js";

let dir = "";
let sysfs = "";
let server: Server;
let client: agentV1.GuestAgentClient;
let usb: UsbMonitor;

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), "qvm-usb-rpc-"));
  sysfs = path.join(dir, "sys/bus/usb/devices");
  mkdirSync(sysfs, { recursive: true });
  const windows = new WindowManager(fakeGui(path.join(dir, "run")), { runtimeRoot: path.join(dir, "run") });
  usb = new UsbMonitor({ root: sysfs, pollMs: 20 });
  server = new Server();
  server.addService(agentV1.GuestAgentService, createGuestAgentService({ shutdown() {} }, windows, usb));
  const socket = path.join(dir, "agent.sock");
  await new Promise<void>((res, rej) => server.bindAsync(`unix:${socket}`, ServerCredentials.createInsecure(), (e) => (e ? rej(e) : res())));
  client = new agentV1.GuestAgentClient(`unix:${socket}`, credentials.createInsecure());
});
afterAll(() => {
  client.close();
  server.forceShutdown();
  rmSync(dir, { recursive: true, force: true });
});

const listUsb = () =>
  new Promise<agentV1.ListUsbDevicesResponse>((resolve, reject) => client.listUsbDevices({}, (err, res) => (err ? reject(err) : resolve(res!))));

function watch() {
  const lists: string[][] = [];
  const stream: ClientReadableStream<agentV1.ListUsbDevicesResponse> = client.watchUsbDevices({});
  stream.on("data", (m: agentV1.ListUsbDevicesResponse) => lists.push(m.devices.map((d) => `${d.busid}/${d.driver}`)));
  stream.on("error", () => {});
  return {
    lists,
    stream,
    async next(n: number) {
      for (const end = Date.now() + 2000; lists.length < n && Date.now() < end; ) await new Promise((r) => setTimeout(r, 5));
    },
  };
}

describe("USB RPCs", () => {
  it("ListUsbDevices returns the devices as the agent reads them", async () => {
    expect(await listUsb()).toEqual({ devices: [] });
    addDevice(sysfs, "2-1", { attrs: STICK_ATTRS, driver: "usb", interfaces: [{ name: "1.0", class: "08", subclass: "06", protocol: "50" }] });
    expect(await listUsb()).toEqual({
      devices: [
        {
          busid: "2-1",
          vendorId: "0781",
          productId: "5581",
          manufacturer: "SanDisk",
          product: "Ultra",
          serial: "4C530001230512116543",
          deviceClass: 0,
          interfaces: [{ class: 8, subclass: 6, protocol: 0x50 }],
          driver: "usb",
        },
      ],
    });
    removeDevice(sysfs, "2-1");
  });

  it("WatchUsbDevices sends the list at once, then after each change, and nothing while nothing changes", async () => {
    const w = watch();
    await w.next(1);
    expect(w.lists).toEqual([[]]);
    await new Promise((r) => setTimeout(r, 100));
    expect(w.lists).toEqual([[]]);
    addDevice(sysfs, "1-1.4", { attrs: STICK_ATTRS, driver: "usb" });
    await w.next(2);
    removeDevice(sysfs, "1-1.4");
    addDevice(sysfs, "1-1.4", { attrs: STICK_ATTRS, driver: "usbip-host" });
    await w.next(3);
    removeDevice(sysfs, "1-1.4");
    await w.next(4);
    expect(w.lists).toEqual([[], ["1-1.4/usb"], ["1-1.4/usbip-host"], []]);
    w.stream.cancel();
  });

  it(`allows ${MAX_USB_WATCHERS} watch streams; a cancelled one frees its place and the poll stops with the last`, async () => {
    const streams = Array.from({ length: MAX_USB_WATCHERS }, () => watch());
    for (const s of streams) await s.next(1);
    const extra = watch();
    const err = await new Promise<{ code?: number }>((r) => extra.stream.once("error", r));
    expect(err.code).toBe(status.RESOURCE_EXHAUSTED);
    streams[0]!.stream.cancel();
    await new Promise((r) => setTimeout(r, 50));
    const again = watch();
    await again.next(1);
    expect(again.lists).toEqual([[]]);
    for (const s of [...streams.slice(1), again]) s.stream.cancel();
    for (const end = Date.now() + 2000; usb.watching > 0 && Date.now() < end; ) await new Promise((r) => setTimeout(r, 5));
    expect(usb.watching).toBe(0);
  });
});
