// The window RPCs over real gRPC (a Unix socket, no VM), on a fake domain: replies, the status
// codes of refusals, the WatchWindows stream, and the clipboard's bytes and codes.
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Server, ServerCredentials, credentials, status, type ClientReadableStream } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { agentV1 } from "@qvm/protocol";
import { MAX_CLIPBOARD_BYTES, WINDOW_VSOCK_PORT_BASE } from "@qvm/protocol/contracts";
import { createGuestAgentService } from "../service.js";
import { fakeGui, timedOut, type FakeGui } from "./testing.js";
import { WindowManager } from "./windows.js";

let dir = "";
let server: Server;
let client: agentV1.GuestAgentClient;
let gui: FakeGui;

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), "qvm-gui-rpc-"));
  gui = fakeGui(path.join(dir, "run"));
  const windows = new WindowManager(gui, { runtimeRoot: path.join(dir, "run"), timings: { closeGraceMs: 50, pollMs: 2, clipboardMs: 100 }, listen: (p) => `TEST-LISTEN:${p}` });
  server = new Server();
  server.addService(agentV1.GuestAgentService, createGuestAgentService({ shutdown() {} }, windows));
  const socket = path.join(dir, "agent.sock");
  await new Promise<void>((res, rej) => server.bindAsync(`unix:${socket}`, ServerCredentials.createInsecure(), (e) => (e ? rej(e) : res())));
  client = new agentV1.GuestAgentClient(`unix:${socket}`, credentials.createInsecure());
});
afterAll(() => {
  client.close();
  server.forceShutdown();
  rmSync(dir, { recursive: true, force: true });
});

type Unary<Req, Res> = (req: Req, cb: (err: (Error & { code?: number }) | null, res?: Res) => void) => unknown;
const call = <Req, Res>(f: Unary<Req, Res>, req: Req) =>
  new Promise<Res>((resolve, reject) => f.call(client, req, (err, res) => (err ? reject(err) : resolve(res!))));

const openWindow = (req: Partial<agentV1.OpenWindowRequest> = {}) =>
  call<agentV1.OpenWindowRequest, agentV1.OpenWindowResponse>(client.openWindow as never, { argv: ["foot"], width: 640, height: 400, user: "user", ...req });
const listWindows = () => call<agentV1.ListWindowsRequest, agentV1.ListWindowsResponse>(client.listWindows as never, {});
const closeWindow = (windowId: number) => call<agentV1.CloseWindowRequest, agentV1.CloseWindowResponse>(client.closeWindow as never, { windowId });
const resizeWindow = (windowId: number, width: number, height: number) =>
  call<agentV1.ResizeWindowRequest, agentV1.ResizeWindowResponse>(client.resizeWindow as never, { windowId, width, height });
const getClipboard = (windowId: number, maxBytes: number) =>
  call<agentV1.GetWindowClipboardRequest, agentV1.GetWindowClipboardResponse>(client.getWindowClipboard as never, { windowId, maxBytes });
const setClipboard = (windowId: number, data: Buffer) =>
  call<agentV1.SetWindowClipboardRequest, agentV1.SetWindowClipboardResponse>(client.setWindowClipboard as never, { windowId, data });

/** Collects a WatchWindows stream's lists. */
function watch(): { lists: agentV1.WindowInfo[][]; stream: ClientReadableStream<agentV1.ListWindowsResponse>; next(n: number): Promise<void> } {
  const lists: agentV1.WindowInfo[][] = [];
  const stream = client.watchWindows({});
  stream.on("data", (m: agentV1.ListWindowsResponse) => lists.push(m.windows));
  stream.on("error", () => {});
  return {
    lists,
    stream,
    async next(n) {
      for (const end = Date.now() + 2000; lists.length < n && Date.now() < end; ) await new Promise((r) => setTimeout(r, 5));
    },
  };
}

describe("window RPCs", () => {
  it("open, list, watch, resize and close a window", async () => {
    const w = watch();
    await w.next(1);
    expect(w.lists).toEqual([[]]);
    const opened = await openWindow();
    expect(opened).toEqual({ windowId: 1, vsockPort: WINDOW_VSOCK_PORT_BASE });
    const info = { windowId: 1, vsockPort: WINDOW_VSOCK_PORT_BASE, width: 640, height: 400, alive: true };
    expect((await listWindows()).windows).toEqual([info]);
    await resizeWindow(1, 1280, 720);
    await closeWindow(1);
    await w.next(5);
    expect(w.lists).toEqual([[], [info], [{ ...info, width: 1280, height: 720 }], [{ ...info, width: 1280, height: 720, alive: false }], []]);
    w.stream.cancel();
  });

  it("refuses with the matching status codes", async () => {
    const code = (p: Promise<unknown>) => p.then(() => "ok", (e: { code?: number }) => e.code);
    expect(await code(openWindow({ width: 10 }))).toBe(status.INVALID_ARGUMENT);
    expect(await code(openWindow({ user: "root" }))).toBe(status.INVALID_ARGUMENT);
    expect(await code(closeWindow(77))).toBe(status.NOT_FOUND);
    expect(await code(resizeWindow(77, 100, 100))).toBe(status.NOT_FOUND);
    gui.missing = ["wayvnc"];
    expect(await code(openWindow())).toBe(status.FAILED_PRECONDITION);
    gui.missing = [];
    const ids = [];
    for (let i = 0; i < 8; i++) ids.push((await openWindow()).windowId);
    expect(await code(openWindow())).toBe(status.RESOURCE_EXHAUSTED);
    for (const id of ids) await closeWindow(id);
    expect((await listWindows()).windows).toEqual([]);
  });

  it("sets and reads a window's clipboard, and refuses with the matching status codes", async () => {
    const code = (p: Promise<unknown>) => p.then(() => "ok", (e: { code?: number }) => e.code);
    const { windowId } = await openWindow();
    expect(await getClipboard(windowId, 100)).toEqual({ data: Buffer.alloc(0), oversized: false });
    const bytes = Buffer.from([0x68, 0xc3, 0xa9, 0x00, 0xff]);
    expect(await setClipboard(windowId, bytes)).toEqual({});
    expect(await getClipboard(windowId, 5)).toEqual({ data: bytes, oversized: false });
    expect(await getClipboard(windowId, 4)).toEqual({ data: Buffer.alloc(0), oversized: true });
    expect(await code(getClipboard(windowId, 0))).toBe(status.INVALID_ARGUMENT);
    expect(await code(getClipboard(windowId, MAX_CLIPBOARD_BYTES + 1))).toBe(status.INVALID_ARGUMENT);
    expect(await code(setClipboard(windowId, Buffer.alloc(MAX_CLIPBOARD_BYTES + 1)))).toBe(status.INVALID_ARGUMENT);
    expect(await code(getClipboard(77, 100))).toBe(status.NOT_FOUND);
    expect(await code(setClipboard(77, bytes))).toBe(status.NOT_FOUND);
    const before = gui.onCapture;
    gui.onCapture = (_cmd, { timeoutMs }) => timedOut(timeoutMs);
    expect(await code(getClipboard(windowId, 100))).toBe(status.DEADLINE_EXCEEDED);
    gui.onCapture = before;
    await closeWindow(windowId);
    expect(await code(getClipboard(windowId, 100))).toBe(status.NOT_FOUND);
  });

  it("ends a watch stream the host cancels, freeing its place", async () => {
    const streams = Array.from({ length: 4 }, () => watch());
    for (const s of streams) await s.next(1);
    const fifth = watch();
    const err = await new Promise<{ code?: number }>((r) => fifth.stream.once("error", r));
    expect(err.code).toBe(status.RESOURCE_EXHAUSTED);
    streams[0]!.stream.cancel();
    await new Promise((r) => setTimeout(r, 50));
    const again = watch();
    await again.next(1);
    expect(again.lists).toEqual([[]]);
    for (const s of [...streams.slice(1), again]) s.stream.cancel();
  });
});
