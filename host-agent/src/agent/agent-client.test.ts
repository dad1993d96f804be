// Integration: the host's AgentClient against a real gRPC server that behaves like a compromised
// guest agent. Every bad reply must end in a typed QvmError, and the client must keep working.
import { status } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { agentV1 } from "@qvm/protocol";
import type { AgentClient } from "./agent-client.js";
import { serveLocalAgent, type LocalAgent } from "./local-agent.js";

type Mode = "ok" | "oversized" | "control-chars" | "early-stdout" | "after-exit" | "no-exit" | "bad-exit" | "flood";
let mode: Mode = "ok";
let floodBlocked = 0;
/** What GetWindowClipboard answers, and every SetWindowClipboard request. */
let clipboardReply: agentV1.GetWindowClipboardResponse = { data: Buffer.alloc(0), oversized: false };
const clipboardSets: agentV1.SetWindowClipboardRequest[] = [];
let local: LocalAgent;
let client: AgentClient;

const hostile: agentV1.GuestAgentServer = {
  ping(_call, cb) {
    cb(null, { agentVersion: mode === "oversized" ? "9".repeat(300 * 1024) : "1.0.0" });
  },
  getInfo(_call, cb) {
    cb(null, { kernelRelease: mode === "control-chars" ? "6.1\x1b[31m" : "6.1.0", uptimeSeconds: 1, agentVersion: "1.0.0", hostname: "h" });
  },
  exec(call) {
    call.once("data", () => {
      const send = (msg: agentV1.ExecResponse["msg"]) => call.write({ msg });
      if (mode === "early-stdout") send({ $case: "stdout", value: Buffer.from("x") });
      send({ $case: "started", value: { execId: 1, pid: 10, dataChannel: false, stdinWindow: 0 } });
      if (mode === "flood") {
        // Writes until the transport pushes back; counts how often it did.
        const chunk = Buffer.alloc(64 * 1024, 0x61);
        let sent = 0;
        const pump = () => {
          while (sent < 400) {
            sent++;
            if (!call.write({ msg: { $case: "stdout", value: chunk } })) {
              floodBlocked++;
              call.once("drain", pump);
              return;
            }
          }
          send({ $case: "exit", value: { code: 0, signal: "" } });
          call.end();
        };
        pump();
        return;
      }
      send({ $case: "stdout", value: Buffer.from("out") });
      if (mode === "no-exit") return void call.end();
      send({ $case: "exit", value: { code: mode === "bad-exit" ? 999 : 0, signal: "" } });
      if (mode === "after-exit") send({ $case: "stdout", value: Buffer.from("late") });
      call.end();
    });
  },
  signal(_call, cb) {
    cb({ code: status.NOT_FOUND, details: "no such exec" });
  },
  shutdown(_call, cb) {
    cb(null, {});
  },
  reidentify(_call, cb) {
    cb(null, {});
  },
  setNetwork(_call, cb) {
    if (mode === "control-chars") return cb(null, { failures: { "10.137.0.9": "no\x1b[31m such host" } });
    if (mode === "oversized") return cb(null, { failures: Object.fromEntries(Array.from({ length: 100 }, (_, i) => [`10.137.0.${i}`, "x"])) });
    if (mode === "bad-exit") return cb(null, { failures: { "../etc": "x" } });
    cb(null, { failures: { "10.137.0.9": "example.test did not resolve" } });
  },
  // The window RPCs (docs/gui.md): not used by these tests.
  openWindow(_call, cb) {
    cb({ code: status.UNIMPLEMENTED, details: "not in this fake" });
  },
  resizeWindow(_call, cb) {
    cb({ code: status.UNIMPLEMENTED, details: "not in this fake" });
  },
  closeWindow(_call, cb) {
    cb({ code: status.UNIMPLEMENTED, details: "not in this fake" });
  },
  listWindows(_call, cb) {
    cb(null, { windows: [] });
  },
  watchWindows(call) {
    call.end();
  },
  // The clipboard RPCs: a canned answer, which may break the bound the host asked for.
  getWindowClipboard(call, cb) {
    if (call.request.windowId !== 1) return cb({ code: status.NOT_FOUND, details: `no window ${call.request.windowId}` });
    cb(null, clipboardReply);
  },
  setWindowClipboard(call, cb) {
    clipboardSets.push(call.request);
    cb(null, {});
  },
  // USB (docs/usb.md): canned lists, well-formed or not.
  listUsbDevices(_call, cb) {
    cb(null, { devices: usbLists[0] ?? [] });
  },
  watchUsbDevices(call) {
    for (const devices of usbLists) call.write({ devices });
    if (usbWatchEnds) call.end();
  },
};

const stick: agentV1.UsbDeviceInfo = {
  busid: "2-1",
  vendorId: "46F4",
  productId: "0001",
  manufacturer: "QEMU",
  product: "QEMU USB HARDDRIVE",
  serial: "1-0000:00:04.0-1",
  deviceClass: 0,
  interfaces: [{ class: 8, subclass: 6, protocol: 80 }],
  driver: "usb-storage",
};
/** What ListUsbDevices answers (the first) and WatchUsbDevices sends, one message each. */
let usbLists: agentV1.UsbDeviceInfo[][] = [[stick]];
let usbWatchEnds = true;

beforeAll(async () => {
  local = await serveLocalAgent(hostile);
  client = local.client;
});
afterAll(() => local.close());

async function runExec() {
  const p = client.exec({ command: ["x"] });
  p.stdin.end();
  p.stdout.resume();
  p.stderr.resume();
  return p.exit;
}

describe("AgentClient against a hostile agent", () => {
  it("works with a well-behaved peer", async () => {
    mode = "ok";
    expect(await client.ping()).toEqual({ agentVersion: "1.0.0" });
    expect(await runExec()).toEqual({ code: 0, signal: null });
  });

  it.each<[Mode, string]>([
    ["oversized", "ping"],
    ["control-chars", "getInfo"],
  ])("a %s reply to %s is refused with AGENT_PROTOCOL", async (m, call) => {
    mode = m;
    const p = call === "ping" ? client.ping() : client.getInfo();
    await expect(p).rejects.toMatchObject({ name: "QvmError", code: "AGENT_PROTOCOL" });
    mode = "ok";
    expect(await client.ping()).toEqual({ agentVersion: "1.0.0" });
  });

  it.each<Mode>(["early-stdout", "after-exit", "no-exit", "bad-exit"])("an Exec stream with %s fails with AGENT_PROTOCOL", async (m) => {
    mode = m;
    await expect(runExec()).rejects.toMatchObject({ code: "AGENT_PROTOCOL" });
    mode = "ok";
    expect(await runExec()).toEqual({ code: 0, signal: null });
  });

  it("SetNetwork replies are bounded and validated: too many failures or a key that is not an address is refused; guest text is quoted", async () => {
    mode = "ok";
    expect(await client.setNetwork({ client: undefined, netvm: undefined, updatesProxyClient: false })).toEqual({ failures: { "10.137.0.9": `"example.test did not resolve"` } });
    mode = "control-chars";
    const quoted = await client.setNetwork({ client: undefined, netvm: undefined, updatesProxyClient: false });
    expect(quoted.failures["10.137.0.9"]).not.toContain("\x1b");
    for (const m of ["oversized", "bad-exit"] as const) {
      mode = m;
      await expect(client.setNetwork({ client: undefined, netvm: undefined, updatesProxyClient: false })).rejects.toMatchObject({ code: "AGENT_PROTOCOL" });
    }
    mode = "ok";
  });

  it("an output flood is held back by back-pressure while nobody reads", async () => {
    mode = "flood";
    floodBlocked = 0;
    const p = client.exec({ command: ["x"] });
    p.stdin.end();
    await new Promise((r) => setTimeout(r, 500));
    expect(floodBlocked).toBeGreaterThan(0); // the sender had to wait: nothing piles up unbounded
    expect(p.stdout.readableLength).toBeLessThanOrEqual(2 * 1024 * 1024);
    let total = 0;
    p.stdout.on("data", (d: Buffer) => (total += d.length));
    expect(await p.exit).toEqual({ code: 0, signal: null });
    expect(total).toBe(400 * 64 * 1024);
  });

  it("GetWindowClipboard: data within the bound comes back; more than asked for is refused as oversized, whatever the guest says", async () => {
    clipboardReply = { data: Buffer.from("héllo"), oversized: false };
    expect(await client.getWindowClipboard(1, 100)).toEqual({ data: Buffer.from("héllo"), oversized: false });
    // Exactly the bound is fine; one byte more is oversized and the bytes are dropped.
    clipboardReply = { data: Buffer.alloc(100, 0x61), oversized: false };
    expect((await client.getWindowClipboard(1, 100)).data).toHaveLength(100);
    expect(await client.getWindowClipboard(1, 99)).toEqual({ data: Buffer.alloc(0), oversized: true });
    // A guest that says oversized but sends data anyway: the data is not passed on.
    clipboardReply = { data: Buffer.from("secret"), oversized: true };
    expect(await client.getWindowClipboard(1, 100)).toEqual({ data: Buffer.alloc(0), oversized: true });
    clipboardReply = { data: Buffer.alloc(0), oversized: false };
    expect(await client.getWindowClipboard(1, 100)).toEqual({ data: Buffer.alloc(0), oversized: false });
    await expect(client.getWindowClipboard(2, 100)).rejects.toMatchObject({ code: "NOT_FOUND", message: expect.stringContaining("no window 2") });
  });

  it("SetWindowClipboard sends the window and the bytes as given", async () => {
    clipboardSets.length = 0;
    await client.setWindowClipboard(3, Buffer.from("text\n"));
    expect(clipboardSets).toEqual([{ windowId: 3, data: Buffer.from("text\n") }]);
  });

  it("ListUsbDevices: a device's ids are normalized and its text escaped; a bad entry is left out, not the list", async () => {
    usbLists = [[stick, { ...stick, busid: "../../x" }, { ...stick, busid: "2-2", product: "evil\x1b[2J\u202e" }]];
    const list = await client.listUsbDevices();
    expect(list.devices.map((d) => d.busid)).toEqual(["2-1", "2-2"]);
    expect(list.devices[0]).toMatchObject({ vendorId: "46f4", productId: "0001", product: "QEMU USB HARDDRIVE", interfaces: [{ class: 8, subclass: 6, protocol: 80 }] });
    expect(list.devices[1]!.product).toBe("evil\\u001b[2J\\u202e");
    expect(list).toMatchObject({ dropped: 1 });
  });

  it("WatchUsbDevices: each list in order, then the end; a stop ends it once", async () => {
    usbLists = [[stick], [], [stick, { ...stick, busid: "1-1.4" }]];
    usbWatchEnds = true;
    const got: string[][] = [];
    const ended = await new Promise<Error | undefined>((resolve) => {
      client.watchUsbDevices(
        (l) => got.push(l.devices.map((d) => d.busid)),
        (err) => resolve(err),
      );
    });
    expect(ended).toBeUndefined();
    expect(got).toEqual([["2-1"], [], ["2-1", "1-1.4"]]);
    usbWatchEnds = false;
    let ends = 0;
    const lists: number[] = [];
    const stop = client.watchUsbDevices(
      (l) => lists.push(l.devices.length),
      () => ends++,
    );
    for (const t0 = Date.now(); lists.length < 3 && Date.now() - t0 < 3000; ) await new Promise((r) => setTimeout(r, 10));
    stop();
    stop();
    expect(lists).toEqual([1, 0, 2]);
    expect(ends).toBe(1);
    usbLists = [[stick]];
    usbWatchEnds = true;
  });

  it("maps guest errors to typed errors with clipped text", async () => {
    await expect(client.signal(1, "SIGTERM")).rejects.toMatchObject({ code: "NOT_FOUND" });
  });
});
