/// <reference lib="dom" />
// Windows from real domains (docs/gui.md), end to end: `qvm run --gui` in domains on debian-12-gui
// starts a headless sway, wayvnc and the program there; the window's stream reaches the host
// through hybrid vsock and the admin API's WindowStream, and the page of `qvm shell` in Debian's
// chromium (playwright-core) shows it in a frame drawn from qvmd's data. Checked with the real
// parts: the RFB handshake, two labelled windows (a screenshot is left in
// .qvm/artifacts/gui-domains.png), a spoofing title, typing (Shift pressed explicitly: wayvnc drops
// it from typed text) with its effect read through the agent, resize read inside the domain, the
// clipboard chords under the qubes.ClipboardPaste policy (allowed, then denied), a qvmd restart
// (the streams reconnect by themselves), a domain that stops (its window closes with a notice),
// and `--gui --dispvm` (the disposable goes with its window). The page's own rules (sandbox, keys,
// tickets, a hostile RFB server) are tested with a host compositor in gui-windows.test.ts.
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { chromium, type Browser, type Page } from "playwright-core";
import { ImageStore, buildTemplate, repoRoot, terminalProgress } from "@qvm/images";
import { imagesDir } from "./fixtures.js";
import { withDaemon, withDomain, withService, type E2eDaemon } from "./qvmd-fixtures.js";

const BLUE = "rgb(52, 101, 164)";
const PURPLE = "rgb(117, 80, 123)";
/** foot's background in these windows, so a frame that shows the program is recognisable. */
const BG = [0x20, 0x40, 0x60];
const BG_OPTION = `colors.background=${BG.map((c) => c.toString(16).padStart(2, "0")).join("")}`;

let d: E2eDaemon;
let browser: Browser;
let page: Page;
let url = "";

beforeAll(async () => {
  // Built here, not in the global setup: only this file needs it (about 40 s the first time).
  await buildTemplate(new ImageStore(imagesDir()), "debian-12-gui", terminalProgress(process.stderr, "e2e images"));
  d = await withDaemon("e2e-gui-domain");
  await Promise.all([
    withDomain(d, "work", { label: "blue", template: "debian-12-gui", properties: { memory: "800" }, start: true }),
    withDomain(d, "vault", { label: "purple", template: "debian-12-gui", properties: { memory: "800" }, start: true }),
  ]);
  const shell = await withService(d, ["shell"], { ready: /http:\/\/127\.0\.0\.1:\d+\/#token=\S+/ });
  url = shell.ready![0];
  browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  page = await browser.newPage({ viewport: { width: 1600, height: 900 } });
}, 400_000);

// The browser first, then the daemon with what it owns: the shell server and the domains.
afterAll(async () => {
  await browser?.close();
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

/** A shell command in a domain as root, its stdout without the last newline (the test fails on a non-zero exit). */
async function sh(domain: string, command: string): Promise<string> {
  const r = await d.qvm(["run", "-p", "--no-pty", "-u", "root", domain, "--", "sh", "-c", command]);
  expect(r.exitCode, `${domain}: ${command}: ${r.stderr}`).toBe(0);
  return r.stdout;
}

/** A command as the domain's user inside window N's Wayland session (its own compositor). */
const inWindow = (n: number, command: string) => `runuser -u user -- env XDG_RUNTIME_DIR=/run/qvm-gui/win-${n} WAYLAND_DISPLAY=wayland-1 sh -c '${command}'`;

/** The size of window N's output, read from its compositor inside the domain. */
async function outputSize(domain: string, n: number): Promise<string> {
  const json = await sh(domain, `swaymsg -s /run/qvm-gui/win-${n}/sway-ipc.sock -t get_outputs -r`);
  const [out] = JSON.parse(json) as Array<{ current_mode: { width: number; height: number } }>;
  return `${out!.current_mode.width}x${out!.current_mode.height}`;
}

async function openGui(domain: string, ...argv: string[]): Promise<number> {
  const r = await d.qvm(["run", "--gui", "--geometry", "640x400", domain, "--", ...argv]);
  expect(r.exitCode, r.stderr).toBe(0);
  return Number(/window (\d+) of/.exec(r.stdout)![1]);
}

const frameOf = (domain: string) => page.locator(`section.window.display[data-domain="${domain}"]`);

/** RGB at the middle of a window's canvas, read inside its sandboxed frame. */
async function middlePixel(domain: string): Promise<string> {
  const f = page.frames().find((x) => x.url().includes("/display?") && x.url().includes(`domain=${domain}&`));
  if (!f) return "no frame";
  return f
    .evaluate(() => {
      const c = document.querySelector("canvas");
      if (!c || c.width === 0) return "no canvas";
      return [...c.getContext("2d")!.getImageData(c.width >> 1, c.height >> 1, 1, 1).data.slice(0, 3)].join(",");
    })
    .catch(() => "reloading");
}

const notices = () => page.locator("#notices").innerText();
/** Focuses a window as a user does: a click on its title bar (the page's, not the domain's). */
const focus = (domain: string) => frameOf(domain).locator(".titlebar .title").click();

describe("a window from a real domain, through the admin API", () => {
  it("opens with qvm run --gui, streams RFB to the host, resizes inside the domain and closes", async () => {
    const run = await d.qvm(["run", "--gui", "--geometry", "640x480", "work", "--", "foot"]);
    expect(run.exitCode, run.stderr).toBe(0);
    expect(run.stdout).toContain("window 1 of work: foot (640x480)");
    const { windows } = await d.client.listWindows({ domain: "work" });
    expect(windows).toEqual([{ domain: "work", windowId: 1, program: "foot", width: 640, height: 480 }]);
    // RFB starts with the server's version line (RFC 6143 §7.1.1).
    expect(await handshake("work", 1)).toMatch(/^RFB 003\.00\d\n/);
    expect((await sh("work", "pgrep -x sway; pgrep -x foot")).trim().split("\n").length).toBe(2);

    await d.client.resizeWindow({ domain: "work", windowId: 1, width: 800, height: 600 });
    expect((await d.client.listWindows({ domain: "work" })).windows[0]).toMatchObject({ width: 800, height: 600 });
    expect(await outputSize("work", 1)).toBe("800x600");

    await d.client.closeWindow({ domain: "work", windowId: 1 });
    expect((await d.client.listWindows({ domain: "work" })).windows).toEqual([]);
    expect((await sh("work", "pgrep -x sway || echo none")).trim()).toBe("none");
  });
});

describe("windows from real domains in the web shell", () => {
  let workWin = 0;
  let vaultWin = 0;

  it("shows two domains' windows in frames of their labels, whatever the program calls itself", async () => {
    // work's program names itself "[dom0] root terminal" and prints a red "[dom0]" bar.
    workWin = await openGui("work", "foot", "-o", BG_OPTION, "--title", "[dom0] root terminal", "sh", "-c", "printf '\\033[41m[dom0] trusted \\033[0m\\n'; exec sh");
    const available = async () => Number(/MemAvailable:\s+(\d+)/.exec(await sh("vault", "cat /proc/meminfo"))![1]);
    const before = await available();
    vaultWin = await openGui("vault", "foot", "-o", BG_OPTION);
    await page.goto(url);
    for (const dom of ["work", "vault"]) await page.locator(`section.window.display[data-domain="${dom}"][data-stream="connected"]`).waitFor({ timeout: 60_000 });
    // A measurement for docs/gui.md, not a check: what one foot window costs its domain.
    console.log(`vault's MemAvailable: ${before >> 10} MiB before its first window, ${(await available()) >> 10} MiB with it shown`);
    expect(await frameOf("work").locator(".title").textContent()).toBe("[work] foot");
    expect(await frameOf("work").evaluate((e) => getComputedStyle(e).borderTopColor)).toBe(BLUE);
    expect(await frameOf("vault").locator(".title").textContent()).toBe("[vault] foot");
    expect(await frameOf("vault").evaluate((e) => getComputedStyle(e).borderTopColor)).toBe(PURPLE);
    // The domains' pixels arrive (foot's background), and nothing of the spoof reaches the page.
    for (const dom of ["work", "vault"]) await expect.poll(() => middlePixel(dom), { timeout: 60_000 }).toBe(BG.join(","));
    expect(await page.locator("body").innerText()).not.toContain("dom0");
    // Side by side, as the page lays them out, for the screenshot.
    mkdirSync(path.join(repoRoot(), ".qvm/artifacts"), { recursive: true });
    await page.screenshot({ path: path.join(repoRoot(), ".qvm/artifacts/gui-domains.png") });
  });

  it("types into the focused window, Shift included, with the effect read through the agent", async () => {
    await focus("work");
    await page.keyboard.type("touch /tmp/typed-");
    await page.keyboard.down("Shift");
    await page.keyboard.press("KeyQ");
    await page.keyboard.up("Shift");
    await page.keyboard.press("Enter");
    await expect.poll(() => sh("work", "ls /tmp | grep typed- || true"), { timeout: 30_000 }).toBe("typed-Q");
    expect(await sh("vault", "ls /tmp | grep typed- || echo none")).toBe("none");
  });

  it("resizes the domain's output when the frame is resized", async () => {
    await frameOf("work").evaluate((e) => {
      (e as HTMLElement).style.width = "720px";
      (e as HTMLElement).style.height = `${480 + 22}px`;
    });
    await expect.poll(() => outputSize("work", workWin), { timeout: 30_000 }).toBe("720x480");
  });

  it("copies work's clipboard with Ctrl-Shift-C and pastes it into vault with Ctrl-Shift-V, as the policy allows", async () => {
    await sh("work", inWindow(workWin, "printf copied-from-work | wl-copy >/dev/null 2>&1"));
    await sh("vault", inWindow(vaultWin, "printf vault-before | wl-copy >/dev/null 2>&1"));
    await focus("work");
    await page.keyboard.press("Control+Shift+KeyC");
    await expect.poll(async () => (await d.client.getClipboard({})).source, { timeout: 20_000 }).toBe("work");
    expect((await d.client.getClipboard({})).size).toBe("copied-from-work".length);
    // Pasting back into its source is refused (the default policy's ask never offers the source).
    await page.keyboard.press("Control+Shift+KeyV");
    await expect.poll(notices, { timeout: 20_000 }).toContain("Pasting from work to work is denied by policies");
    await focus("vault");
    await page.keyboard.press("Control+Shift+KeyV");
    await expect.poll(() => sh("vault", inWindow(vaultWin, "wl-paste -n")), { timeout: 20_000 }).toBe("copied-from-work");
    // Wiped after the paste.
    expect((await d.client.getClipboard({})).source).toBe("");
  });

  it("refuses the paste under a deny rule, and vault's clipboard stays as it was", async () => {
    writeFileSync(path.join(d.dirs.dataDir, "policy.d", "30-user.policy"), "qubes.ClipboardPaste * work vault deny\n");
    await sh("work", inWindow(workWin, "printf second-copy | wl-copy >/dev/null 2>&1"));
    await focus("work");
    await page.keyboard.press("Control+Shift+KeyC");
    await expect.poll(async () => (await d.client.getClipboard({})).source, { timeout: 20_000 }).toBe("work");
    await focus("vault");
    await page.keyboard.press("Control+Shift+KeyV");
    await expect.poll(notices, { timeout: 20_000 }).toContain("Pasting from work to vault is denied by policies");
    expect(await sh("vault", inWindow(vaultWin, "wl-paste -n"))).toBe("copied-from-work");
    // A refused paste leaves the clipboard with its source.
    expect((await d.client.getClipboard({})).source).toBe("work");
    writeFileSync(path.join(d.dirs.dataDir, "policy.d", "30-user.policy"), "\n");
  });

  it("reconnects the windows' streams by itself after a qvmd restart; the programs ran on", async () => {
    const before = await sh("work", "pgrep -x foot");
    await d.restart();
    await expect.poll(notices, { timeout: 30_000 }).toMatch(/qvmd/);
    for (const dom of ["work", "vault"]) await page.locator(`section.window.display[data-domain="${dom}"][data-stream="connected"]`).waitFor({ timeout: 90_000 });
    expect(await sh("work", "pgrep -x foot")).toBe(before);
    await expect.poll(() => middlePixel("vault"), { timeout: 30_000 }).toBe(BG.join(","));
  });

  it("closes a domain's window with a notice when the domain stops", async () => {
    expect((await d.qvm(["kill", "vault"])).exitCode).toBe(0);
    await frameOf("vault").waitFor({ state: "detached", timeout: 30_000 });
    await expect.poll(notices, { timeout: 10_000 }).toContain("[vault] foot");
    expect(await frameOf("work").count()).toBe(1);
  });

  it("opens a window in a new disposable with --gui --dispvm, and destroys the disposable with its window", async () => {
    await withDomain(d, "gui-dvm", { label: "red", template: "debian-12-gui", properties: { memory: "800", template_for_dispvms: "True" } });
    const r = await d.qvm(["run", "--gui", "--dispvm=gui-dvm", "--", "foot", "-o", BG_OPTION]);
    expect(r.exitCode, r.stderr).toBe(0);
    const disp = /window \d+ of (disp\d+)/.exec(r.stdout)![1]!;
    const frame = frameOf(disp);
    await page.locator(`section.window.display[data-domain="${disp}"][data-stream="connected"]`).waitFor({ timeout: 60_000 });
    expect(await frame.locator(".title").textContent()).toBe(`[${disp}] foot`);
    await frame.locator(".titlebar button").click();
    await frame.waitFor({ state: "detached", timeout: 30_000 });
    await expect.poll(async () => (await d.client.listDomains({})).domains.map((x) => x.name), { timeout: 60_000 }).not.toContain(disp);
  });
});
