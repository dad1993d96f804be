// npm run bench: each qvm figure next to the raw baseline it is compared with, measured in one
// run on the same machine. Absolute times under TCG are emulation times; the ratios are the point.
// The figures come in sections (QVM_BENCH_ONLY=admin,vm runs those alone); report.ts prints them
// with their ratios and targets and merges them into bench-results/bench.json, from which
// `npm run bench:table` writes the README's table.
//
//   boot        qvm (DomainVm.start: overlay, vhost-device-vsock, QEMU, QMP, relay, Ping)
//               vs plain QEMU + vhost-device-vsock started by hand with the same command line,
//               timed to the same point (the agent answers Ping)
//   boot floor  the same qvm start vs plain QEMU booting the same kernel with a busybox initramfs
//               to a shell (floor.ts); logged with it, the guest's own boot timeline
//               (boot-timeline.ts: systemd-analyze, the agent's unit in the journal)
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
//   backup      qvm backup create / restore of 256 MiB of data vs qemu-img reading it out raw /
//               writing it back; an incremental after 1 MiB changed vs the full (tests/bench/backup.ts)
//   encrypted   a start's volume work for an encrypted AppVM vs a plain one; 64 KiB writes into
//               an encrypted qcow2 vs a plain one (tests/bench/encrypted.ts)
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { execFileSync, spawn } from "node:child_process";
import { ImageStore, defaultImagesDir } from "@qvm/images";
import { adminFigures, type Figure } from "./admin.js";
import { disposableFigure, storageFigures } from "./storage.js";
import { qrexecFigures } from "./qrexec.js";
import { backupFigures } from "./backup.js";
import { encryptedFigures } from "./encrypted.js";
import { shellFigures } from "./shell.js";
import { networkFigures } from "./network.js";
import { guiFigures } from "./gui.js";
import { usbFigures } from "./usb.js";
import { memoryFigures } from "./memory.js";
import { scaleFigures } from "./scale.js";
import { prepareFloor } from "./floor.js";
import { describeTimeline, readBootTimeline } from "./boot-timeline.js";
import { writeReport, type SectionResult } from "./report.js";
import { AgentClient, DomainVm, QemuDriver, VsockRelay, dialHybridVsock, type VmSpec } from "@qvm/host-agent";
import { chooseAccel, runtimePaths } from "@qvm/host-agent/testing";

const ROUNDS = Number(process.env.QVM_BENCH_ROUNDS ?? 2);
/** The bench's domains: the memory and CPUs qvm gives a domain by default. */
const MEMORY_MIB = 1024;
const VCPUS = 2;
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
    runtimeDir: path.join(base, "run", name), logDir: path.join(base, "logs", name), memoryMiB: MEMORY_MIB, vcpus: VCPUS,
  });
  const ms = performance.now() - t0;
  await dom.kill();
  return ms;
}

/**
 * Plain QEMU: the same command line (qvm's driver builds it: prepare() only computes it), started
 * by hand, polled with a bare client.
 */
async function bootPlain(i: number): Promise<number> {
  const name = `bp${i}`;
  const runtimeDir = path.join(base, "run", name);
  const logDir = path.join(base, "logs", name);
  mkdirSync(runtimeDir, { recursive: true });
  mkdirSync(logDir, { recursive: true });
  const overlay = path.join(runtimeDir, "root.qcow2");
  execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", "-F", "raw", "-b", template.root, overlay]);
  const spec: VmSpec = {
    name, runtimeDir, logDir, kernel: { image: kernel.image, initrd: kernel.initrd }, memoryMiB: MEMORY_MIB, vcpus: VCPUS, guestCid: 3,
    kernelArgs: [`systemd.hostname=${name}`],
    disks: [
      { serial: "root", path: overlay, format: "qcow2", readonly: false },
      { serial: "modules", path: kernel.modules, format: "raw", readonly: true },
    ],
  };
  const p = runtimePaths(runtimeDir, logDir);
  const [qemuBinary, ...args] = (await new QemuDriver().prepare(spec)).command;
  const t0 = performance.now();
  const vhost = spawn("vhost-device-vsock", ["--guest-cid", "3", "--socket", p.vhostUserSocket, "--uds-path", p.vsockPath], { stdio: "ignore" });
  while (!(await exists(p.vhostUserSocket))) await sleep(5);
  const qemu = spawn(qemuBinary!, args, { stdio: "ignore" });
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

/** What the report keeps besides figures: the guest's boot timeline, the sections that failed. */
const extra: Record<string, unknown> = {};
const sections: SectionResult[] = [];
const sectionNames = new Set<string>();
// QVM_BENCH_ONLY=NAME[,NAME…]: those sections alone (their names are in main(); admin boots no
// VM). Unset: every section but the opt-in ones.
const only = process.env.QVM_BENCH_ONLY?.split(",").map((s) => s.trim());

/**
 * Runs one section when it is asked for. `run` returns its figures or puts them in `out` as it
 * goes, so a section that fails part way still reports what it measured; the failure is logged,
 * kept in bench.json (extra.failed) and makes the bench exit non-zero, and the other sections run.
 */
async function section(name: string, run: (out: Record<string, Figure>) => Promise<Record<string, Figure> | void>, opts: { optIn?: boolean } = {}): Promise<void> {
  sectionNames.add(name);
  if (only ? !only.includes(name) : opts.optIn) return;
  const figures: Record<string, Figure> = {};
  let complete = true;
  try {
    Object.assign(figures, await run(figures));
  } catch (err) {
    complete = false;
    process.exitCode = 1;
    log(`section ${name} failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    extra.failed = { ...(extra.failed as object | undefined), [name]: { date: new Date().toISOString(), error: String(err) } };
  }
  sections.push({ section: name, figures, complete });
}

async function main(): Promise<void> {
  log(`accelerator: ${chooseAccel().accel} (${chooseAccel().why}); ${ROUNDS} boot rounds`);
  await section("admin", async (out) => {
    Object.assign(out, await adminFigures(log));
    Object.assign(out, await storageFigures(log));
  });
  await section("vm", async (out) => {
    await vmFigures(out);
    Object.assign(out, await disposableFigure(log));
  });
  await section("backup", () => backupFigures(log));
  await section("encrypted", () => encryptedFigures(log));
  await section("memory", (out) => memoryFigures(log, out));
  await section("qrexec", () => qrexecFigures(log));
  await section("shell", () => shellFigures(log));
  await section("network", () => networkFigures(log));
  await section("gui", () => guiFigures(log));
  await section("usb", () => usbFigures(log));
  await section("scale", (out) => scaleFigures(log, out), { optIn: true });
  const unknown = (only ?? []).filter((n) => !sectionNames.has(n));
  if (unknown.length) {
    log(`QVM_BENCH_ONLY names no section ${unknown.join(", ")}; the sections: ${[...sectionNames].join(", ")}`);
    process.exitCode = 1;
  }
  if (sections.length) writeReport(sections, chooseAccel().accel, extra, log);
}

async function vmFigures(results: Record<string, Figure>): Promise<void> {
  const floor = await prepareFloor(base, kernel, MEMORY_MIB, VCPUS);
  log(`the floor: qemu-system-x86_64 ${floor.args.join(" ")}`);
  const qvmBoots: number[] = [];
  const plainBoots: number[] = [];
  const floorBoots: number[] = [];
  const secs = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
  for (let i = 0; i < ROUNDS; i++) {
    plainBoots.push(await bootPlain(i));
    log(`plain QEMU boot ${i + 1}: ${secs(plainBoots.at(-1)!)}`);
    qvmBoots.push(await bootQvm(i));
    log(`qvm boot ${i + 1}: ${secs(qvmBoots.at(-1)!)}`);
    floorBoots.push(await floor.boot());
    log(`floor boot ${i + 1} (busybox initramfs to a shell): ${secs(floorBoots.at(-1)!)}`);
  }
  results.boot = {
    qvm: median(qvmBoots), baseline: median(plainBoots), unit: "ms", qvmLabel: "qvm start → agent Ping", baselineLabel: "plain QEMU → agent Ping, same command line",
    target: 1.1,
  };
  results["boot floor"] = {
    qvm: median(qvmBoots), baseline: median(floorBoots), unit: "ms", qvmLabel: "qvm start → agent Ping, against the floor", baselineLabel: "plain QEMU, same kernel, busybox initramfs → shell",
    target: 3,
    note: "The floor is the kernel's own boot; qvm's start adds its initramfs (modules, the root volume), systemd up to the agent's unit, Node starting the agent, and the host's connect and Ping (bench.json's extra.bootTimeline splits it).",
  };

  log("booting a domain for the boot timeline, the exec and the stream figures");
  const bootStart = performance.now();
  const dom = await DomainVm.start({
    name: "bx", driver: new QemuDriver(), kernel, rootImage: template.root,
    runtimeDir: path.join(base, "run", "bx"), logDir: path.join(base, "logs", "bx"), memoryMiB: MEMORY_MIB, vcpus: VCPUS,
  });
  const bootReady = performance.now();
  try {
    const timeline = await readBootTimeline(dom.agent, bootStart, bootReady);
    log(describeTimeline(timeline));
    extra.bootTimeline = { date: new Date().toISOString(), floorS: median(floorBoots) / 1000, ...timeline };

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
    results.stdout = { qvm: mib / execSecs, baseline: mib / rawSecs, unit: "MiB/s", qvmLabel: `Exec stdout, ${mib} MiB`, baselineLabel: "raw hybrid-vsock stream", target: 1 / 0.7 };
    await dom.agent.signal((await helpers.started).execId, "SIGKILL").catch(() => {});
  } finally {
    await dom.kill();
  }
}

main()
  .catch((err) => {
    console.error(err);
    process.exitCode = 1;
  })
  .finally(() => rmSync(base, { recursive: true, force: true }));
