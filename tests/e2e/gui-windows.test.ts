/// <reference lib="dom" />
// Program windows in the web shell, the fast tier (issue 14, docs/gui.md): no VM. A real sway
// (headless, pixman) with foot and wayvnc runs on the host as an unprivileged uid, standing in for
// a domain's window; a second window is a hostile RFB server written here, which names itself
// "[dom0] trust me", draws a fake frame in another domain's colour and sends clipboard text. The
// real shell server relays both through the Unix-socket dialer to Debian's chromium (playwright-
// core), where noVNC runs in sandboxed frames. Checked: the frames' label colours and titles come
// from qvmd's data only; the canvases show the domains' pixels; keys reach only the focused
// window, through the page (which sees Ctrl-Shift-C first and keeps it); resize reaches the
// compositor (through a test backend that runs swaymsg, as the agent call will); close; a used
// ticket is refused. Ticket expiry, Origin checks and the flood are in gui-proxy/src/display.test.ts.
// The global clipboard (an in-memory one with qvmd's rules): the chords on a focused window and on
// a terminal (a fake Exec behind a real xterm.js: no VM) become the page's messages and never reach
// the window's RFB server or the terminal's input; the panel, notices and refusals; the desktop
// controls (the browser's clipboard API, and the page's box when that API refuses). A qvmd restart
// (the test backend loses its streams and lists the window again): the page reconnects the
// window's stream without a click. Leaves a screenshot of two labelled windows in
// .qvm/artifacts/gui-windows.png.
import { EventEmitter } from "node:events";
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { chromium, type Browser, type Frame, type Page } from "playwright-core";
import { QvmError, domainClassFromWord, powerStateFromWord, type AdminClient } from "@qvm/protocol";
import { repoRoot } from "@qvm/images";
import { removeTestDaemonDirs, startTestDaemon, testDaemonDirs, type TestDaemon } from "@qvm/host-agent/testing";
import { memoryClipboard, startShellServer, staticWindows, unixSocketDialer, type MemoryClipboard, type ShellServer, type StaticWindows } from "@qvm/gui-proxy/testing";

const run = promisify(execFile);
/** foot's background in the work window: what its canvas must show. */
const FOOT_BG = [0x20, 0x40, 0x60];
/** The hostile window's pixels, and the fake frame it draws in work's green. */
const FAKE_BG = [0x5a, 0x3c, 0x1e];
const FAKE_FRAME = [115, 210, 22];
const GREEN = "rgb(115, 210, 22)";
const RED = "rgb(204, 0, 0)";

let d: TestDaemon;
const dirs = testDaemonDirs("gui-windows");
let shell: ShellServer;
let backend: StaticWindows;
let browser: Browser;
let page: Page;
let sway: ChildProcess | undefined;
let swayLog = "";
let runtimeDir = "";
let hostile: HostileRfb;
let clip: MemoryClipboard;
const consoleErrors: string[] = [];
/** Every JSON message the page sent on its WebSocket. */
const sent: Record<string, unknown>[] = [];
/** Display streams dialled, by "domain/window", to end as a qvmd that goes away would. */
const dialed = new Map<string, net.Socket[]>();

/**
 * A terminal's Exec without a VM: greets with a line to select (and turns on bracketed paste, as
 * bash does), then echoes what it gets, and keeps every input byte.
 */
class FakeExec extends EventEmitter {
  static all: FakeExec[] = [];
  input = Buffer.alloc(0);
  constructor() {
    super();
    FakeExec.all.push(this);
  }
  private out(text: string) {
    setTimeout(() => this.emit("data", { msg: { $case: "stdout", value: Buffer.from(text) } }), 10);
  }
  write(m: { msg?: { $case: string; value: unknown } }): boolean {
    if (m.msg?.$case === "start") this.out("clip-me-please\r\n\x1b[?2004h$ ");
    if (m.msg?.$case === "stdin") {
      this.input = Buffer.concat([this.input, m.msg.value as Buffer]);
      this.out((m.msg.value as Buffer).toString());
    }
    return true;
  }
  cancel(): void {}
  pause(): this {
    return this;
  }
  resume(): this {
    return this;
  }
}

/** An unused uid for the stand-in domain: sway refuses to run as root. */
function freeUid(): number {
  const used = new Set(readFileSync("/etc/passwd", "utf8").split("\n").map((l) => Number(l.split(":")[2])));
  for (let uid = 64200; uid < 64300; uid++) if (!used.has(uid)) return uid;
  throw new Error("no free uid in 64200..64299");
}

async function waitFor<T>(what: string, fn: () => T | undefined | false, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`${what} within ${timeoutMs} ms; sway: ${swayLog.slice(-1500)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * A hostile RFB 3.8 server (no security, raw encoding): names itself "[dom0] trust me", fills its
 * screen with FAKE_BG inside a fake frame in work's green, sends clipboard text and a bell, and
 * records every key it gets.
 */
interface HostileRfb {
  path: string;
  keysyms: number[];
  server: net.Server;
}

function hostileRfb(at: string, width: number, height: number): Promise<HostileRfb> {
  const h: HostileRfb = { path: at, keysyms: [], server: net.createServer() };
  h.server.on("connection", (c) => {
    c.on("error", () => {});
    let buf = Buffer.alloc(0);
    let stage: "version" | "security" | "init" | "messages" = "version";
    let fmt = { bigEndian: false, r: 16, g: 8, b: 0 };
    let sentFrame = false;
    c.write("RFB 003.008\n");
    const frame = () => {
      const px = Buffer.alloc(width * height * 4);
      for (let y = 0; y < height; y++) {
        for (let x = 0; x < width; x++) {
          const edge = x < 8 || y < 24 || x >= width - 8 || y >= height - 8;
          const [r, g, b] = edge ? FAKE_FRAME : FAKE_BG;
          const v = ((r! << fmt.r) | (g! << fmt.g) | (b! << fmt.b)) >>> 0;
          if (fmt.bigEndian) px.writeUInt32BE(v, (y * width + x) * 4);
          else px.writeUInt32LE(v, (y * width + x) * 4);
        }
      }
      const head = Buffer.alloc(16);
      head.writeUInt8(0, 0); // FramebufferUpdate
      head.writeUInt16BE(1, 2);
      head.writeUInt16BE(width, 8);
      head.writeUInt16BE(height, 10);
      head.writeInt32BE(0, 12); // raw
      c.write(Buffer.concat([head, px]));
      const text = Buffer.from("[dom0] clipboard from a hostile domain");
      const cut = Buffer.alloc(8);
      cut.writeUInt8(3, 0); // ServerCutText
      cut.writeUInt32BE(text.length, 4);
      c.write(Buffer.concat([cut, text, Buffer.from([2])])); // and a Bell
    };
    c.on("data", (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      for (;;) {
        if (stage === "version") {
          if (buf.length < 12) return;
          buf = buf.subarray(12);
          c.write(Buffer.from([1, 1])); // one security type: None
          stage = "security";
        } else if (stage === "security") {
          if (buf.length < 1) return;
          buf = buf.subarray(1);
          c.write(Buffer.alloc(4)); // SecurityResult OK
          stage = "init";
        } else if (stage === "init") {
          if (buf.length < 1) return;
          buf = buf.subarray(1);
          const name = Buffer.from("[dom0] trust me");
          const init = Buffer.alloc(24);
          init.writeUInt16BE(width, 0);
          init.writeUInt16BE(height, 2);
          Buffer.from([32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0]).copy(init, 4);
          init.writeUInt32BE(name.length, 20);
          c.write(Buffer.concat([init, name]));
          stage = "messages";
        } else {
          const need = { 0: 20, 2: 4, 3: 10, 4: 8, 5: 6, 6: 8 }[buf[0] ?? -1];
          if (buf.length < 1) return;
          if (need === undefined) return void c.destroy();
          let len = need;
          if (buf[0] === 2 && buf.length >= 4) len = 4 + 4 * buf.readUInt16BE(2);
          if (buf[0] === 6 && buf.length >= 8) len = 8 + buf.readUInt32BE(4);
          if (buf.length < len) return;
          const m = buf.subarray(0, len);
          buf = buf.subarray(len);
          if (m[0] === 0) fmt = { bigEndian: m[6] !== 0, r: m[14]!, g: m[15]!, b: m[16]! };
          if (m[0] === 4 && m[1] === 1) h.keysyms.push(m.readUInt32BE(4));
          if (m[0] === 3 && (!sentFrame || m[1] === 0)) {
            sentFrame = true;
            frame();
          }
        }
      }
    });
  });
  return new Promise((resolve) => h.server.listen(at, () => resolve(h)));
}

/** The sway IPC socket of the stand-in domain. */
function swaySocket(): string {
  const s = readdirSync(runtimeDir).find((f) => f.startsWith("sway-ipc."));
  if (!s) throw new Error(`no sway IPC socket in ${runtimeDir}`);
  return path.join(runtimeDir, s);
}

beforeAll(async () => {
  const t0 = Date.now();
  // The stand-in domain: sway headless with foot (a known background) and wayvnc on a Unix socket.
  const uid = freeUid();
  runtimeDir = mkdtempSync(path.join(os.tmpdir(), "qvm-gui-domain-"));
  chownSync(runtimeDir, uid, uid);
  const conf = path.join(runtimeDir, "sway.conf");
  writeFileSync(
    conf,
    [
      "xwayland disable",
      "swaybg_command -",
      "output HEADLESS-1 resolution 640x400",
      // The domain draws its own "[dom0]" title bar in red: pixels inside its frame, nothing more.
      "default_border normal 4",
      ...["focused", "focused_inactive", "unfocused"].map((c) => `client.${c} #cc0000 #cc0000 #ffffff #cc0000 #cc0000`),
      `exec foot --title "[dom0] trust me" -o colors.background=${FOOT_BG.map((c) => c.toString(16).padStart(2, "0")).join("")} --working-directory=${runtimeDir} sh`,
      `exec wayvnc -u ${runtimeDir}/vnc.sock`,
      "",
    ].join("\n"),
  );
  chownSync(conf, uid, uid);
  const env = [`PATH=/usr/bin:/bin`, `HOME=${runtimeDir}`, `XDG_RUNTIME_DIR=${runtimeDir}`, "WLR_BACKENDS=headless", "WLR_RENDERER=pixman", "WLR_LIBINPUT_NO_DEVICES=1", "SHELL=/bin/sh", "LANG=C.UTF-8"];
  sway = spawn("setpriv", [`--reuid=${uid}`, `--regid=${uid}`, "--clear-groups", "--", "env", "-i", ...env, "sway", "-c", conf], { stdio: ["ignore", "pipe", "pipe"] });
  sway.stdout!.on("data", (b: Buffer) => (swayLog += b.toString()));
  sway.stderr!.on("data", (b: Buffer) => (swayLog += b.toString()));
  await waitFor("wayvnc's socket", () => existsSync(path.join(runtimeDir, "vnc.sock")));
  hostile = await hostileRfb(path.join(runtimeDir, "hostile.sock"), 320, 200);

  d = await startTestDaemon(dirs);
  for (const [name, label] of [["work", "green"], ["untrusted", "red"]] as const) {
    await d.client.createDomain({ name, class: domainClassFromWord("StandaloneVM"), template: "", label, properties: {} });
  }
  const sockets: Record<string, string> = { "work/1": path.join(runtimeDir, "vnc.sock"), "untrusted/2": hostile.path };
  const unix = unixSocketDialer((domain, id) => sockets[`${domain}/${id}`]);
  const windows = staticWindows(
    [
      { domain: "work", id: 1, program: "foot", width: 640, height: 400 },
      { domain: "untrusted", id: 2, program: "fake-rfb", width: 320, height: 200 },
    ],
    {
      dial: async (domain, id) => {
        const s = (await unix.dial(domain, id)) as net.Socket;
        dialed.set(`${domain}/${id}`, [...(dialed.get(`${domain}/${id}`) ?? []), s]);
        return s;
      },
    },
  );
  // Resize as the agent call will: the compositor's output follows.
  const recordResize = windows.resize;
  windows.resize = async (domain, id, w, h) => {
    await recordResize(domain, id, w, h);
    if (domain === "work") await run("swaymsg", ["-s", swaySocket(), "output", "HEADLESS-1", "resolution", `${w}x${h}`]);
  };
  backend = windows;
  // qvmd's clipboard rules in memory: nothing pastes from untrusted into work.
  clip = memoryClipboard((source, target) => !(source === "untrusted" && target === "work"));
  // qvmd as it is, but work shows as running, and its terminals are fake Execs (no VM).
  const admin = Object.assign(Object.create(d.client) as AdminClient, {
    listDomains: async (req: Parameters<AdminClient["listDomains"]>[0]) => {
      const r = await d.client.listDomains(req);
      return { domains: r.domains.map((x) => (x.name === "work" ? { ...x, state: powerStateFromWord("Running") } : x)) };
    },
    exec: () => new FakeExec(),
  });
  shell = await startShellServer({ admin, webDir: path.join(repoRoot(), "gui-proxy/dist/web"), windows: backend, clipboard: clip });
  browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  page = await browser.newPage({ viewport: { width: 1400, height: 800 } });
  page.on("console", (m) => {
    if (m.type() === "error") consoleErrors.push(`${m.location().url}: ${m.text()}`);
  });
  page.on("websocket", (ws) => {
    if (!ws.url().endsWith("/ws")) return;
    ws.on("framesent", (f) => {
      if (typeof f.payload === "string") sent.push(JSON.parse(f.payload) as Record<string, unknown>);
    });
  });
  console.log(`sway, wayvnc, qvmd, the shell and chromium up in ${Date.now() - t0} ms`);
});

afterAll(async () => {
  await browser?.close();
  await shell?.close();
  await d?.stop();
  removeTestDaemonDirs(dirs);
  hostile?.server.close();
  if (sway && sway.exitCode === null) {
    const exited = new Promise((r) => sway!.once("exit", r));
    sway.kill("SIGTERM");
    await exited;
  }
  if (runtimeDir) rmSync(runtimeDir, { recursive: true, force: true });
});

const win = (domain: string) => page.locator(`section.window.display[data-domain="${domain}"]`);
/** The sandboxed frame of a window (its URL names the domain and window). */
function frameOf(domain: string, id: number): Frame {
  const f = page.frames().find((x) => x.url().includes("/display?") && x.url().includes(`domain=${domain}&window=${id}&`));
  if (!f) throw new Error(`no display frame for ${domain}/${id}: ${page.frames().map((x) => x.url()).join(" ")}`);
  return f;
}
/** RGB of one canvas pixel inside a window's frame. */
async function pixel(domain: string, id: number, x: number, y: number): Promise<number[]> {
  return frameOf(domain, id).evaluate(
    ([px, py]) => {
      const c = document.querySelector("canvas");
      if (!c || c.width === 0) return [];
      return [...c.getContext("2d")!.getImageData(px!, py!, 1, 1).data.slice(0, 3)];
    },
    [x, y],
  );
}

describe("program windows in the web shell (no VM: sway + wayvnc on the host)", () => {
  it("draws each window's frame, colour and title from qvmd's data, and shows the domains' pixels in sandboxed frames", async () => {
    const t0 = Date.now();
    await page.goto(shell.url);
    await page.locator('section.window.display[data-domain="work"][data-stream="connected"]').waitFor({ timeout: 20_000 });
    await page.locator('section.window.display[data-domain="untrusted"][data-stream="connected"]').waitFor({ timeout: 20_000 });
    console.log(`both windows connected ${Date.now() - t0} ms after the page was opened`);
    expect(await win("work").locator(".title").textContent()).toBe("[work] foot");
    expect(await win("work").evaluate((e) => getComputedStyle(e).borderTopColor)).toBe(GREEN);
    expect(await win("work").locator(".titlebar").evaluate((e) => getComputedStyle(e).backgroundColor)).toBe(GREEN);
    expect(await win("untrusted").locator(".title").textContent()).toBe("[untrusted] fake-rfb");
    expect(await win("untrusted").evaluate((e) => getComputedStyle(e).borderTopColor)).toBe(RED);
    // The frames are sandboxed: scripts only, an opaque origin.
    for (const dom of ["work", "untrusted"]) expect(await win(dom).locator("iframe").getAttribute("sandbox")).toBe("allow-scripts");
    expect(await frameOf("work", 1).evaluate(() => self.origin)).toBe("null");
    // The domains' pixels: foot's background in the middle of work's canvas (sway's red "[dom0]"
    // title bar at its top is the domain's own drawing), the hostile server's inside its fake frame.
    await expect.poll(() => pixel("work", 1, 320, 250), { timeout: 15_000 }).toEqual(FOOT_BG);
    expect(await pixel("work", 1, 320, 5)).toEqual([204, 0, 0]);
    await expect.poll(() => pixel("untrusted", 2, 160, 100), { timeout: 15_000 }).toEqual(FAKE_BG);
    expect(await pixel("untrusted", 2, 2, 100)).toEqual(FAKE_FRAME);
    mkdirSync(path.join(repoRoot(), ".qvm/artifacts"), { recursive: true });
    await page.screenshot({ path: path.join(repoRoot(), ".qvm/artifacts/gui-windows.png") });
  });

  it("keeps its frames as they were whatever a domain names itself, draws or sends", async () => {
    // The hostile server named itself "[dom0] trust me" and sent clipboard text and a bell; work's
    // sway drew a "[dom0] trust me" title bar in red. None of it reaches the page.
    expect(await win("untrusted").locator(".title").textContent()).toBe("[untrusted] fake-rfb");
    expect(await win("untrusted").evaluate((e) => getComputedStyle(e).borderTopColor)).toBe(RED);
    expect(await win("work").locator(".title").textContent()).toBe("[work] foot");
    expect(await win("work").evaluate((e) => getComputedStyle(e).borderTopColor)).toBe(GREEN);
    expect(await page.title()).toBe("qvm");
    expect(await page.locator("body").innerText()).not.toContain("dom0");
    expect(await page.locator("#notices").innerText()).not.toContain("clipboard");
    if (consoleErrors.length) console.log(`console errors in the page and its frames: ${consoleErrors.join(" | ")}`);
    // None from the display frames (a CSP violation there would be one). The page's own app.js
    // logs one: zod probes `new Function` under the page's CSP, and falls back.
    expect(consoleErrors.filter((e) => e.includes("/display") || /Content Security Policy|Refused to/i.test(e))).toEqual([]);
  });

  it("sends keys only to the focused window, through the page, which keeps the clipboard chords", async () => {
    await page.evaluate(() => {
      const w = window as unknown as { chords: unknown[] };
      w.chords = [];
      window.addEventListener("qvm-clipboard-chord", (e) => w.chords.push((e as CustomEvent).detail));
    });
    // An unfocused window is view-only: typing goes nowhere.
    await page.keyboard.type("ls");
    expect(hostile.keysyms).toEqual([]);
    // Focus work by clicking it (on its shield), type (unshifted: wayvnc 0.5 drops Shift from typed text).
    await win("work").locator(".shield").click();
    expect(await win("work").getAttribute("class")).toContain("focused");
    await page.keyboard.type("touch typed-ok");
    await page.keyboard.press("Enter");
    await waitFor("foot running `touch typed-ok`", () => existsSync(path.join(runtimeDir, "typed-ok")));
    // A click inside the canvas goes to the domain, but the keyboard focus stays with the page.
    const box = (await win("work").locator("iframe").boundingBox())!;
    await page.mouse.click(box.x + box.width / 2, box.y + box.height / 2);
    await expect.poll(() => page.evaluate(() => (document.activeElement as HTMLElement | null)?.dataset.domain)).toBe("work");
    await page.keyboard.type("touch clicked-ok");
    await page.keyboard.press("Enter");
    await waitFor("foot running `touch clicked-ok`", () => existsSync(path.join(runtimeDir, "clicked-ok")));
    expect(hostile.keysyms).toEqual([]); // nothing of that reached the other window

    // The other window now: it gets keys, work none.
    await win("untrusted").locator(".shield").click();
    expect(await win("work").getAttribute("class")).not.toContain("focused");
    await page.keyboard.press("KeyX");
    await expect.poll(() => hostile.keysyms).toContain(0x78); // "x"
    // Ctrl-Shift-C: the page's handler sees it first and keeps it; the frame never gets the C.
    await page.keyboard.press("Control+Shift+KeyC");
    await page.keyboard.press("Control+Shift+KeyV");
    expect(await page.evaluate(() => (window as unknown as { chords: unknown[] }).chords)).toEqual([
      { domain: "untrusted", window: 2, action: "copy" },
      { domain: "untrusted", window: 2, action: "paste" },
    ]);
    // The page's handler turned them into its messages to the server.
    await expect.poll(() => sent.filter((m) => String(m.t).startsWith("clipboard-"))).toEqual([
      { t: "clipboard-copy", domain: "untrusted", window: 2 },
      { t: "clipboard-paste", domain: "untrusted", window: 2 },
    ]);
    await page.keyboard.press("KeyZ");
    await expect.poll(() => hostile.keysyms).toContain(0x7a);
    expect(hostile.keysyms.filter((k) => [0x63, 0x43, 0x76, 0x56].includes(k))).toEqual([]);
  });

  it("resizes the domain's output with the frame, and refuses a used ticket", async () => {
    await win("work").evaluate((e) => {
      (e as HTMLElement).style.width = "800px";
      (e as HTMLElement).style.height = `${600 + 22}px`;
    });
    await expect.poll(() => backend.resized, { timeout: 10_000 }).toContainEqual({ domain: "work", window: 1, width: 800, height: 600 });
    // sway's output followed, and noVNC with it (RFB desktop resize).
    await expect.poll(() => frameOf("work", 1).evaluate(() => [document.querySelector("canvas")?.width, document.querySelector("canvas")?.height]), { timeout: 15_000 }).toEqual([800, 600]);
    await expect.poll(() => pixel("work", 1, 700, 500), { timeout: 15_000 }).toEqual(FOOT_BG);
    // Loading a window's frame again with the ticket it used: refused.
    const used = await win("work").locator("iframe").getAttribute("src");
    const refused = page.waitForResponse((r) => r.url().endsWith(used!));
    await page.evaluate((src) => {
      const f = document.createElement("iframe");
      f.setAttribute("sandbox", "allow-scripts");
      f.src = src;
      document.body.append(f);
    }, used!);
    expect((await refused).status()).toBe(403);
  });

  it("copies a focused window's clipboard with Ctrl-Shift-C into the global clipboard, shows it, and refuses a paste back", async () => {
    const notices = () => page.locator("#notices").innerText();
    clip.selections.set("untrusted/2", Buffer.from("from the untrusted window"));
    // Focused already (the last test's click): a click on its title keeps it so.
    await win("untrusted").locator(".title").click();
    expect(await win("untrusted").getAttribute("class")).toContain("focused");
    const keysBefore = hostile.keysyms.length;
    await page.keyboard.press("Control+Shift+KeyC");
    await expect.poll(() => clip.calls.at(-1)).toEqual({ op: "copy", domain: "untrusted", from: "window 2" });
    await expect.poll(notices).toContain("Copied 25 bytes from [untrusted] to the global clipboard. Press Ctrl-Shift-V in a domain's window to paste");
    // The panel: source and size, in the source's label colour; never the content.
    await expect.poll(() => page.locator("#clipboard-state").innerText()).toMatch(/^25 bytes from \[untrusted\], copied at /);
    expect(await page.locator("#clipboard").evaluate((e) => getComputedStyle(e).borderLeftColor)).toBe(RED);
    expect(await page.locator("body").innerText()).not.toContain("from the untrusted window");
    // Back into its source: refused with qvmd's words, and the clipboard stays.
    await page.keyboard.press("Control+Shift+KeyV");
    await expect.poll(notices).toContain("Pasting from untrusted to untrusted is denied by policies");
    expect((await clip.state()).source).toBe("untrusted");
    // The window got the modifiers, never the chords' C or V.
    expect(hostile.keysyms.slice(keysBefore).filter((k) => [0x63, 0x43, 0x76, 0x56].includes(k))).toEqual([]);
  });

  it("keeps the chords from a terminal: its selection is copied as its domain's, and a paste is typed as a bracketed paste", async () => {
    // Something in the browser's own clipboard, which a chord the page let through would paste.
    await page.context().grantPermissions(["clipboard-read", "clipboard-write"], { origin: new URL(shell.url).origin });
    await page.evaluate(() => navigator.clipboard.writeText("DESKTOP-SECRET"));
    await page.locator('li.domain[data-domain="work"] button', { hasText: "Terminal" }).click();
    const term = page.locator('section.window:not(.display)[data-domain="work"]');
    // xterm.js draws only while it is in view.
    await term.scrollIntoViewIfNeeded();
    await expect.poll(() => term.locator(".xterm-rows").innerText(), { timeout: 10_000 }).toContain("clip-me-please");
    const exec = FakeExec.all.at(-1)!;
    // Select the word on the first row (a double click), then the chord.
    const screen = (await term.locator(".xterm-screen").boundingBox())!;
    await page.mouse.dblclick(screen.x + 30, screen.y + 9);
    await page.keyboard.press("Control+Shift+KeyC");
    await expect.poll(() => sent.at(-1)).toMatchObject({ t: "terminal-copy", text: "clip-me-please" });
    expect(sent.at(-1)).not.toHaveProperty("domain");
    await expect.poll(() => clip.calls.at(-1)).toEqual({ op: "copy", domain: "work", from: "terminal" });
    expect((await clip.state()).source).toBe("work");
    // A paste back into work (its source) is refused; one from the desktop is typed.
    await page.keyboard.press("Control+Shift+KeyV");
    await expect.poll(() => page.locator("#notices").innerText()).toContain("Pasting from work to work is denied by policies");
    await clip.set(Buffer.from("echo pasted\x1b[201~; rm -rf ~\n"));
    await page.keyboard.press("Control+Shift+KeyV");
    await expect.poll(() => exec.input.toString()).toContain("\x1b[201~");
    // xterm bracketed it (bash asked for it); the ESC inside was taken out, so it cannot end the bracket.
    expect(exec.input.toString()).toBe("\x1b[200~echo pasted[201~; rm -rf ~\r\x1b[201~");
    await expect.poll(() => page.locator("#notices").innerText()).toContain("Global clipboard pasted into [work] and wiped");
    expect((await clip.state()).source).toBe("");
    // Neither chord reached the terminal as a key (^C is 0x03, ^V 0x16), nor as the browser's paste.
    expect([...exec.input].filter((b) => b === 0x03 || b === 0x16)).toEqual([]);
    expect(exec.input.toString()).not.toContain("DESKTOP-SECRET");
    await term.locator(".titlebar button").click();
  });

  it("takes the desktop's clipboard from the page's box, and hands the global one to the desktop, or to a box when the browser refuses", async () => {
    await page.locator("#clipboard-from-desktop").click();
    await page.locator("#clipboard-in-text").focus();
    await page.keyboard.insertText("from my desktop ✓");
    await page.locator("#clipboard-in-send").click();
    await expect.poll(() => clip.state()).toMatchObject({ source: "dom0", size: Buffer.byteLength("from my desktop ✓") });
    expect(await page.locator("#clipboard-in").isHidden()).toBe(true);
    await expect.poll(() => page.locator("#clipboard-state").innerText()).toContain("from [dom0] (your desktop)");
    await page.locator("#clipboard-to-desktop").click();
    await expect.poll(() => page.evaluate(() => navigator.clipboard.readText())).toBe("from my desktop ✓");
    await expect.poll(() => page.locator("#notices").innerText()).toContain("copied to your desktop's clipboard and wiped");
    expect((await clip.state()).source).toBe("");
    await expect.poll(() => page.locator("#clipboard-to-desktop").isDisabled()).toBe(true);
    // The browser refuses: the text waits in the page's box instead.
    await clip.set(Buffer.from("for the box"));
    await page.evaluate(() => {
      navigator.clipboard.writeText = () => Promise.reject(new Error("refused by the test"));
    });
    await page.locator("#clipboard-to-desktop").click();
    await expect.poll(() => page.locator("#clipboard-out-text").inputValue()).toBe("for the box");
    await expect.poll(() => page.locator("#notices").innerText()).toContain("refused by the test");
    await page.locator("#clipboard-out-done").click();
    expect(await page.locator("#clipboard-out-text").inputValue()).toBe("");
  });

  it("reconnects a window's stream by itself when qvmd lists it again after a restart", async () => {
    const ticketsAsked = () => sent.filter((m) => m.t === "window-ticket" && m.domain === "untrusted").length;
    const asked = ticketsAsked();
    const dials = dialed.get("untrusted/2")!.length;
    // qvmd goes: the window's stream drops, and qvmd's feed says so.
    for (const s of dialed.get("untrusted/2")!) s.destroy(new QvmError("DAEMON_UNAVAILABLE", "qvmd is not reachable"));
    backend.lose();
    await page.locator('section.window.display[data-domain="untrusted"][data-stream="ended"]').waitFor({ timeout: 10_000 });
    expect(await win("untrusted").locator(".shield").innerText()).toContain("qvmd");
    // Back, and listing the window again: the frame reconnects without a click.
    backend.back([
      { domain: "work", id: 1, program: "foot", width: 640, height: 400 },
      { domain: "untrusted", id: 2, program: "fake-rfb", width: 320, height: 200 },
    ]);
    await page.locator('section.window.display[data-domain="untrusted"][data-stream="connected"]').waitFor({ timeout: 10_000 });
    await expect.poll(() => pixel("untrusted", 2, 160, 100), { timeout: 15_000 }).toEqual(FAKE_BG);
    await expect.poll(() => page.locator("#notices").innerText()).toContain("[untrusted] fake-rfb: the stream was closed because qvmd restarted; reconnecting");
    expect(dialed.get("untrusted/2")!.length).toBe(dials + 1);
    expect(ticketsAsked()).toBe(asked);
  });

  it("closes a window through the backend, and takes its frame away with a notice", async () => {
    await win("work").locator(".titlebar button").click();
    await win("work").waitFor({ state: "detached", timeout: 10_000 });
    expect(backend.closed).toContainEqual({ domain: "work", window: 1 });
    await expect.poll(() => page.locator("#notices").innerText()).toContain("[work] foot: window closed");
    expect(await win("untrusted").count()).toBe(1);
  });
});
