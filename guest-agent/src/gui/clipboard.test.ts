// A window's clipboard (GetWindowClipboard, SetWindowClipboard) against a fake domain
// (gui/testing.ts): the bounds, what wl-paste and wl-copy are run with, oversized, empty and
// stalled selections, and unknown or ended windows. Then the real bounded runners (capture, feed)
// with ordinary processes: output and time bounds, and what a run forks.
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { MAX_CLIPBOARD_BYTES } from "@qvm/protocol/contracts";
import { CLIPBOARD_TIMEOUT_MS, CLIPBOARD_TYPE } from "./clipboard.js";
import { processGroups } from "./containment.js";
import type { Launch } from "./commands.js";
import { captureOutput, feedInput, type ProcessExit } from "./system.js";
import { fakeGui, timedOut, type FakeGui } from "./testing.js";
import { WindowManager } from "./windows.js";

let dir = "";
let root = "";
let gui: FakeGui;
let windows: WindowManager;

const TIMINGS = { readyMs: 1000, closeGraceMs: 50, commandMs: 1000, killWaitMs: 300, clipboardMs: 150, pollMs: 2 };
const open = async () => (await windows.open({ argv: ["foot"], width: 800, height: 600, user: "user" })).windowId;
const text = (s: string) => Buffer.from(s, "utf8");
const empty = { data: Buffer.alloc(0), oversized: false };
const settle = () => new Promise((r) => setTimeout(r, 20));

beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), "qvm-clipboard-"));
  root = path.join(dir, "run");
  gui = fakeGui(root);
  windows = new WindowManager(gui, { runtimeRoot: root, timings: TIMINGS, listen: (port) => `TEST-LISTEN:${port}` });
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe("a window's clipboard", () => {
  it("is set with wl-copy and read with wl-paste, as the user, on the window's display, in its containment", async () => {
    const id = await open();
    await windows.setClipboard(id, text("héllo\nworld"));
    expect(await windows.getClipboard(id, 100)).toEqual({ data: text("héllo\nworld"), oversized: false });

    const [copy, paste] = gui.clipboardRuns;
    const sway = gui.processes.find((p) => p.role === "sway")!;
    for (const run of [copy!, paste!]) {
      expect(run.cmd.file).toBe("setpriv");
      expect(run.cmd.args.slice(0, 4)).toEqual(["--reuid=1000", "--regid=1000", "--init-groups", "--"]);
      expect(run.cmd.env).toMatchObject({ XDG_RUNTIME_DIR: path.join(root, `win-${id}`), WAYLAND_DISPLAY: "wayland-1", HOME: "/home/user", USER: "user" });
      expect(run.cmd.cwd).toBe("/home/user");
      expect(run.containment).toBe(sway.containment);
      expect(run.timeoutMs).toBe(TIMINGS.clipboardMs);
    }
    expect(copy!.cmd.args.slice(4)).toEqual(["wl-copy", "--type", CLIPBOARD_TYPE]);
    expect(copy!.input).toEqual(text("héllo\nworld"));
    expect(paste!.cmd.args.slice(4)).toEqual(["wl-paste", "--no-newline", "--type", "text"]);
    expect(paste!.maxBytes).toBe(100);
  });

  it("keeps each window's clipboard its own", async () => {
    const a = await open();
    const b = await open();
    await windows.setClipboard(a, text("for a"));
    expect(await windows.getClipboard(b, 100)).toEqual(empty);
    expect(await windows.getClipboard(a, 100)).toEqual({ data: text("for a"), oversized: false });
  });

  it("answers no data, not an error, when nothing (textual) is copied", async () => {
    const id = await open();
    expect(await windows.getClipboard(id, 100)).toEqual(empty);
    for (const words of ["Nothing is copied\n", "No suitable type of content copied\n"]) {
      gui.onCapture = async () => ({ exit: { code: 1, signal: null }, stdout: Buffer.alloc(0), overflow: false, timedOut: false, stderr: words });
      expect(await windows.getClipboard(id, 100)).toEqual(empty);
    }
  });

  it("clears the selection when set to no data", async () => {
    const id = await open();
    await windows.setClipboard(id, text("x"));
    await windows.setClipboard(id, Buffer.alloc(0));
    expect(gui.clipboardRuns[1]!.cmd.args.slice(4)).toEqual(["wl-copy", "--clear"]);
    expect(await windows.getClipboard(id, 100)).toEqual(empty);
  });

  it("answers oversized, and no data, for a selection larger than max_bytes", async () => {
    const id = await open();
    await windows.setClipboard(id, Buffer.alloc(MAX_CLIPBOARD_BYTES, 0x61));
    expect(await windows.getClipboard(id, MAX_CLIPBOARD_BYTES)).toEqual({ data: Buffer.alloc(MAX_CLIPBOARD_BYTES, 0x61), oversized: false });
    expect(await windows.getClipboard(id, MAX_CLIPBOARD_BYTES - 1)).toEqual({ data: Buffer.alloc(0), oversized: true });
    await windows.setClipboard(id, text("12345"));
    expect(await windows.getClipboard(id, 5)).toEqual({ data: text("12345"), oversized: false });
    expect(await windows.getClipboard(id, 4)).toEqual({ data: Buffer.alloc(0), oversized: true });
    // Even from a runner that read past the bound without saying so.
    gui.onCapture = async () => ({ exit: { code: 0, signal: null }, stdout: text("123456"), overflow: false, timedOut: false, stderr: "" });
    expect(await windows.getClipboard(id, 5)).toEqual({ data: Buffer.alloc(0), oversized: true });
  });

  it("refuses max_bytes and data out of bounds before running anything", async () => {
    const id = await open();
    for (const maxBytes of [0, -1, 1.5, MAX_CLIPBOARD_BYTES + 1, 2 ** 32 - 1, NaN]) {
      await expect(windows.getClipboard(id, maxBytes)).rejects.toMatchObject({ code: "INVALID_ARGUMENT", message: expect.stringContaining(`1..${MAX_CLIPBOARD_BYTES}`) });
    }
    // Checked before the window is looked up.
    await expect(windows.getClipboard(99, 0)).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
    await expect(windows.setClipboard(id, Buffer.alloc(MAX_CLIPBOARD_BYTES + 1))).rejects.toMatchObject({
      code: "INVALID_ARGUMENT",
      message: `clipboard data is ${MAX_CLIPBOARD_BYTES + 1} bytes, more than ${MAX_CLIPBOARD_BYTES}`,
    });
    expect(gui.clipboardRuns).toEqual([]);
    await windows.setClipboard(id, text("x"));
    expect(await windows.getClipboard(id, 1)).toEqual({ data: text("x"), oversized: false });
  });

  it("answers DEADLINE_EXCEEDED (AGENT_TIMEOUT) when the transfer stalls, after the time-out", async () => {
    const id = await open();
    gui.onCapture = (_cmd, { timeoutMs }) => timedOut(timeoutMs);
    const t0 = Date.now();
    await expect(windows.getClipboard(id, 100)).rejects.toMatchObject({ code: "AGENT_TIMEOUT", message: expect.stringMatching(/within 150 ms/) });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(TIMINGS.clipboardMs - 5);
    gui.onFeed = (_cmd, _input, timeoutMs) => timedOut(timeoutMs);
    await expect(windows.setClipboard(id, text("x"))).rejects.toMatchObject({ code: "AGENT_TIMEOUT" });
    // The default is a few seconds.
    expect(CLIPBOARD_TIMEOUT_MS).toBe(5000);
  });

  it("reports other failures of wl-paste and wl-copy as INTERNAL, with wl-paste's words", async () => {
    const id = await open();
    gui.onCapture = async () => ({ exit: { code: 1, signal: null }, stdout: Buffer.alloc(0), overflow: false, timedOut: false, stderr: "Failed to connect to a Wayland server\n" });
    await expect(windows.getClipboard(id, 100)).rejects.toMatchObject({
      code: "INTERNAL",
      message: "reading window 1's clipboard failed: wl-paste exited with code 1: Failed to connect to a Wayland server",
    });
    gui.onCapture = async () => ({ exit: { code: null, signal: "SIGSEGV" }, stdout: Buffer.alloc(0), overflow: false, timedOut: false, stderr: "No selection" });
    await expect(windows.getClipboard(id, 100)).rejects.toMatchObject({ code: "INTERNAL", message: expect.stringContaining("killed by SIGSEGV") });
    gui.onFeed = async () => ({ exit: { code: 1, signal: null }, timedOut: false });
    await expect(windows.setClipboard(id, text("x"))).rejects.toMatchObject({ code: "INTERNAL", message: "setting window 1's clipboard failed: wl-copy exited with code 1" });
  });

  it("refuses unknown, ended and closed windows with NOT_FOUND", async () => {
    await expect(windows.getClipboard(7, 100)).rejects.toMatchObject({ code: "NOT_FOUND", message: "no window 7 in this domain" });
    await expect(windows.setClipboard(7, text("x"))).rejects.toMatchObject({ code: "NOT_FOUND" });
    const id = await open();
    gui.processes.find((p) => p.role === "program")!.exit(0);
    await settle();
    expect(windows.list()).toEqual([expect.objectContaining({ windowId: id, alive: false })]);
    await expect(windows.getClipboard(id, 100)).rejects.toMatchObject({ code: "NOT_FOUND", message: `window ${id} has ended` });
    await expect(windows.setClipboard(id, text("x"))).rejects.toMatchObject({ code: "NOT_FOUND" });
    const other = await open();
    await windows.close(other);
    await expect(windows.getClipboard(other, 100)).rejects.toMatchObject({ code: "NOT_FOUND" });
    expect(gui.clipboardRuns).toEqual([]);
  });

  it("answers NOT_FOUND when the window ends while its clipboard is read or set", async () => {
    const id = await open();
    const endWindow = () => gui.processes.find((p) => p.role === "sway")!.exit(null, "SIGKILL");
    gui.onCapture = async () => {
      endWindow();
      await settle();
      return { exit: { code: null, signal: "SIGKILL" }, stdout: Buffer.alloc(0), overflow: false, timedOut: false, stderr: "" };
    };
    await expect(windows.getClipboard(id, 100)).rejects.toMatchObject({ code: "NOT_FOUND" });
    const other = await open();
    gui.onFeed = async (cmd) => {
      gui.processes.find((p) => p.role === "sway" && p.cmd.env.XDG_RUNTIME_DIR === cmd.env.XDG_RUNTIME_DIR)!.exit(null, "SIGKILL");
      await settle();
      return { exit: { code: 1, signal: null }, timedOut: false };
    };
    await expect(windows.setClipboard(other, text("x"))).rejects.toMatchObject({ code: "NOT_FOUND" });
  });

  it("fails naming wl-clipboard where the domain lacks it; windows open without it", async () => {
    gui.missing = ["wl-copy", "wl-paste"];
    const id = await open();
    await expect(windows.getClipboard(id, 100)).rejects.toMatchObject({ code: "MISSING_DEPENDENCY", message: expect.stringMatching(/wl-copy, wl-paste missing \(Debian's wl-clipboard/) });
    await expect(windows.setClipboard(id, text("x"))).rejects.toMatchObject({ code: "MISSING_DEPENDENCY" });
    expect(gui.clipboardRuns).toEqual([]);
  });
});

// The real runners, with ordinary processes in process groups (as on a host without cgroups).
describe("the bounded runners", () => {
  const sh = (script: string): Launch => ({ file: "/bin/sh", args: ["-c", script], env: { PATH: "/usr/bin:/bin" }, cwd: dir });
  const alive = (pid: number) => {
    try {
      return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
    } catch {
      return false;
    }
  };
  const gone = async (pid: number) => {
    for (const end = Date.now() + 2000; alive(pid) && Date.now() < end; ) await settle();
    return !alive(pid);
  };
  const pidIn = (file: string) => Number(readFileSync(path.join(dir, file), "utf8").trim());
  const exit = (code: number): ProcessExit => ({ code, signal: null });

  it("capture returns stdout, the exit and stderr's end", async () => {
    const r = await captureOutput(sh("printf 'a\\nb'; echo oops >&2; exit 3"), processGroups(), { maxBytes: 10, timeoutMs: 5000 });
    expect(r).toEqual({ exit: exit(3), stdout: text("a\nb"), overflow: false, timedOut: false, stderr: "oops\n" });
    const full = await captureOutput(sh("printf 1234567890"), processGroups(), { maxBytes: 10, timeoutMs: 5000 });
    expect(full).toMatchObject({ exit: exit(0), stdout: text("1234567890"), overflow: false });
  });

  it("capture stops reading past maxBytes and kills the writer's group", async () => {
    const t0 = Date.now();
    const r = await captureOutput(sh("sleep 60 & echo $! > child; echo $$ > writer; exec yes"), processGroups(), { maxBytes: 1000, timeoutMs: 5000 });
    expect(Date.now() - t0).toBeLessThan(4000);
    expect(r).toMatchObject({ exit: undefined, overflow: true, timedOut: false });
    expect(r.stdout.length).toBe(1001);
    expect(await gone(pidIn("writer"))).toBe(true);
    expect(await gone(pidIn("child"))).toBe(true);
  });

  it("capture kills the group at the time-out, what the command forked included", async () => {
    // Like wl-paste, whose cat copies what the selection's owner sends: here it never ends.
    const t0 = Date.now();
    const r = await captureOutput(sh("sleep 60 & echo $! > child; printf partial; wait"), processGroups(), { maxBytes: 100, timeoutMs: 200 });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(195);
    expect(Date.now() - t0).toBeLessThan(3000);
    expect(r).toMatchObject({ exit: undefined, overflow: false, timedOut: true, stdout: text("partial") });
    expect(await gone(pidIn("child"))).toBe(true);
  });

  it("capture and feed report a command that cannot start as code 127", async () => {
    const missing: Launch = { file: path.join(dir, "no-such-program"), args: [], env: {}, cwd: dir };
    expect(await captureOutput(missing, processGroups(), { maxBytes: 10, timeoutMs: 5000 })).toMatchObject({ exit: exit(127), timedOut: false });
    expect(await feedInput(missing, processGroups(), text("x"), 5000)).toEqual({ exit: exit(127), timedOut: false });
  });

  it("feed gives the input on stdin and returns when the command exits, not when what it forked does", async () => {
    // Like wl-copy, which forks the process that serves the selection and keeps its stderr.
    const t0 = Date.now();
    const r = await feedInput(sh("cat > fed; sleep 60 & echo $! > server; echo still here >&2; exit 0"), processGroups(), text("data\0bytes"), 5000);
    expect(Date.now() - t0).toBeLessThan(4000);
    expect(r).toEqual({ exit: exit(0), timedOut: false });
    expect(readFileSync(path.join(dir, "fed"))).toEqual(text("data\0bytes"));
    const server = pidIn("server");
    expect(alive(server)).toBe(true);
    process.kill(server, "SIGKILL");
    expect(await gone(server)).toBe(true);
  });

  it("feed kills a command that does not exit in time, with its group", async () => {
    const r = await feedInput(sh("sleep 60 & echo $! > child; cat > /dev/null; wait"), processGroups(), text("x"), 200);
    expect(r).toEqual({ exit: undefined, timedOut: true });
    expect(await gone(pidIn("child"))).toBe(true);
    expect(existsSync(path.join(dir, "child"))).toBe(true);
  });
});
