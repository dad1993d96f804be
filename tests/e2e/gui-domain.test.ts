// A window from a real domain (docs/gui.md): `qvm run --gui` in a domain on debian-12-gui starts
// a headless sway, wayvnc and the program there, and the window's stream reaches the host through
// hybrid vsock and the admin API's WindowStream: the remote-framebuffer handshake arrives intact.
// The page side (frames, sandboxed noVNC, keys, tickets) is tested with a host compositor in
// gui-windows.test.ts.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ImageStore, buildTemplate, terminalProgress } from "@qvm/images";
import { imagesDir } from "./fixtures.js";
import { withDaemon, withDomain, type E2eDaemon } from "./qvmd-fixtures.js";

let d: E2eDaemon;

beforeAll(async () => {
  // Built here, not in the global setup: only this file needs it (about 40 s the first time).
  await buildTemplate(new ImageStore(imagesDir()), "debian-12-gui", terminalProgress(process.stderr, "e2e images"));
  d = await withDaemon("e2e-gui-domain");
  await withDomain(d, "work", { label: "blue", template: "debian-12-gui", properties: { memory: "800" }, start: true });
}, 300_000);

afterAll(async () => {
  await d?.[Symbol.asyncDispose]();
});

/** The first bytes of a window's stream through the admin API. */
async function handshake(domain: string, windowId: number): Promise<string> {
  const call = d.client.windowStream();
  call.write({ msg: { $case: "start", value: { domain, windowId } } });
  const first = await new Promise<Buffer>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no bytes from the window within 60 s")), 60_000);
    call.once("data", (m: { output: Buffer }) => {
      clearTimeout(timer);
      resolve(Buffer.from(m.output));
    });
    call.once("error", (e: Error) => {
      clearTimeout(timer);
      reject(e);
    });
  });
  call.cancel();
  return first.toString("latin1");
}

describe("a window from a real domain", () => {
  it("opens with qvm run --gui, streams RFB to the host, resizes and closes", async () => {
    const run = await d.qvm(["run", "--gui", "--geometry", "640x480", "work", "--", "foot"]);
    expect(run.exitCode, run.stderr).toBe(0);
    expect(run.stdout).toContain("window 1 of work: foot (640x480)");
    const list = await d.qvm(["ls", "--json"]);
    expect(list.exitCode).toBe(0);
    const { windows } = await d.client.listWindows({ domain: "work" });
    expect(windows).toEqual([{ domain: "work", windowId: 1, program: "foot", width: 640, height: 480 }]);
    // RFB starts with the server's version line (RFC 6143 §7.1.1).
    expect(await handshake("work", 1)).toMatch(/^RFB 003\.00\d\n/);
    const sway = await d.qvm(["run", "-p", "--no-pty", "work", "--", "sh", "-c", "pgrep -x sway; pgrep -x foot"]);
    expect(sway.stdout.trim().split("\n").length, sway.stderr).toBe(2);

    await d.client.resizeWindow({ domain: "work", windowId: 1, width: 800, height: 600 });
    expect((await d.client.listWindows({ domain: "work" })).windows[0]).toMatchObject({ width: 800, height: 600 });

    await d.client.closeWindow({ domain: "work", windowId: 1 });
    expect((await d.client.listWindows({ domain: "work" })).windows).toEqual([]);
    const gone = await d.qvm(["run", "-p", "--no-pty", "work", "--", "sh", "-c", "pgrep -x sway || echo none"]);
    expect(gone.stdout.trim()).toBe("none");
  });

  it("a domain that stops closes its windows", async () => {
    expect((await d.qvm(["run", "--gui", "work", "--", "foot"])).exitCode).toBe(0);
    expect((await d.client.listWindows({ domain: "" })).windows.length).toBe(1);
    expect((await d.qvm(["kill", "work"])).exitCode).toBe(0);
    await new Promise((r) => setTimeout(r, 1000));
    expect((await d.client.listWindows({ domain: "" })).windows).toEqual([]);
  });
});
