// Web shell figures, in Debian's chromium (playwright-core) against a real qvmd and domain:
//   keystroke   a key typed in the browser terminal until its echo is on screen
//               vs the same echo through a pty Exec on the admin API (what `qvm run` uses)
//   terminal    a 50 MiB `cat` shown in the browser terminal
//               vs the same `cat` through a pty Exec on the admin API, drained by Node
import { execa } from "execa";
import path from "node:path";
import { defaultImagesDir, repoRoot } from "@qvm/images";
import { adminV1, type AdminClient, domainClassFromWord } from "@qvm/protocol";
import { removeTestDaemonDirs, startTestDaemon, testDaemonDirs } from "@qvm/host-agent/testing";
import type { Figure } from "./admin.js";
import { launchChromium, startWebShell } from "./web-shell.js";

const KEYS = Number(process.env.QVM_BENCH_KEYS ?? 20);
const CAT_MIB = Number(process.env.QVM_BENCH_CAT_MIB ?? 50);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** A pty shell through the admin API: write bytes, wait for a marker in the output. */
function ptyShell(client: AdminClient, domain: string) {
  const call = client.exec();
  let out = "";
  let waiter: { marker: string; resolve: () => void } | undefined;
  call.on("error", () => {}); // cancelled by close()
  call.on("data", (r: adminV1.ExecResponse) => {
    if (r.msg?.$case !== "stdout") return;
    out = (out + Buffer.from(r.msg.value).toString("latin1")).slice(-4096);
    if (waiter && out.includes(waiter.marker)) {
      const w = waiter;
      waiter = undefined;
      out = "";
      w.resolve();
    }
  });
  call.write({ msg: { $case: "start", value: { domain, argv: ["bash"], shellCommand: "", env: { TERM: "xterm" }, cwd: "", user: "", pty: true, window: { rows: 40, cols: 120 }, noAutostart: true, dispvm: "", service: "" } } });
  return {
    send(text: string, marker: string): Promise<void> {
      return new Promise((resolve) => {
        waiter = { marker, resolve };
        call.write({ msg: { $case: "stdin", value: Buffer.from(text) } });
      });
    },
    close: () => call.cancel(),
  };
}

export async function shellFigures(log: (m: string) => void): Promise<Record<string, Figure>> {
  const dirs = testDaemonDirs("bench-shell", defaultImagesDir());
  const d = await startTestDaemon(dirs);
  const env = { ...process.env, QVM_RUNTIME_DIR: dirs.runtimeDir, NO_COLOR: "1" };
  const { proc: shell, url: urlPrinted } = startWebShell(env);
  const browser = await launchChromium();
  try {
    const template = (await d.client.listDomains({})).domains.find((x) => x.class === adminV1.DomainClass.DOMAIN_CLASS_TEMPLATE_VM)!.name;
    await d.client.createDomain({ name: "bsh", class: domainClassFromWord("AppVM"), template, label: "green", properties: { memory: "700" } });
    log("starting a domain for the web shell figures");
    await d.client.startDomain({ name: "bsh" });
    const url = await urlPrinted;
    log("opening the page");
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    await page.goto(url);
    await page.locator('li.domain[data-domain="bsh"][data-state="Running"]').getByRole("button", { name: "Terminal" }).click();
    const win = page.locator('section.window[data-domain="bsh"]');
    await win.locator(".xterm").click();
    await page.waitForFunction(() => (document.querySelector(".xterm-rows")?.textContent ?? "").includes("$"), null, { timeout: 60_000 });

    log(`timing ${KEYS} keystroke echoes in the browser and through the admin API`);
    const browserKeys: number[] = [];
    for (let i = 0; i < KEYS; i++) {
      const before = await page.evaluate(() => (document.querySelector(".xterm-rows")?.textContent ?? "").split("x").length);
      const t0 = performance.now();
      await page.keyboard.press("x");
      await page.waitForFunction((n) => (document.querySelector(".xterm-rows")?.textContent ?? "").split("x").length > n, before, { polling: "raf" });
      browserKeys.push(performance.now() - t0);
    }
    await page.keyboard.press("Control+U");
    const pty = ptyShell(d.client, "bsh");
    await pty.send("PS1='$ '\n", "$ ");
    const apiKeys: number[] = [];
    for (let i = 0; i < KEYS; i++) {
      const t0 = performance.now();
      await pty.send("y", "y");
      apiKeys.push(performance.now() - t0);
    }

    log(`timing a ${CAT_MIB} MiB cat in the browser terminal and through the admin API`);
    await pty.send(`\x15head -c ${Math.floor((CAT_MIB * 1024 * 1024 * 3) / 4)} /dev/zero | base64 -w 76 > ~/big; echo made-$((1+1))\n`, "made-2");
    let t0 = performance.now();
    await pty.send("cat ~/big; echo cat-$((2+2))\n", "cat-4");
    const apiSecs = (performance.now() - t0) / 1000;
    pty.close();
    t0 = performance.now();
    await page.keyboard.type("cat ~/big; echo cat-$((3+3))\n");
    await page.waitForFunction(() => (document.querySelector(".xterm-rows")?.textContent ?? "").includes("cat-6"), null, { timeout: 900_000, polling: 200 });
    const browserSecs = (performance.now() - t0) / 1000;
    return {
      keystroke: { qvm: median(browserKeys), baseline: median(apiKeys), unit: "ms", qvmLabel: "key → echo in the browser", baselineLabel: "key → echo, pty Exec (as qvm run)",
        note: "The browser figure includes Playwright's key press and polling each animation frame." },
      terminal: { qvm: CAT_MIB / browserSecs, baseline: CAT_MIB / apiSecs, unit: "MiB/s", qvmLabel: `${CAT_MIB} MiB cat in the browser`, baselineLabel: "the same cat, pty Exec (as qvm run)" },
    };
  } finally {
    await browser.close();
    shell.kill("SIGTERM");
    await shell.catch(() => {});
    await d.client.killDomain({ name: "bsh" }).catch(() => {});
    await d.stop();
    removeTestDaemonDirs(dirs);
  }
}
