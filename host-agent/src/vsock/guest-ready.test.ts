import { existsSync, mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { GuestReadySignal } from "./guest-ready.js";

let dir: string;
afterEach(() => rmSync(dir, { recursive: true, force: true }));
const fresh = () => {
  dir = mkdtempSync(path.join(os.tmpdir(), "qvm-ready-"));
  return path.join(dir, "vsock.sock_52");
};
/** Connects as the guest does; resolves when the host has closed it, rejects if nothing listens. */
const connect = (p: string) =>
  new Promise<void>((resolve, reject) => {
    let connected = false;
    const s = net.connect(p, () => {
      connected = true;
      s.write("anything the guest says is ignored");
    });
    s.on("error", (err) => (connected ? undefined : reject(err)));
    s.on("close", () => connected && resolve());
  });

describe("the guest's ready signal", () => {
  it("resolves at the guest's first connection, then stops listening and removes its socket", async () => {
    const p = fresh();
    const ready = await GuestReadySignal.listen(p);
    const waiting = ready.wait(10_000);
    await connect(p);
    expect(await waiting).toBe(true);
    expect(existsSync(p)).toBe(false);
    await expect(connect(p)).rejects.toThrow();
  });

  it("gives up after the timeout, or as soon as the VM is gone", async () => {
    const p = fresh();
    const ready = await GuestReadySignal.listen(p);
    const t0 = Date.now();
    expect(await ready.wait(300)).toBe(false);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(290);
    const t1 = Date.now();
    expect(await ready.wait(10_000, () => false)).toBe(false);
    expect(Date.now() - t1).toBeLessThan(2000);
    ready.close();
    ready.close();
    expect(existsSync(p)).toBe(false);
  });

  it("counts a connection made before anyone waited", async () => {
    const p = fresh();
    const ready = await GuestReadySignal.listen(p);
    await connect(p);
    expect(await ready.wait(1000)).toBe(true);
  });
});
