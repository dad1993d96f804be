import net from "node:net";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { dialHybridVsock } from "./hybrid-dial.js";

let dir: string;
let server: net.Server | undefined;
/** Device-side sockets: a timed-out dial leaves its socket open for a late reply, so close them here. */
const accepted: net.Socket[] = [];
beforeEach(() => (dir = mkdtempSync(path.join(os.tmpdir(), "qvm-hv-"))));
afterEach(async () => {
  for (const s of accepted.splice(0)) s.destroy();
  await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
  server = undefined;
  rmSync(dir, { recursive: true, force: true });
});

/** A stand-in for the VMM's hybrid vsock socket that answers CONNECT with `reply`. */
async function fakeDevice(reply: (port: string, sock: net.Socket) => void): Promise<string> {
  const p = path.join(dir, "vsock.sock");
  server = net.createServer((sock) => {
    accepted.push(sock);
    let buf = "";
    const onData = (d: Buffer) => {
      buf += d.toString();
      const m = /^CONNECT (\d+)\n/.exec(buf);
      if (!m) return;
      sock.off("data", onData);
      reply(m[1]!, sock);
    };
    sock.on("data", onData);
    sock.on("error", () => {});
  });
  await new Promise<void>((r) => server!.listen(p, () => r()));
  return p;
}

describe("hybrid vsock dial", () => {
  it("completes the handshake and keeps bytes that followed the OK line", async () => {
    const p = await fakeDevice((port, sock) => {
      expect(port).toBe("1024");
      sock.write("OK 12345\nhello");
      sock.on("data", (d) => sock.write(d));
    });
    const s = await dialHybridVsock(p, 1024, 2000);
    const got = await new Promise<string>((resolve) => {
      let acc = "";
      s.on("data", (d) => {
        acc += d.toString();
        if (acc === "hello ping") resolve(acc);
      });
      s.resume();
      s.write(" ping");
    });
    expect(got).toBe("hello ping");
    s.destroy();
  });

  it("fails with AGENT_UNAVAILABLE when nothing listens on the guest port", async () => {
    const p = await fakeDevice((_port, sock) => sock.destroy());
    await expect(dialHybridVsock(p, 1024, 2000)).rejects.toMatchObject({ code: "AGENT_UNAVAILABLE" });
  });

  it("fails with AGENT_PROTOCOL on a malformed reply", async () => {
    const p = await fakeDevice((_port, sock) => sock.write("HELLO THERE\n"));
    await expect(dialHybridVsock(p, 1024, 2000)).rejects.toMatchObject({ code: "AGENT_PROTOCOL" });
  });

  it("fails with AGENT_PROTOCOL on an endless reply without a newline", async () => {
    const p = await fakeDevice((_port, sock) => sock.write("O".repeat(10_000)));
    await expect(dialHybridVsock(p, 1024, 2000)).rejects.toMatchObject({ code: "AGENT_PROTOCOL", message: expect.stringContaining("oversized") });
  });

  it("times out when the device never answers", async () => {
    const p = await fakeDevice(() => {});
    await expect(dialHybridVsock(p, 1024, 300)).rejects.toMatchObject({ code: "AGENT_TIMEOUT" });
  });

  it("names the socket when the domain is not running", async () => {
    await expect(dialHybridVsock(path.join(dir, "absent.sock"), 1024, 500)).rejects.toMatchObject({
      code: "AGENT_UNAVAILABLE",
      message: expect.stringContaining("is the domain running"),
    });
  });

  // vhost-device-vsock 0.3 panics its vring worker, and every vsock stream of the VM dies, when the
  // guest accepts a connection whose host end was already closed (the soak found it, issue 12).
  it("regression: a dial that times out keeps its socket until the device answers, then ends it", async () => {
    let deviceSide: net.Socket | undefined;
    const p = await fakeDevice((_port, sock) => (deviceSide = sock));
    await expect(dialHybridVsock(p, 1024, 50)).rejects.toMatchObject({ code: "AGENT_TIMEOUT" });
    await new Promise((r) => setTimeout(r, 100));
    // Still open for the late reply: writing it does not fail, and the host then ends the stream.
    expect(deviceSide!.destroyed).toBe(false);
    const ended = new Promise<void>((r) => deviceSide!.once("end", () => r()));
    expect(deviceSide!.write("OK 7\n")).toBe(true);
    await ended;
  });
});
