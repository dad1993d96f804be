// Integration: the agent's window manager with the real domain system (systemGui) on this host,
// running the real sway, wayvnc, foot and socat as an unprivileged user (nobody), as in a
// debian-12-gui domain. Differences from a domain: socat listens on a Unix socket instead of a
// vsock port (a host has no vsock loopback), and processes are kept in process groups (the host
// has no writable cgroup v2 of the agent's own). Needs root (to drop to nobody) and the packages
// scripts/install-system-deps.sh installs (sway, wayvnc, foot, fonts-dejavu-core, socat,
// wl-clipboard).
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MAX_CLIPBOARD_BYTES } from "@qvm/protocol/contracts";
import { lookupUser, type GuestUser } from "../users.js";
import { systemGui } from "./system.js";
import { WindowManager } from "./windows.js";

const NOBODY = lookupUser("nobody");
let dir = "";
let runtimeRoot = "";
let listenDir = "";
let user: GuestUser;
let windows: WindowManager;
const logs: string[] = [];
const listenPath = (port: number) => path.join(listenDir, `port-${port}.sock`);

beforeAll(() => {
  if (process.getuid?.() !== 0) throw new Error("this test drops to the user nobody: run it as root (as CI does)");
  if (!NOBODY) throw new Error("this test needs the user nobody in /etc/passwd");
  const missing = systemGui().missingPrograms();
  for (const p of ["foot", "wl-copy", "wl-paste"]) if (!["/usr/bin", "/bin"].some((d) => existsSync(path.join(d, p)))) missing.push(p);
  if (missing.length) throw new Error(`${missing.join(", ")} missing: run scripts/install-system-deps.sh`);
  dir = mkdtempSync(path.join(os.tmpdir(), "qvm-real-sway-"));
  chmodSync(dir, 0o755);
  runtimeRoot = path.join(dir, "run");
  listenDir = path.join(dir, "listen");
  const home = path.join(dir, "home");
  for (const d of [listenDir, home]) {
    mkdirSync(d, { mode: 0o700 });
    chownSync(d, NOBODY.uid, NOBODY.gid);
  }
  // nobody's own home (/nonexistent) does not exist.
  user = { ...NOBODY, home, shell: "/bin/sh" };
  windows = new WindowManager(
    { ...systemGui({ runtimeRoot, cgroupParent: null, log: (m) => logs.push(m) }), lookupUser: (n) => (n === "nobody" ? user : undefined) },
    { runtimeRoot, listen: (port) => `UNIX-LISTEN:${listenPath(port)},fork,max-children=2`, log: (m) => logs.push(m), timings: { closeGraceMs: 5000 } },
  );
});

afterAll(() => {
  windows?.killAll();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Connects as an RFB client (no authentication) and returns the framebuffer size from ServerInit. */
function rfbSize(socket: string): Promise<{ version: string; width: number; height: number }> {
  return new Promise((resolve, reject) => {
    const c = net.createConnection(socket);
    let buf = Buffer.alloc(0);
    let stage = 0;
    let version = "";
    const timer = setTimeout(() => (c.destroy(), reject(new Error(`no RFB handshake; stage ${stage}`))), 10_000);
    c.on("error", reject);
    c.on("data", (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (stage === 0 && buf.length >= 12) {
        version = buf.subarray(0, 12).toString("latin1");
        buf = buf.subarray(12);
        c.write("RFB 003.008\n");
        stage = 1;
      }
      if (stage === 1 && buf.length >= 1 && buf.length >= 1 + buf[0]!) {
        const types = [...buf.subarray(1, 1 + buf[0]!)];
        buf = buf.subarray(1 + buf[0]!);
        if (!types.includes(1)) return reject(new Error(`no "None" security type: ${types}`));
        c.write(Buffer.from([1]));
        stage = 2;
      }
      if (stage === 2 && buf.length >= 4) {
        buf = buf.subarray(4); // SecurityResult 0
        c.write(Buffer.from([1])); // ClientInit: shared
        stage = 3;
      }
      if (stage === 3 && buf.length >= 4) {
        clearTimeout(timer);
        c.destroy();
        resolve({ version, width: buf.readUInt16BE(0), height: buf.readUInt16BE(2) });
      }
    });
  });
}

/** Processes anywhere on the host whose environment names the window's runtime directory. */
function processesOf(runtimeDir: string): number[] {
  const mark = Buffer.from(`XDG_RUNTIME_DIR=${runtimeDir}\0`);
  const pids: number[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      if (/^\d+ \(.*\) Z/.test(stat)) continue;
      if (readFileSync(`/proc/${name}/environ`).includes(mark)) pids.push(Number(name));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

const until = async (f: () => boolean, ms = 10_000) => {
  for (const end = Date.now() + ms; !f() && Date.now() < end; ) await new Promise((r) => setTimeout(r, 20));
  return f();
};

describe("a window with the real sway, wayvnc and foot, as nobody", () => {
  it("opens, serves RFB at the size asked, follows a resize, and closes leaving no process", async () => {
    const { windowId, vsockPort } = await windows.open({ argv: ["foot", "-o", "colors.background=204060", "sleep", "600"], width: 320, height: 200, user: "nobody" });
    const runtimeDir = path.join(runtimeRoot, `win-${windowId}`);
    expect(processesOf(runtimeDir).length).toBeGreaterThanOrEqual(4); // sway, foot, sleep, wayvnc, socat
    expect(await rfbSize(listenPath(vsockPort))).toEqual({ version: "RFB 003.008\n", width: 320, height: 200 });

    await windows.resize(windowId, 640, 480);
    expect(windows.list()).toEqual([{ windowId, vsockPort, width: 640, height: 480, alive: true }]);
    const sizes: string[] = [];
    for (const end = Date.now() + 5000; sizes.at(-1) !== "640x480" && Date.now() < end; await new Promise((r) => setTimeout(r, 100))) {
      const s = await rfbSize(listenPath(vsockPort));
      sizes.push(`${s.width}x${s.height}`);
    }
    expect(sizes.at(-1)).toBe("640x480");

    // foot exits on its close request, well within the grace period.
    const t0 = Date.now();
    await windows.close(windowId);
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(logs).toContain(`window ${windowId} ended: closed`);
    expect(processesOf(runtimeDir)).toEqual([]);
    expect(existsSync(runtimeDir)).toBe(false);
    expect(windows.list()).toEqual([]);
  });

  it("ends when its program exits, killing the rest, and stays listed until closed", async () => {
    // Not a Wayland client: the window's life does not depend on what the program draws.
    const { windowId } = await windows.open({ argv: ["sh", "-c", 'while [ ! -e "$XDG_RUNTIME_DIR/stop" ]; do sleep 0.05; done'], width: 200, height: 100, user: "nobody" });
    const runtimeDir = path.join(runtimeRoot, `win-${windowId}`);
    expect(processesOf(runtimeDir).length).toBeGreaterThanOrEqual(4);
    writeFileSync(path.join(runtimeDir, "stop"), "");
    expect(await until(() => windows.list().some((w) => w.windowId === windowId && !w.alive))).toBe(true);
    expect(await until(() => !existsSync(runtimeDir))).toBe(true);
    expect(processesOf(runtimeDir)).toEqual([]);
    await windows.close(windowId);
    expect(windows.list()).toEqual([]);
  });

  it("sets a window's clipboard and reads it back with the real wl-copy and wl-paste; each window has its own", async () => {
    const a = (await windows.open({ argv: ["foot", "sleep", "600"], width: 200, height: 100, user: "nobody" })).windowId;
    const b = (await windows.open({ argv: ["foot", "sleep", "600"], width: 200, height: 100, user: "nobody" })).windowId;
    const none = { data: Buffer.alloc(0), oversized: false };
    // Nothing copied yet: wl-paste says "No selection".
    expect(await windows.getClipboard(a, 100)).toEqual(none);

    // Byte for byte: wl-paste adds no newline and wl-copy trims none.
    const hello = Buffer.from("héllo\nwörld\n");
    await windows.setClipboard(a, hello);
    expect(await windows.getClipboard(a, 100)).toEqual({ data: hello, oversized: false });
    expect(await windows.getClipboard(a, hello.length)).toEqual({ data: hello, oversized: false });
    expect(await windows.getClipboard(a, hello.length - 1)).toEqual({ data: Buffer.alloc(0), oversized: true });
    expect(await windows.getClipboard(b, 100)).toEqual(none);

    const big = Buffer.from("0123456789".repeat(MAX_CLIPBOARD_BYTES / 10));
    await windows.setClipboard(b, big);
    expect(await windows.getClipboard(b, MAX_CLIPBOARD_BYTES)).toEqual({ data: big, oversized: false });
    expect(await windows.getClipboard(b, 10)).toEqual({ data: Buffer.alloc(0), oversized: true });
    expect(await windows.getClipboard(a, 100)).toEqual({ data: hello, oversized: false });

    // The selection is served by the wl-copy the set left running, as the user, with the window's
    // environment; no data clears it (and that wl-copy ends).
    const runtimeA = path.join(runtimeRoot, `win-${a}`);
    const runtimeB = path.join(runtimeRoot, `win-${b}`);
    const copiers = (runtimeDir: string) => processesOf(runtimeDir).filter((pid) => readFileSync(`/proc/${pid}/comm`, "utf8").trim() === "wl-copy");
    expect(copiers(runtimeA)).toHaveLength(1);
    expect(statSync(`/proc/${copiers(runtimeA)[0]}`).uid).toBe(user.uid);
    await windows.setClipboard(a, Buffer.alloc(0));
    expect(await windows.getClipboard(a, 100)).toEqual(none);
    expect(await until(() => copiers(runtimeA).length === 0)).toBe(true);
    expect(copiers(runtimeB)).toHaveLength(1);

    // Closing a window ends its wl-copy too (here, without cgroups, when its compositor ends).
    await windows.close(a);
    await windows.close(b);
    expect(await until(() => processesOf(runtimeB).length === 0, 5000)).toBe(true);
    expect(processesOf(runtimeA)).toEqual([]);
    await expect(windows.getClipboard(b, 100)).rejects.toMatchObject({ code: "NOT_FOUND" });
    expect(windows.list()).toEqual([]);
  });

  it("refuses a program that cannot run, with its error", async () => {
    await expect(windows.open({ argv: ["/nonexistent/program"], width: 200, height: 100, user: "nobody" })).rejects.toMatchObject({
      code: "FAILED_PRECONDITION",
      message: expect.stringMatching(/the program exited with code \d+ .*(No such file|nonexistent)/),
    });
    expect(readdirSync(runtimeRoot)).toEqual([]);
  });
});
