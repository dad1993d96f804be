// Admin figures: `qvm ls` with 100 defined domains next to `node -e 0` (the floor for any Node
// CLI), and an admin property get next to a bare round trip (GetDaemonInfo) on the same socket.
import { domainClassFromWord } from "@qvm/protocol";
import { execFileSync } from "node:child_process";
import path from "node:path";
import { repoRoot } from "@qvm/images";
import { removeTestDaemonDirs, startTestDaemon, testDaemonDirs } from "@qvm/host-agent/testing";

/**
 * One benchmark figure: qvm's number next to the raw baseline measured in the same run. The ratio
 * is qvm / baseline for costs (times, MiB) and baseline / qvm for rates (units ending in "/s"), so
 * 1.00x means no overhead and lower is always better. `target` is the ratio the project aims for
 * (ratio <= target); `note` says what a reader needs to read the figure (why it misses, what
 * dominates it).
 */
export interface Figure {
  qvm: number;
  baseline: number;
  unit: string;
  qvmLabel: string;
  baselineLabel: string;
  target?: number;
  note?: string;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

function timeProcess(file: string, args: string[], env: NodeJS.ProcessEnv): number {
  const t0 = performance.now();
  execFileSync(file, args, { env, stdio: ["ignore", "ignore", "inherit"] });
  return performance.now() - t0;
}

export async function adminFigures(log: (m: string) => void, runs = 15, calls = 300): Promise<Record<string, Figure>> {
  const dirs = testDaemonDirs("bench-admin");
  const d = await startTestDaemon(dirs);
  try {
    await d.client.createDomain({ name: "tmpl", class: domainClassFromWord("TemplateVM"), template: "", label: "black", properties: {} });
    for (let i = 1; i < 100; i++) {
      await d.client.createDomain({ name: `dom${i}`, class: domainClassFromWord("AppVM"), template: "tmpl", label: "blue", properties: {} });
    }
    log("100 domains defined; timing `qvm ls` and `node -e 0`");
    const env = { ...process.env, QVM_RUNTIME_DIR: dirs.runtimeDir, NO_COLOR: "1" };
    const cli = path.join(repoRoot(), "cli/dist/qvm.js");
    const ls: number[] = [];
    const bare: number[] = [];
    for (let i = 0; i < runs; i++) {
      bare.push(timeProcess(process.execPath, ["-e", "0"], env));
      ls.push(timeProcess(process.execPath, [cli, "ls"], env));
    }

    const get: number[] = [];
    const ping: number[] = [];
    for (let i = 0; i < calls; i++) {
      let t0 = performance.now();
      await d.client.getDaemonInfo({});
      ping.push(performance.now() - t0);
      t0 = performance.now();
      await d.client.getProperty({ domain: "dom1", name: "memory" });
      get.push(performance.now() - t0);
    }
    return {
      "qvm ls": { qvm: median(ls), baseline: median(bare), unit: "ms", qvmLabel: "`qvm ls`, 100 domains", baselineLabel: "`node -e 0`", target: 2.5 },
      "prop get": { qvm: median(get), baseline: median(ping), unit: "ms", qvmLabel: "admin property get", baselineLabel: "bare admin round trip (GetDaemonInfo)" },
    };
  } finally {
    await d.stop();
    removeTestDaemonDirs(dirs);
  }
}
