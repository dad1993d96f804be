// What the browser benchmarks share: `qvm shell` against a test daemon, the URL it prints
// (listened to at once: execa consumes the output for its result, so a later listener misses
// it), and Debian's chromium.
import { execa } from "execa";
import path from "node:path";
import { chromium, type Browser } from "playwright-core";
import { repoRoot } from "@qvm/images";

export function startWebShell(env: NodeJS.ProcessEnv) {
  const proc = execa(process.execPath, [path.join(repoRoot(), "cli/dist/qvm.js"), "shell"], { env, stdin: "ignore", reject: false });
  const url = new Promise<string>((resolve, reject) => {
    setTimeout(() => reject(new Error("qvm shell printed no URL in 120 s")), 120_000).unref();
    proc.stdout!.on("data", (c: Buffer) => {
      const m = /http:\/\/\S+token=\S+/.exec(c.toString());
      if (m) resolve(m[0]);
    });
  });
  url.catch(() => {});
  return { proc, url };
}

export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}
