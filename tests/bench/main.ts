// npm run bench: each qvm figure next to the raw baseline it is compared with, measured in one
// run on the same machine. Absolute times under TCG are emulation times; the ratios are the point.
//
//   boot        qvm (DomainVm.start: overlay, vhost-device-vsock, QEMU, QMP, relay, Ping)
//               vs plain QEMU + vhost-device-vsock started by hand with the same command line,
//               timed to the same point (the agent answers Ping)
//   exec true   round trip of Exec `true` through the agent
//               vs a raw hybrid-vsock echo (connect, 1 byte out, 1 byte back) to socat in the guest
//   stdout      256 MiB of stdout through Exec
//               vs the same bytes streamed raw over hybrid vsock from socat in the guest
//   qvm ls      the CLI listing 100 defined domains through qvmd vs `node -e 0`
//   prop get    an admin property get vs a bare admin round trip on the same socket
//   create      creating an AppVM (private volume only) vs a plain sparse copy of the template root
//   disk 10     disk used by 10 AppVMs of one template vs that template's root
//   dispvm      `qvm run --dispvm -- echo hi` vs `qvm start` + `qvm run` of an existing AppVM
//   qrexec      a trivial domain -> domain call through policy vs a host -> domain Exec `true`
//   qvm-copy    qvm-copy-to-vm of 256 MiB vs a raw hybrid-vsock stream of it to the host
//   keystroke   a key typed in the web shell until its echo shows vs the same echo through a pty Exec
//   terminal    a 50 MiB cat in the web shell's terminal vs the same cat through a pty Exec
//   first http  `qvm start work` to its first page through sys-firewall and sys-net vs 3 offline starts
//   tcp connect work -> test host through the net domains vs work -> sys-firewall over one raw link
//   tcp download 64 MiB, the same two paths (tests/bench/network.ts)
//   first frame `qvm run --gui` to the window's first frame in the browser vs `qvm run -p VM -- true`
//   key → pixels a key on a program window until its pixels change vs a key's echo in a web-shell
//               terminal of the same domain (tests/bench/gui.ts)
//   usb read    a direct sequential read of a stick attached to work over USB/IP inside qrexec
//               vs the same read in sys-usb, the stick on its own emulated xHCI
//   usb 1MiB    one 1 MiB direct read, the same two places (tests/bench/usb.ts)
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { execFileSync, spawn } from "node:child_process";
import { ImageStore, defaultImagesDir } from "@qvm/images";
import { adminFigures, type Figure } from "./admin.js";
import { disposableFigure, storageFigures } from "./storage.js";
import { qrexecFigures } from "./qrexec.js";
import { shellFigures } from "./shell.js";
import { networkFigures } from "./network.js";
import { guiFigures } from "./gui.js";
import { usbFigures } from "./usb.js";
import { AgentClient, DomainVm, QemuDriver, VsockRelay, dialHybridVsock, type VmSpec } from "@qvm/host-agent";
import { buildQemuArgs, chooseAccel, hostTscKhz, runtimePaths } from "@qvm/host-agent/testing";

const ROUNDS = Number(process.env.QVM_BENCH_ROUNDS ?? 2);
const EXEC_N = Number(process.env.QVM_BENCH_EXEC_N ?? 30);
const STREAM_BYTES = Number(process.env.QVM_BENCH_STREAM_MIB ?? 256) * 1024 * 1024;

const store = new ImageStore(defaultImagesDir());
const kernel = store.kernel();
const template = store.template("debian-12");
const base = mkdtempSync(path.join(os.tmpdir(), "qvm-bench-"));
const log = (m: string) => process.stderr.write(`bench: ${m}\n`);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function bootQvm(i: number): Promise<number> {
  const name = `bq${i}`;
  const t0 = performance.now();
  const dom = await DomainVm.start({
    name, driver: new QemuDriver(), kernel, rootImage: template.root,
    runtimeDir: path.join(base, "run", name), logDir: path.join(base, "logs", name), memoryMiB: 1024,
  });
  const ms = performance.now() - t0;
  await dom.kill();
  return ms;
}

/** Plain QEMU: the same command line, started by hand, polled with a bare client. */
async function bootPlain(i: number): Promise<number> {
  const name = `bp${i}`;
  const runtimeDir = path.join(base, "run", name);
  const logDir = path.join(base, "logs", name);
  mkdirSync(runtimeDir, { recursive: true });
  mkdirSync(logDir, { recursive: true });
  const overlay = path.join(runtimeDir, "root.qcow2");
  execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", "-F", "raw", "-b", template.root, overlay]);
  const spec: VmSpec = {
    name, runtimeDir, logDir, kernel: { image: kernel.image, initrd: kernel.initrd }, memoryMiB: 1024, vcpus: 2, guestCid: 3,
    disks: [
      { serial: "root", path: overlay, format: "qcow2", readonly: false },
      { serial: "modules", path: kernel.modules, format: "raw", readonly: true },
    ],
  };
  const p = runtimePaths(runtimeDir, logDir);
  const args = buildQemuArgs(spec, chooseAccel().accel, p, hostTscKhz());
  const t0 = performance.now();
  const vhost = spawn("vhost-device-vsock", ["--guest-cid", "3", "--socket", p.vhostUserSocket, "--uds-path", p.vsockPath], { stdio: "ignore" });
  while (!(await exists(p.vhostUserSocket))) await sleep(5);
  const qemu = spawn("qemu-system-x86_64", args, { stdio: "ignore" });
  const relay = await VsockRelay.listen(path.join(runtimeDir, "agent.sock"), p.vsockPath, 1024);
  const client = new AgentClient(relay.listenPath);
  for (;;) {
    try {
      await client.ping(1000);
      break;
    } catch {
      await sleep(100);
    }
  }
  const ms = performance.now() - t0;
  client.close();
  await relay.close();
  qemu.kill("SIGKILL");
  vhost.kill("SIGKILL");
  await sleep(200);
  return ms;
}

async function exists(f: string): Promise<boolean> {
  try {
    (await import("node:fs")).statSync(f);
    return true;
  } catch {
    return false;
  }
}

async function drain(stream: NodeJS.ReadableStream): Promise<number> {
  let n = 0;
  for await (const c of stream) n += (c as Buffer).length;
  return n;
}

async function main(): Promise<void> {
  const results: Record<string, Figure> = {};
  log(`accelerator: ${chooseAccel().accel} (${chooseAccel().why}); ${ROUNDS} boot rounds`);
  // QVM_BENCH_ONLY=admin: the daemon figures alone (no VM boots); =qrexec, =shell, =network, =gui, =usb: those alone.
  const only = process.env.QVM_BENCH_ONLY;
  if (!only || only === "admin") {
    Object.assign(results, await adminFigures(log));
    Object.assign(results, await storageFigures(log));
  }
  if (!only) {
    await vmFigures(results);
    Object.assign(results, await disposableFigure(log));
  }
  if (!only || only === "qrexec") Object.assign(results, await qrexecFigures(log));
  if (!only || only === "shell") Object.assign(results, await shellFigures(log));
  if (!only || only === "network") Object.assign(results, await networkFigures(log));
  if (!only || only === "gui") Object.assign(results, await guiFigures(log));
  if (!only || only === "usb") Object.assign(results, await usbFigures(log));
  report(results);
}

async function vmFigures(results: Record<string, Figure>): Promise<void> {

  const qvmBoots: number[] = [];
  const plainBoots: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    plainBoots.push(await bootPlain(i));
    log(`plain QEMU boot ${i + 1}: ${(plainBoots.at(-1)! / 1000).toFixed(2)} s`);
    qvmBoots.push(await bootQvm(i));
    log(`qvm boot ${i + 1}: ${(qvmBoots.at(-1)! / 1000).toFixed(2)} s`);
  }
  results.boot = { qvm: median(qvmBoots), baseline: median(plainBoots), unit: "ms", qvmLabel: "qvm start → agent Ping", baselineLabel: "plain QEMU → agent Ping" };

  log("booting a domain for the exec and stream figures");
  const dom = await DomainVm.start({
    name: "bx", driver: new QemuDriver(), kernel, rootImage: template.root,
    runtimeDir: path.join(base, "run", "bx"), logDir: path.join(base, "logs", "bx"), memoryMiB: 1024,
  });
  try {
    const vsock = runtimePaths(path.join(base, "run", "bx"), path.join(base, "logs", "bx")).vsockPath;
    const helpers = dom.agent.exec({
      command: `socat VSOCK-LISTEN:5000,reuseaddr,fork EXEC:cat & socat VSOCK-LISTEN:5001,reuseaddr,fork SYSTEM:'head -c ${STREAM_BYTES} /dev/zero' & wait`,
    });
    await helpers.started;
    await sleep(1500);

    const execTimes: number[] = [];
    for (let i = 0; i < EXEC_N; i++) {
      const t0 = performance.now();
      const p = dom.agent.exec({ command: ["true"] });
      p.stdin.end();
      p.stdout.resume();
      p.stderr.resume();
      await p.exit;
      execTimes.push(performance.now() - t0);
    }
    const echoTimes: number[] = [];
    for (let i = 0; i < EXEC_N; i++) {
      const t0 = performance.now();
      const s = await dialHybridVsock(vsock, 5000);
      await new Promise<void>((resolve) => {
        s.once("data", () => resolve());
        s.resume();
        s.write("x");
      });
      echoTimes.push(performance.now() - t0);
      s.destroy();
    }
    results.exec = { qvm: median(execTimes), baseline: median(echoTimes), unit: "ms", qvmLabel: "Exec `true` round trip", baselineLabel: "raw hybrid-vsock echo (with connect)" };

    let t0 = performance.now();
    const big = dom.agent.exec({ command: ["head", "-c", String(STREAM_BYTES), "/dev/zero"] });
    big.stdin.end();
    big.stderr.resume();
    const got = await drain(big.stdout);
    await big.exit;
    const execSecs = (performance.now() - t0) / 1000;
    if (got !== STREAM_BYTES) throw new Error(`stream lost bytes: ${got} of ${STREAM_BYTES}`);
    t0 = performance.now();
    const raw = await dialHybridVsock(vsock, 5001);
    const rawGot = await drain(raw);
    const rawSecs = (performance.now() - t0) / 1000;
    if (rawGot !== STREAM_BYTES) throw new Error(`raw stream lost bytes: ${rawGot} of ${STREAM_BYTES}`);
    const mib = STREAM_BYTES / 1024 / 1024;
    results.stdout = { qvm: mib / execSecs, baseline: mib / rawSecs, unit: "MiB/s", qvmLabel: `Exec stdout, ${mib} MiB`, baselineLabel: "raw hybrid-vsock stream" };
    await dom.agent.signal((await helpers.started).execId, "SIGKILL").catch(() => {});
  } finally {
    await dom.kill();
  }
}

function report(results: Record<string, Figure>): void {
  const rows = Object.entries(results).map(([k, r]) => {
    // For times, ratio = qvm / baseline (lower is better); for throughput, baseline / qvm.
    const ratio = r.unit === "MiB/s" ? r.baseline / r.qvm : r.qvm / r.baseline;
    return { figure: k, ...r, ratio };
  });
  const fmt = (n: number) => (n >= 100 ? n.toFixed(0) : n.toFixed(2));
  console.log("\nfigure  qvm                                    baseline                                       ratio");
  for (const r of rows) {
    console.log(`${r.figure.padEnd(8)} ${`${fmt(r.qvm)} ${r.unit}`.padEnd(12)} ${r.qvmLabel.padEnd(26)} ${`${fmt(r.baseline)} ${r.unit}`.padEnd(12)} ${r.baselineLabel.padEnd(34)} ${r.ratio.toFixed(2)}×`);
  }
  console.log("(ratio: qvm cost relative to the baseline; 1.00× = no overhead. Targets: boot ≤ 1.15×, qvm ls ≤ 2.5×)");
  mkdirSync("bench-results", { recursive: true });
  writeFileSync("bench-results/bench.json", `${JSON.stringify({ date: new Date().toISOString(), accel: chooseAccel().accel, rows }, null, 2)}\n`);
  log("wrote bench-results/bench.json");
}

main()
  .catch((err) => {
    console.error(err);
    process.exitCode = 1;
  })
  .finally(() => rmSync(base, { recursive: true, force: true }));
