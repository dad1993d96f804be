// Memory figures (QVM_BENCH_ONLY=memory), one idle domain of the default size at a time:
//   mem/domain  host memory one idle domain costs beyond its guest RAM: its QEMU's and its
//               vhost-device-vsock's anonymous memory and page tables, plus what qvmd grew by
//               (the vsock relays live inside qvmd), the domain started through a test qvmd
//               vs plain QEMU + vhost-device-vsock with the same command line, idle as long
//   mem return  guest RAM the host holds after the guest wrote 200 MiB (QVM_BENCH_FREE_MIB) to a
//               tmpfs and removed it vs what it held before the write (free page reporting:
//               host-agent/src/vmm/qemu/balloon.ts)
// Guest RAM is the memfd both processes map; it is counted from the memfd (proc-memory.ts), apart
// from the overhead. The translation cache's size against speed is in the scale section.
import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import path from "node:path";
import { ImageStore, defaultImagesDir, repoRoot } from "@qvm/images";
import { adminV1, domainClassFromWord } from "@qvm/protocol";
import { AgentClient, QemuDriver, VsockRelay, type VmSpec } from "@qvm/host-agent";
import { removeTestDaemonDirs, runtimePaths, startTestDaemon, testDaemonDirs } from "@qvm/host-agent/testing";
import type { Figure } from "./admin.js";
import { guestRamMiB, ownMiB, processMemory, settle, type ProcessMemory } from "./proc-memory.js";

const FREE_MIB = Number(process.env.QVM_BENCH_FREE_MIB ?? 200);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const fmt = (n: number) => n.toFixed(1);

/** A domain's VMM processes: QEMU and vhost-device-vsock. */
export interface VmmPids {
  qemu: number;
  vhost: number;
}

/** The VMM pids qvmd recorded for a running domain (the QEMU driver's vmm.json). */
export function domainPids(runtimeDir: string, name: string): VmmPids {
  const state = JSON.parse(readFileSync(path.join(runtimeDir, "domains", name, "vmm.json"), "utf8")) as { qemuPid: number; vhostPid: number };
  return { qemu: state.qemuPid, vhost: state.vhostPid };
}

/** Waits until the VMM stops growing: its own memory plus the guest RAM it holds. */
export function settleVmm(pids: VmmPids): Promise<{ value: number; ms: number }> {
  return settle(() => ownMiB(processMemory(pids.qemu)) + guestRamMiB(pids.qemu));
}

export interface PlainVm extends VmmPids {
  /** From spawning vhost-device-vsock until the agent answers Ping. */
  bootMs: number;
  /** A QMP monitor nobody else uses. */
  qmpSocket: string;
  agent: AgentClient;
  stop(): Promise<void>;
}

/**
 * Plain QEMU + vhost-device-vsock, started by hand with the command line qvm's driver builds for
 * the same spec (prepare() only computes it), without qvmd, jail or cgroups. `tbSizeMiB` replaces
 * the translation cache's size under TCG (the scale section's sweep).
 */
export async function bootPlain(base: string, name: string, opts: { memoryMiB: number; vcpus: number; tbSizeMiB?: number }): Promise<PlainVm> {
  const kernel = new ImageStore(defaultImagesDir()).kernel();
  const template = new ImageStore(defaultImagesDir()).template("debian-12");
  const runtimeDir = path.join(base, "run", name);
  const logDir = path.join(base, "logs", name);
  mkdirSync(runtimeDir, { recursive: true });
  mkdirSync(logDir, { recursive: true });
  const overlay = path.join(runtimeDir, "root.qcow2");
  execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", "-F", "raw", "-b", template.root, overlay]);
  const spec: VmSpec = {
    name, runtimeDir, logDir, kernel: { image: kernel.image, initrd: kernel.initrd }, memoryMiB: opts.memoryMiB, vcpus: opts.vcpus, guestCid: 3,
    kernelArgs: [`systemd.hostname=${name}`],
    disks: [
      { serial: "root", path: overlay, format: "qcow2", readonly: false },
      { serial: "modules", path: kernel.modules, format: "raw", readonly: true },
    ],
  };
  const p = runtimePaths(runtimeDir, logDir);
  const [qemuBinary, ...args] = (await new QemuDriver().prepare(spec)).command;
  const accel = args.indexOf("-accel");
  if (opts.tbSizeMiB !== undefined && args[accel + 1]?.startsWith("tcg")) args[accel + 1] = `tcg,tb-size=${opts.tbSizeMiB}`;
  const t0 = performance.now();
  const vhost = spawn("vhost-device-vsock", ["--guest-cid", "3", "--socket", p.vhostUserSocket, "--uds-path", p.vsockPath], { stdio: "ignore" });
  while (!existsSync(p.vhostUserSocket)) await sleep(5);
  const qemu = spawn(qemuBinary!, args, { stdio: "ignore" });
  const relay = await VsockRelay.listen(path.join(runtimeDir, "agent.sock"), p.vsockPath, 1024);
  const agent = new AgentClient(relay.listenPath);
  const stop = async () => {
    agent.close();
    await relay.close();
    await Promise.all([killed(qemu), killed(vhost)]);
    rmSync(runtimeDir, { recursive: true, force: true });
    rmSync(logDir, { recursive: true, force: true });
  };
  try {
    for (const deadline = Date.now() + 300_000; ; ) {
      if (qemu.exitCode !== null) throw new Error(`plain QEMU exited with ${qemu.exitCode}`);
      try {
        await agent.ping(1000);
        break;
      } catch (err) {
        if (Date.now() > deadline) throw err;
        await sleep(100);
      }
    }
  } catch (err) {
    await stop();
    throw err;
  }
  return { qemu: qemu.pid!, vhost: vhost.pid!, bootMs: performance.now() - t0, qmpSocket: p.qmpSocket, agent, stop };
}

function killed(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once("exit", () => resolve());
    child.kill("SIGKILL");
  });
}

const describe = (m: ProcessMemory) => `${fmt(m.anonMiB)} anon + ${fmt(m.pteMiB)} page tables (${fmt(m.fileMiB)} file-backed, shared)`;

export async function memoryFigures(log: (m: string) => void, out: Record<string, Figure> = {}): Promise<Record<string, Figure>> {
  const dirs = testDaemonDirs("bench-memory", defaultImagesDir());
  const d = await startTestDaemon(dirs);
  const cli = path.join(repoRoot(), "cli/dist/qvm.js");
  const env = { ...process.env, QVM_RUNTIME_DIR: dirs.runtimeDir, NO_COLOR: "1" };
  const qvm = (...args: string[]) => execFileSync(process.execPath, [cli, ...args], { env, encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] });
  const name = "idle";
  try {
    const template = (await d.client.listDomains({})).domains.find((x) => x.class === adminV1.DomainClass.DOMAIN_CLASS_TEMPLATE_VM)!.name;
    // The default size: no memory or vcpus property, so the domain gets what every new one gets.
    await d.client.createDomain({ name, class: domainClassFromWord("AppVM"), template, label: "blue", properties: {} });
    const prop = async (p: string) => Number((await d.client.getProperty({ domain: name, name: p })).property!.value);
    const memoryMiB = await prop("memory");
    const vcpus = await prop("vcpus");
    const qvmdBefore = processMemory(d.proc.pid!);
    log(`starting an idle ${memoryMiB} MiB domain through qvmd and waiting until its VMM stops growing`);
    await d.client.startDomain({ name });
    const pids = domainPids(dirs.runtimeDir, name);
    const settled = await settleVmm(pids);
    const qemu = processMemory(pids.qemu);
    const vhost = processMemory(pids.vhost);
    const qvmdAfter = processMemory(d.proc.pid!);
    const qvmdGrowth = Math.max(0, ownMiB(qvmdAfter) - ownMiB(qvmdBefore));
    const guest = guestRamMiB(pids.qemu);
    const cmdline = readFileSync(`/proc/${pids.qemu}/cmdline`, "utf8").split("\0");
    const accel = cmdline[cmdline.indexOf("-accel") + 1];
    log(`qvm: QEMU ${describe(qemu)}; vhost-device-vsock ${describe(vhost)}; qvmd +${fmt(qvmdGrowth)} MiB; guest RAM held ${fmt(guest)} of ${memoryMiB} MiB; settled in ${(settled.ms / 1000).toFixed(0)} s`);

    log(`writing ${FREE_MIB} MiB to a tmpfs in ${name}, removing it, and watching the host get it back`);
    const before = guestRamMiB(pids.qemu);
    qvm("run", "--pass-io", "--no-pty", "--user", "root", name, "--", "sh", "-c", `mkdir -p /run/qvm-bench && mount -t tmpfs -o size=${FREE_MIB + 16}m qvm-bench /run/qvm-bench && head -c ${FREE_MIB}M /dev/zero > /run/qvm-bench/f`);
    const peak = guestRamMiB(pids.qemu);
    const t0 = performance.now();
    qvm("run", "--pass-io", "--no-pty", "--user", "root", name, "--", "sh", "-c", "rm /run/qvm-bench/f && umount /run/qvm-bench");
    const samples: { s: number; mib: number }[] = [];
    await settle(() => {
      const mib = guestRamMiB(pids.qemu);
      samples.push({ s: (performance.now() - t0) / 1000, mib });
      return mib;
    }, { stepMs: 1000, rounds: 3, maxMs: 30_000 });
    const after = { value: samples.at(-1)!.mib };
    // When it got there: the first reading within 2 MiB of where it stayed.
    const returnedS = samples.find((x) => x.mib <= after.value + 2)!.s;
    log(`guest RAM held: ${fmt(before)} MiB before, ${fmt(peak)} with the file, ${fmt(after.value)} within ${returnedS.toFixed(0)} s of removing it`);
    out["mem return"] = {
      qvm: after.value, baseline: before, unit: "MiB", qvmLabel: `guest RAM held after ${FREE_MIB} MiB freed`, baselineLabel: "guest RAM held before the write",
      note: `The guest's virtio_balloon reports free 2 MiB blocks and QEMU punches them out of the guest RAM memfd: ${fmt(peak - after.value)} of the ${fmt(peak - before)} MiB the write took came back within ${returnedS.toFixed(0)} s (${fmt(peak)} MiB at the peak). What stays is the guest's own use (page cache, fragments under 2 MiB).`,
    };
    await d.client.killDomain({ name });

    log("booting plain QEMU with the same command line, idle as long");
    const plain = await bootPlain(dirs.base, "plain", { memoryMiB, vcpus });
    let plainQemu: ProcessMemory;
    let plainVhost: ProcessMemory;
    let plainGuest: number;
    try {
      await settleVmm(plain);
      plainQemu = processMemory(plain.qemu);
      plainVhost = processMemory(plain.vhost);
      plainGuest = guestRamMiB(plain.qemu);
    } finally {
      await plain.stop();
    }
    log(`plain: QEMU ${describe(plainQemu)}; vhost-device-vsock ${describe(plainVhost)}; guest RAM held ${fmt(plainGuest)} MiB`);
    out["mem/domain"] = {
      qvm: ownMiB(qemu) + ownMiB(vhost) + qvmdGrowth, baseline: ownMiB(plainQemu) + ownMiB(plainVhost), unit: "MiB",
      qvmLabel: `idle ${memoryMiB} MiB domain, beyond guest RAM`, baselineLabel: "plain QEMU + vhost-device-vsock, idle",
      note:
        `QEMU (${accel}) ${fmt(ownMiB(qemu))} MiB, vhost-device-vsock ${fmt(ownMiB(vhost))} MiB, qvmd's growth (vsock relays, bookkeeping; Node's heap makes it rough) ${fmt(qvmdGrowth)} MiB; ` +
        `plain QEMU ${fmt(ownMiB(plainQemu))} MiB, vhost-device-vsock ${fmt(ownMiB(plainVhost))} MiB. Anonymous memory and page tables; file-backed pages (the binaries) are shared by every VMM. ` +
        `Under TCG most of QEMU's share is its translation cache (tb-size, filled by one boot). Guest RAM held after settling: qvm ${fmt(guest)}, plain ${fmt(plainGuest)} of ${memoryMiB} MiB. ` +
        "cloud-hypervisor's target is 10 MiB beyond guest RAM (not measurable on these machines).",
    };
    return out;
  } catch (err) {
    log(`qvmd's log ends with:\n${d.log().slice(-3000)}`);
    throw err;
  } finally {
    await d.client.killDomain({ name }).catch(() => {});
    await d.stop();
    removeTestDaemonDirs(dirs);
  }
}
