// Program window figures (docs/gui.md), in Debian's chromium (playwright-core) against a real qvmd
// and a domain on debian-12-gui, with `qvm shell` serving the page:
//   first frame   `qvm run --gui VM -- foot` until the window's canvas shows foot's background
//                 vs `qvm run -p VM -- true` (any program's round trip into the same domain)
//   key → pixels  a key pressed on the focused window until its canvas changes
//                 vs a key typed in a web-shell terminal of the same domain until its echo shows
import { execa } from "execa";
import path from "node:path";
import type { Frame, Page } from "playwright-core";
import { ImageStore, buildTemplate, defaultImagesDir, repoRoot, terminalProgress } from "@qvm/images";
import { domainClassFromWord } from "@qvm/protocol";
import { removeTestDaemonDirs, startTestDaemon, testDaemonDirs } from "@qvm/host-agent/testing";
import type { Figure } from "./admin.js";
import { launchChromium, startWebShell } from "./web-shell.js";

const ROUNDS = Number(process.env.QVM_BENCH_GUI_ROUNDS ?? 3);
const KEYS = Number(process.env.QVM_BENCH_KEYS ?? 20);
const DOMAIN = "bgui";
/** foot's background in the benchmark's windows: the first frame is the one that shows it. */
const BG = "204060";
const BG_RGB = "32,64,96";
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

function displayFrame(page: Page, windowId: number): Frame | undefined {
  return page.frames().find((f) => f.url().includes("/display?") && f.url().includes(`domain=${DOMAIN}&window=${windowId}&`));
}

/** A cheap checksum of the window's canvas (the frame is sandboxed; Playwright evaluates in it). */
const canvasSum = (f: Frame) =>
  f.evaluate(() => {
    const c = document.querySelector("canvas");
    if (!c || c.width === 0) return -1;
    const data = c.getContext("2d")!.getImageData(0, 0, c.width, c.height).data;
    let sum = 0;
    for (let i = 0; i < data.length; i += 4) sum = (sum * 31 + data[i]! + data[i + 1]! * 7 + data[i + 2]! * 13) >>> 0;
    return sum;
  });

export async function guiFigures(log: (m: string) => void): Promise<Record<string, Figure>> {
  await buildTemplate(new ImageStore(defaultImagesDir()), "debian-12-gui", terminalProgress(process.stderr, "bench images"));
  const dirs = testDaemonDirs("bench-gui", defaultImagesDir());
  const d = await startTestDaemon(dirs);
  const env = { ...process.env, QVM_RUNTIME_DIR: dirs.runtimeDir, NO_COLOR: "1" };
  const qvm = (args: string[]) => execa(process.execPath, [path.join(repoRoot(), "cli/dist/qvm.js"), ...args], { env, reject: false });
  const { proc: shell, url: urlPrinted } = startWebShell(env);
  const browser = await launchChromium();
  try {
    await d.client.createDomain({ name: DOMAIN, class: domainClassFromWord("AppVM"), template: "debian-12-gui", label: "blue", properties: { memory: "800" } });
    log("starting a debian-12-gui domain for the window figures");
    await d.client.startDomain({ name: DOMAIN });
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    await page.goto(await urlPrinted);
    await page.locator(`li.domain[data-domain="${DOMAIN}"][data-state="Running"]`).waitFor({ timeout: 60_000 });

    log(`timing ${ROUNDS} windows from qvm run --gui to their first frame, and as many qvm run -p … true`);
    const firstFrame: number[] = [];
    const runTrue: number[] = [];
    let lastWindow = 0;
    for (let i = 0; i < ROUNDS; i++) {
      const t0 = performance.now();
      const r = await qvm(["run", "--gui", "--geometry", "800x600", DOMAIN, "--", "foot", "-o", `colors.background=${BG}`]);
      if (r.exitCode !== 0) throw new Error(`qvm run --gui failed: ${r.stderr}`);
      lastWindow = Number(/window (\d+) of/.exec(r.stdout)?.[1]);
      await page.waitForFunction(
        (id) => Boolean(document.querySelector(`section.window.display[data-window="${id}"] iframe`)),
        lastWindow,
        { timeout: 60_000, polling: "raf" },
      );
      for (;;) {
        const f = displayFrame(page, lastWindow);
        const px = f ? await f.evaluate(() => {
          const c = document.querySelector("canvas");
          return c && c.width > 0 ? [...c.getContext("2d")!.getImageData(c.width >> 1, c.height >> 1, 1, 1).data.slice(0, 3)] : [];
        }).catch(() => []) : [];
        if (px.join(",") === BG_RGB) break;
        if (performance.now() - t0 > 120_000) throw new Error("no first frame within 120 s");
        await new Promise((res) => setTimeout(res, 5));
      }
      firstFrame.push(performance.now() - t0);
      if (i < ROUNDS - 1) await d.client.closeWindow({ domain: DOMAIN, windowId: lastWindow });
      const t1 = performance.now();
      const t = await qvm(["run", "-p", "--no-pty", DOMAIN, "--", "true"]);
      if (t.exitCode !== 0) throw new Error(`qvm run -p true failed: ${t.stderr}`);
      runTrue.push(performance.now() - t1);
    }

    log(`timing ${KEYS} keys to changed pixels in the window, and to their echo in a terminal`);
    const win = page.locator(`section.window.display[data-window="${lastWindow}"]`);
    await win.locator(".shield").click();
    const frame = displayFrame(page, lastWindow)!;
    await new Promise((res) => setTimeout(res, 2000)); // foot's shell prompt drawn
    const keyPixels: number[] = [];
    for (let i = 0; i < KEYS; i++) {
      const before = await canvasSum(frame);
      const t0 = performance.now();
      await page.keyboard.press("KeyX");
      // Polled as fast as Playwright evaluates in the frame (a few ms), the same for every key.
      while ((await canvasSum(frame)) === before) {
        if (performance.now() - t0 > 30_000) throw new Error("a key changed no pixel within 30 s");
      }
      keyPixels.push(performance.now() - t0);
    }
    await page.locator(`li.domain[data-domain="${DOMAIN}"]`).getByRole("button", { name: "Terminal" }).click();
    const term = page.locator(`section.window:not(.display)[data-domain="${DOMAIN}"]`);
    await term.locator(".xterm").click();
    await page.waitForFunction(() => (document.querySelector(".xterm-rows")?.textContent ?? "").includes("$"), null, { timeout: 60_000 });
    const keyEcho: number[] = [];
    for (let i = 0; i < KEYS; i++) {
      const before = await page.evaluate(() => (document.querySelector(".xterm-rows")?.textContent ?? "").split("x").length);
      const t0 = performance.now();
      await page.keyboard.press("x");
      await page.waitForFunction((n) => (document.querySelector(".xterm-rows")?.textContent ?? "").split("x").length > n, before, { polling: "raf" });
      keyEcho.push(performance.now() - t0);
    }
    return {
      "first frame": { qvm: median(firstFrame), baseline: median(runTrue), unit: "ms", qvmLabel: "qvm run --gui → first frame in the browser", baselineLabel: "qvm run -p VM -- true",
        note: "The first frame is the one that shows foot's background, after sway, wayvnc, socat and foot start in the domain and noVNC connects through a ticket." },
      "key → pixels": { qvm: median(keyPixels), baseline: median(keyEcho), unit: "ms", qvmLabel: "key → changed pixels in the window", baselineLabel: "key → echo in a web-shell terminal" },
    };
  } finally {
    await browser.close();
    shell.kill("SIGTERM");
    await shell.catch(() => {});
    await d.client.killDomain({ name: DOMAIN }).catch(() => {});
    await d.stop();
    removeTestDaemonDirs(dirs);
  }
}
