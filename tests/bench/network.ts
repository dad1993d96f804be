// Network figures, with real domains under one qvmd running in the "host" namespace of a test
// internet (tests/e2e/test-internet.ts), so all traffic stays in namespaces made here:
//   first HTTP     `qvm start work` with sys-firewall and sys-net halted, until curl in work
//                  first loads a page from the test host
//                  vs starting the same three domains with no netvm, one after the other
//   TCP connect    curl's connect time from work to the test host, through sys-firewall, sys-net
//                  and passt (one round trip)
//                  vs the same to a listener in sys-firewall: two VMs joined by one raw link
//   TCP download   64 MiB over HTTP from the test host to work, through the chain
//                  vs the same from a server in sys-firewall over the raw link
import { execFileSync } from "node:child_process";
import path from "node:path";
import { defaultImagesDir, repoRoot } from "@qvm/images";
import { removeTestDaemonDirs, startTestDaemon, testDaemonDirs } from "@qvm/host-agent/testing";
import { makeTestInternet } from "../e2e/test-internet.js";
import type { Figure } from "./admin.js";

const DOWNLOAD_MIB = Number(process.env.QVM_BENCH_NET_MIB ?? 64);
const CONNECTS = Number(process.env.QVM_BENCH_NET_CONNECTS ?? 15);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** A tiny HTTP server for the raw-link side, run by Node in sys-firewall. */
const ZERO_SERVER = `require("http").createServer((q,r)=>{const m=/^\\/bytes\\/(\\d+)$/.exec(q.url);let n=m?+m[1]:0;r.writeHead(200,{"content-length":n});const c=Buffer.alloc(65536);const p=()=>{while(n>0){const k=Math.min(n,c.length);n-=k;if(!r.write(k===c.length?c:c.subarray(0,k)))return r.once("drain",p)}r.end()};p()}).listen(8080)`;

export async function networkFigures(log: (m: string) => void): Promise<Record<string, Figure>> {
  const inet = await makeTestInternet();
  const dirs = testDaemonDirs("bench-network", defaultImagesDir());
  const d = await startTestDaemon(dirs, 15_000, [], { netns: inet.hostNetns });
  const cli = path.join(repoRoot(), "cli/dist/qvm.js");
  const env = { ...process.env, QVM_RUNTIME_DIR: dirs.runtimeDir, NO_COLOR: "1" };
  const qvm = (...args: string[]) => execFileSync(process.execPath, [cli, ...args], { env, encoding: "utf8", stdio: ["ignore", "pipe", "inherit"], maxBuffer: 1 << 24 });
  const inDomain = (dom: string, script: string) => qvm("run", "-p", "--no-pty", "-u", "root", dom, "--", "sh", "-c", script);
  try {
    qvm("setup-network");
    qvm("create", "--label", "blue", "work");
    for (const n of ["bare1", "bare2", "bare3"]) qvm("create", "--label", "gray", "--prop", "netvm=", n);

    log("timing three offline domains started one after the other");
    let t0 = performance.now();
    for (const n of ["bare1", "bare2", "bare3"]) qvm("start", n);
    const bareMs = performance.now() - t0;
    for (const n of ["bare1", "bare2", "bare3"]) qvm("kill", n);

    log("timing `qvm start work` (sys-firewall and sys-net first) to its first HTTP answer");
    t0 = performance.now();
    qvm("start", "work");
    for (;;) {
      try {
        inDomain("work", "curl -sf --max-time 5 -o /dev/null http://example.test/");
        break;
      } catch {
        if (performance.now() - t0 > 600_000) throw new Error("work loaded no page within 10 minutes");
      }
    }
    const firstHttpMs = performance.now() - t0;

    // The raw side: a listener in sys-firewall, let in past its input chain for this benchmark.
    const fw = qvm("prefs", "sys-firewall", "ip").trim();
    inDomain("sys-firewall", `nft insert rule ip qvm input iifname "vif*" tcp dport 8080 accept && (node -e '${ZERO_SERVER}' >/dev/null 2>&1 &) && sleep 3`);

    log(`timing ${CONNECTS} TCP connects each way`);
    const connect = (url: string) =>
      inDomain("work", `for i in $(seq ${CONNECTS}); do curl -s -o /dev/null --max-time 10 -w '%{time_connect}\\n' ${url}; done`)
        .trim()
        .split("\n")
        .map((x) => Number(x) * 1000);
    const chainConnect = median(connect("http://example.test/hello"));
    const rawConnect = median(connect(`http://${fw}:8080/bytes/1`));

    log(`timing ${DOWNLOAD_MIB} MiB downloads each way`);
    const bytes = DOWNLOAD_MIB * 1024 * 1024;
    const speed = (url: string) => Number(inDomain("work", `curl -s -o /dev/null --max-time 600 -w '%{speed_download}' ${url}`)) / (1024 * 1024);
    const chainSpeed = speed(`http://example.test/bytes/${bytes}`);
    const rawSpeed = speed(`http://${fw}:8080/bytes/${bytes}`);

    return {
      "first http": { qvm: firstHttpMs / 1000, baseline: bareMs / 1000, unit: "s", qvmLabel: "`qvm start work` (sys-firewall, sys-net first) to its first HTTP answer", baselineLabel: "starting three offline domains" },
      "tcp connect": { qvm: chainConnect, baseline: rawConnect, unit: "ms", qvmLabel: "TCP connect, work → test host via sys-firewall, sys-net, passt", baselineLabel: "work → sys-firewall over one raw link" },
      "tcp download": { qvm: chainSpeed, baseline: rawSpeed, unit: "MiB/s", qvmLabel: `HTTP download of ${DOWNLOAD_MIB} MiB, test host → work through the chain`, baselineLabel: "the same from sys-firewall over one raw link" },
    };
  } finally {
    // qvmd leaves VMs running when it stops: kill them first (the net domains last).
    const { domains } = await d.client.listDomains({}).catch(() => ({ domains: [] as Array<{ name: string }> }));
    const order = [...domains.map((x) => x.name).filter((n) => !n.startsWith("sys-")), "sys-firewall", "sys-net"];
    for (const name of order) await d.client.killDomain({ name }).catch(() => {});
    await d.stop();
    removeTestDaemonDirs(dirs);
    await inet[Symbol.asyncDispose]();
  }
}
