// The window manager and a window's life, against a fake domain (gui/testing.ts): the order
// processes start in, the bounds, ids and ports, ending, closing and resizing, and that nothing
// a window started is left running.
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { MAX_WINDOWS_PER_DOMAIN, WINDOW_VSOCK_PORT_BASE, WINDOW_VSOCK_PORT_COUNT } from "@qvm/protocol/contracts";
import { fakeGui, roleOf, type FakeGui } from "./testing.js";
import { WindowManager, type WindowSummary } from "./windows.js";

let dir = "";
let root = "";
let gui: FakeGui;
let windows: WindowManager;
let logs: string[];

const TIMINGS = { readyMs: 1000, closeGraceMs: 100, commandMs: 1000, killWaitMs: 300, pollMs: 2 };
const open = (over: Partial<{ argv: string[]; width: number; height: number; user: string }> = {}) =>
  windows.open({ argv: ["foot"], width: 800, height: 600, user: "user", ...over });
const settle = () => new Promise((r) => setTimeout(r, 20));

beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), "qvm-gui-"));
  root = path.join(dir, "run");
  gui = fakeGui(root);
  logs = [];
  windows = new WindowManager(gui, { runtimeRoot: root, timings: TIMINGS, log: (m) => logs.push(m), listen: (port) => `TEST-LISTEN:${port}` });
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe("OpenWindow", () => {
  it("starts sway, then the program on its display, then wayvnc, then socat on the window's port", async () => {
    const reply = await open({ argv: ["foot", "-o", "colors.background=ff0000"] });
    expect(reply).toEqual({ windowId: 1, vsockPort: WINDOW_VSOCK_PORT_BASE });
    expect(gui.processes.map((p) => p.role)).toEqual(["sway", "program", "wayvnc", "socat"]);
    const [, program, , socat] = gui.processes;
    expect(program!.cmd.args.slice(-3)).toEqual(["foot", "-o", "colors.background=ff0000"]);
    expect(program!.cmd.env.WAYLAND_DISPLAY).toBe("wayland-1");
    expect(socat!.cmd.args).toContain(`TEST-LISTEN:${WINDOW_VSOCK_PORT_BASE}`);
    expect(readFileSync(path.join(root, "win-1/sway.config"), "utf8")).toContain("output HEADLESS-1 resolution 800x600");
    expect(readFileSync(path.join(root, "win-1/wayvnc.config"), "utf8")).toBe("");
    expect(windows.list()).toEqual([{ windowId: 1, vsockPort: WINDOW_VSOCK_PORT_BASE, width: 800, height: 600, alive: true }]);
    expect(gui.initCalls).toBe(1);
  });

  it("refuses what is out of bounds before starting anything", async () => {
    const refused = async (over: Parameters<typeof open>[0], code: string, message: RegExp) =>
      expect(open(over)).rejects.toMatchObject({ code, message: expect.stringMatching(message) });
    await refused({ argv: [] }, "INVALID_ARGUMENT", /argv/);
    await refused({ argv: [""] }, "INVALID_ARGUMENT", /argv/);
    await refused({ argv: ["a\0b"] }, "INVALID_ARGUMENT", /NUL/);
    await refused({ argv: Array.from({ length: 4097 }, () => "x") }, "INVALID_ARGUMENT", /4096/);
    for (const [width, height] of [[63, 600], [800, 63], [3841, 600], [800, 2161], [800.5, 600], [0, 0]]) {
      await refused({ width, height }, "INVALID_ARGUMENT", /out of bounds \(64\.\.3840 x 64\.\.2160\)/);
    }
    await refused({ user: "" }, "INVALID_ARGUMENT", /needs a user/);
    await refused({ user: "nobody-here" }, "INVALID_ARGUMENT", /no such user/);
    await refused({ user: "root" }, "INVALID_ARGUMENT", /root/);
    gui.missing = ["sway", "wayvnc"];
    await refused({}, "MISSING_DEPENDENCY", /sway, wayvnc missing .*debian-12-gui/);
    expect(gui.processes).toEqual([]);
    // The extremes are within bounds.
    gui.missing = [];
    await open({ width: 64, height: 2160 });
    await open({ width: 3840, height: 64 });
  });

  it(`holds at most ${MAX_WINDOWS_PER_DOMAIN} live windows; ended ones do not count`, async () => {
    for (let i = 0; i < MAX_WINDOWS_PER_DOMAIN; i++) await open();
    await expect(open()).rejects.toMatchObject({ code: "RESOURCE_EXHAUSTED" });
    gui.processes.find((p) => p.role === "program")!.exit(0);
    await settle();
    expect(windows.list().filter((w) => !w.alive)).toHaveLength(1);
    await expect(open()).resolves.toMatchObject({ windowId: MAX_WINDOWS_PER_DOMAIN + 1 });
  });

  it("never reuses an id and hands out ports round-robin, skipping those still listed", async () => {
    const a = await open();
    const b = await open();
    await windows.close(a.windowId);
    const c = await open();
    expect([a, b, c].map((w) => w.windowId)).toEqual([1, 2, 3]);
    expect([a, b, c].map((w) => w.vsockPort)).toEqual([0, 1, 2].map((n) => WINDOW_VSOCK_PORT_BASE + n));
    // After wrapping around, the range's first port is taken by nobody: it comes back.
    const m = windows as unknown as { nextPort: number };
    m.nextPort = WINDOW_VSOCK_PORT_COUNT - 1;
    expect((await open()).vsockPort).toBe(WINDOW_VSOCK_PORT_BASE + WINDOW_VSOCK_PORT_COUNT - 1);
    expect((await open()).vsockPort).toBe(WINDOW_VSOCK_PORT_BASE);
    // ...but not one a listed window holds.
    m.nextPort = 1;
    expect((await open()).vsockPort).toBe(WINDOW_VSOCK_PORT_BASE + 3);
  });

  it("fails, and leaves nothing behind, when sway ends before it is ready", async () => {
    gui.onSpawn = (p) => {
      if (p.role === "sway") {
        rmSync(path.join(root, "win-1/wayland-1"));
        p.writeStderr("[ERROR] Unable to drop root\n");
        p.exit(1);
      }
    };
    await expect(open()).rejects.toMatchObject({ code: "INTERNAL", message: expect.stringMatching(/sway exited with code 1 .*Unable to drop root/) });
    expect(windows.list()).toEqual([]);
    expect(existsSync(path.join(root, "win-1"))).toBe(false);
    expect(gui.live()).toEqual([]);
  });

  it("fails with the program's own words when it exits while the window opens", async () => {
    gui.onSpawn = (p) => {
      if (p.role === "program") {
        p.writeStderr("setpriv: failed to execute nosuchprogram: No such file or directory\n");
        p.exit(127);
      }
    };
    await expect(open({ argv: ["nosuchprogram"] })).rejects.toMatchObject({
      code: "FAILED_PRECONDITION",
      message: expect.stringMatching(/the program exited with code 127 .*No such file/),
    });
    expect(gui.live()).toEqual([]);
    expect(existsSync(path.join(root, "win-1"))).toBe(false);
  });

  it("fails when a part is not ready in time, and kills what it started", async () => {
    gui.silent.add("socat");
    const slow = new WindowManager(gui, { runtimeRoot: root, timings: { ...TIMINGS, readyMs: 50 }, listen: (port) => `TEST-LISTEN:${port}` });
    await expect(slow.open({ argv: ["foot"], width: 100, height: 100, user: "user" })).rejects.toMatchObject({ code: "INTERNAL", message: "socat was not ready within 50 ms" });
    expect(gui.processes.map((p) => p.role)).toEqual(["sway", "program", "wayvnc", "socat"]);
    expect(gui.live()).toEqual([]);
  });
});

describe("a window's end", () => {
  it("when the program exits, every other process is killed, the directory removed and watchers told", async () => {
    const seen: WindowSummary[][] = [];
    windows.watch((l) => seen.push(l));
    const { windowId } = await open();
    const program = gui.processes.find((p) => p.role === "program")!;
    program.exit(0);
    await settle();
    expect(gui.live()).toEqual([]);
    expect(existsSync(path.join(root, `win-${windowId}`))).toBe(false);
    expect(windows.list()).toEqual([expect.objectContaining({ windowId, alive: false })]);
    expect(seen.map((l) => l.map((w) => w.alive))).toEqual([[], [true], [false]]);
    expect(logs).toContain("window 1 ended: the program exited with code 0");
    // Closing an ended window forgets it.
    await windows.close(windowId);
    expect(windows.list()).toEqual([]);
    expect(seen.at(-1)).toEqual([]);
  });

  it("ends when its compositor, VNC server or listener dies", async () => {
    for (const role of ["sway", "wayvnc", "socat"] as const) {
      const { windowId } = await open();
      gui.processes.find((p) => p.role === role && !p.hasExited())!.exit(null, "SIGSEGV");
      await settle();
      expect(windows.list().find((w) => w.windowId === windowId)?.alive).toBe(false);
      expect(logs.at(-1)).toBe(`window ${windowId} ended: ${role} killed by SIGSEGV`);
      expect(gui.live()).toEqual([]);
    }
  });

  it(`keeps at most ${MAX_WINDOWS_PER_DOMAIN} ended windows listed, forgetting the oldest`, async () => {
    for (let i = 0; i < MAX_WINDOWS_PER_DOMAIN + 2; i++) {
      await open();
      gui.live().find((p) => p.role === "program")!.exit(0);
      await settle();
    }
    expect(windows.list().map((w) => w.windowId)).toEqual([3, 4, 5, 6, 7, 8, 9, 10]);
  });
});

describe("CloseWindow", () => {
  it("sends the program a close request and ends the window once it exits", async () => {
    const { windowId } = await open();
    gui.onRun = (cmd) => {
      if (cmd.args.at(-1) === '[workspace=".*"] kill') gui.processes.find((p) => p.role === "program")!.exit(0);
      return { code: 0, output: "" };
    };
    await windows.close(windowId);
    expect(gui.commands.map((c) => [roleOf(c), c.args.at(-1)])).toEqual([["swaymsg", '[workspace=".*"] kill']]);
    expect(gui.live()).toEqual([]);
    expect(windows.list()).toEqual([]);
    expect(logs.at(-1)).toBe(`window ${windowId} ended: closed`);
    await expect(windows.close(windowId)).rejects.toMatchObject({ code: "NOT_FOUND" });
  });

  it("kills a program that ignores the close request after the grace period", async () => {
    const { windowId } = await open();
    const t0 = Date.now();
    await windows.close(windowId);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(TIMINGS.closeGraceMs - 5);
    expect(gui.processes.find((p) => p.role === "program")!.hasExited()).toBe(true);
    expect(gui.live()).toEqual([]);
    expect(logs.at(-1)).toMatch(/closed \(the program did not exit within 100 ms/);
  });

  it("refuses an unknown window", async () => {
    await expect(windows.close(99)).rejects.toMatchObject({ code: "NOT_FOUND" });
  });
});

describe("ResizeWindow", () => {
  it("sets the output's size through swaymsg and lists the new size", async () => {
    const { windowId } = await open();
    await windows.resize(windowId, 1024, 768);
    expect(gui.commands.map((c) => c.args.at(-1))).toEqual(["output HEADLESS-1 resolution 1024x768"]);
    expect(windows.list()[0]).toMatchObject({ width: 1024, height: 768 });
  });

  it("refuses sizes out of bounds, unknown and ended windows, and reports swaymsg's failure", async () => {
    const { windowId } = await open();
    await expect(windows.resize(windowId, 10, 10)).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
    await expect(windows.resize(42, 100, 100)).rejects.toMatchObject({ code: "NOT_FOUND" });
    gui.onRun = () => ({ code: 2, output: "Error: something\n" });
    await expect(windows.resize(windowId, 100, 100)).rejects.toMatchObject({ code: "INTERNAL", message: expect.stringContaining("Error: something") });
    expect(windows.list()[0]).toMatchObject({ width: 800, height: 600 });
    gui.processes.find((p) => p.role === "program")!.exit(0);
    await settle();
    await expect(windows.resize(windowId, 100, 100)).rejects.toMatchObject({ code: "FAILED_PRECONDITION" });
  });
});

describe("WatchWindows and the agent's exit", () => {
  it("allows a bounded number of watchers, each told the list at once", () => {
    const calls: number[] = [];
    const stops = Array.from({ length: 4 }, (_, i) => windows.watch(() => calls.push(i)));
    expect(calls).toEqual([0, 1, 2, 3]);
    expect(() => windows.watch(() => {})).toThrow(expect.objectContaining({ code: "RESOURCE_EXHAUSTED" }));
    stops[0]!();
    expect(() => windows.watch(() => {})).not.toThrow();
  });

  it("killAll ends every window's processes at once", async () => {
    await open();
    await open();
    windows.killAll();
    expect(gui.live()).toEqual([]);
  });
});
