import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { encodeData, FrameType, FRAME_HEADER_BYTES } from "@qvm/protocol/qrexec";
import { StdinWindow } from "./stdin-window.js";

const FRAME = 64 * 1024;
let cleanup: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanup.splice(0)) c();
});

/** A connected pair over a Unix socket: `sender` is ours, `received` counts what reached the far end. */
async function pair() {
  const dir = mkdtempSync(path.join(os.tmpdir(), "qvm-window-"));
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(path.join(dir, "s"), r));
  const far = new Promise<net.Socket>((r) => server.once("connection", r));
  const sender = net.connect(path.join(dir, "s"));
  await new Promise((r) => sender.once("connect", r));
  const peer = await far;
  const state = { received: 0 };
  peer.on("data", (c: Buffer) => (state.received += c.length));
  cleanup.push(() => {
    sender.destroy();
    peer.destroy();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return { sender, peer, state };
}

const settle = () => new Promise((r) => setTimeout(r, 50));

describe("stdin window", () => {
  it("keeps at most the window unacknowledged, and sends more as acks come", async () => {
    const { sender, state } = await pair();
    const w = new StdinWindow(sender, 2 * FRAME);
    let done = false;
    w.write(encodeData(FrameType.STDIN, Buffer.alloc(8 * FRAME)), () => (done = true));
    await settle();
    expect(state.received).toBe(2 * (FRAME + FRAME_HEADER_BYTES));
    expect(w.unacknowledged).toBe(2 * FRAME);
    expect(done).toBe(false);
    w.ack(FRAME);
    await settle();
    expect(state.received).toBe(3 * (FRAME + FRAME_HEADER_BYTES));
    for (let i = 0; i < 20 && w.unacknowledged > 0; i++) {
      w.ack(w.unacknowledged);
      await settle();
    }
    expect(state.received).toBe(8 * (FRAME + FRAME_HEADER_BYTES));
    expect(done).toBe(true);
    expect(w.unacknowledged).toBe(0);
  });

  it("lets the empty EOF frame through a full window", async () => {
    const { sender, state } = await pair();
    const w = new StdinWindow(sender, FRAME);
    w.write(encodeData(FrameType.STDIN, Buffer.alloc(FRAME)), () => {});
    let eof = false;
    w.write(encodeData(FrameType.STDIN, Buffer.alloc(0)).concat([Buffer.from([FrameType.STDIN, 0, 0, 0, 0])]), () => (eof = true));
    await settle();
    expect(eof).toBe(true);
    expect(state.received).toBe(FRAME + 2 * FRAME_HEADER_BYTES);
  });

  it("refuses an ack of more than is in flight, and any ack without a window", async () => {
    const { sender } = await pair();
    const w = new StdinWindow(sender, 2 * FRAME);
    w.write(encodeData(FrameType.STDIN, Buffer.alloc(100)), () => {});
    expect(() => w.ack(101)).toThrow(/101 stdin bytes with only 100 in flight/);
    const open = new StdinWindow(sender, 0);
    expect(() => open.ack(1)).toThrow(/without a window/);
  });

  it("without a window sends everything at once", async () => {
    const { sender, state } = await pair();
    const w = new StdinWindow(sender, 0);
    await new Promise<void>((r) => w.write(encodeData(FrameType.STDIN, Buffer.alloc(4 * FRAME)), r));
    await settle();
    expect(state.received).toBe(4 * (FRAME + FRAME_HEADER_BYTES));
  });

  it("releases a waiting writer when the channel closes", async () => {
    const { sender } = await pair();
    const w = new StdinWindow(sender, FRAME);
    const released = new Promise<void>((r) => w.write(encodeData(FrameType.STDIN, Buffer.alloc(4 * FRAME)), r));
    sender.destroy();
    await released;
  });
});
