// Scale figures, opt-in only (QVM_BENCH_ONLY=scale: it fills the host's memory and takes many
// minutes; never in the default bench or the tests):
//   tb N         TCG's translation cache at tb-size N: the CPU time plain QEMU (qvm's command
//                line) spends booting to the agent's Ping and running a fixed workload, vs the
//                same at the largest size swept; the note has wall times, full cache flushes
//                (`info jit`) and QEMU's anonymous memory at each
//   scale mem    host memory per idle domain of the default size (guest RAM held, the VMM's own,
//                qvmd's share), as many as fit started one after another through one qvmd
//                vs the guest RAM each was given
//   scale start  the last of those starts vs the first: what piling up costs a start
// QVM_BENCH_TB_SIZES (default 32,64,128,512; empty: no sweep), QVM_BENCH_SCALE_MAX (default 1000;
// 0: no pile) and QVM_BENCH_SCALE_MARGIN_MIB (default 2048) shape it.
// qvmd runs with its running-domain and guest-memory limits lifted: this measures what the host
// holds, from which admission.ts's defaults are set. The pile stops when the next domain would
// bring MemAvailable under the margin, when qvmd refuses (its disk reserve), or at the cap.
import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { defaultImagesDir } from "@qvm/images";
import { adminV1, domainClassFromWord } from "@qvm/protocol";
import { removeTestDaemonDirs, startTestDaemon, testDaemonDirs } from "@qvm/host-agent/testing";
import type { Figure } from "./admin.js";
import { bootPlain, domainPids, type VmmPids } from "./memory.js";
import { cpuSeconds, guestRamMiB, hostAvailableMiB, ownMiB, processMemory, settle } from "./proc-memory.js";

const TB_SIZES = (process.env.QVM_BENCH_TB_SIZES ?? "32,64,128,512").split(",").filter(Boolean).map(Number);
const MAX_DOMAINS = Number(process.env.QVM_BENCH_SCALE_MAX ?? 1000);
const MARGIN_MIB = Number(process.env.QVM_BENCH_SCALE_MARGIN_MIB ?? 2048);
/** Runs new code in the guest (node starting, a hash, a directory walk): what a small cache flushes. */
const WORKLOAD = "for i in 1 2 3; do node -e 'require(\"crypto\").createHash(\"sha256\").update(\"x\".repeat(1 << 24)).digest(\"hex\")'; done; ls -lR /usr > /dev/null";
const fmt = (n: number) => n.toFixed(1);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function scaleFigures(log: (m: string) => void, out: Record<string, Figure> = {}): Promise<Record<string, Figure>> {
  if (TB_SIZES.length) await tbSizeFigures(log, out);
  if (MAX_DOMAINS > 0) await pileUp(log, out);
  return out;
}

/**
 * One plain boot per size, one after another (sizes from QVM_BENCH_TB_SIZES; empty skips). The
 * figure is QEMU's CPU time, not wall time: on a shared 2-core machine wall times swing by half
 * between runs, while the CPU QEMU spends translating and running is what the cache size changes.
 */
async function tbSizeFigures(log: (m: string) => void, out: Record<string, Figure>): Promise<void> {
  const base = mkdtempSync(path.join(os.tmpdir(), "qvm-bench-tb-"));
  const runs: { tb: number; bootMs: number; workMs: number; bootCpu: number; workCpu: number; flushes: string; anonMiB: number }[] = [];
  try {
    for (const tb of TB_SIZES) {
      log(`tb-size ${tb}: booting plain QEMU, running the workload`);
      const vm = await bootPlain(base, `tb${tb}`, { memoryMiB: 400, vcpus: 2, tbSizeMiB: tb });
      try {
        const bootCpu = cpuSeconds(vm.qemu);
        const t0 = performance.now();
        const p = vm.agent.exec({ command: WORKLOAD });
        p.stdin.end();
        p.stdout.resume();
        p.stderr.resume();
        const exit = await p.exit;
        if (exit.code !== 0) throw new Error(`the workload exited with ${JSON.stringify(exit)}`);
        const workMs = performance.now() - t0;
        const workCpu = cpuSeconds(vm.qemu) - bootCpu;
        const flushes = /TB flush count\s+(\d+)/.exec(await hmp(vm.qmpSocket, "info jit"))?.[1] ?? "?";
        await settle(() => ownMiB(processMemory(vm.qemu)));
        runs.push({ tb, bootMs: vm.bootMs, workMs, bootCpu, workCpu, flushes, anonMiB: processMemory(vm.qemu).anonMiB });
        log(
          `tb-size ${tb}: boot ${(vm.bootMs / 1000).toFixed(1)} s (QEMU CPU ${bootCpu.toFixed(1)} s), workload ${(workMs / 1000).toFixed(1)} s (CPU ${workCpu.toFixed(1)} s), ` +
            `${flushes} full cache flushes, QEMU anon ${fmt(runs.at(-1)!.anonMiB)} MiB`,
        );
      } finally {
        await vm.stop();
      }
    }
  } finally {
    rmSync(base, { recursive: true, force: true });
  }
  const ref = runs.reduce((a, b) => (b.tb > a.tb ? b : a));
  const secs = (x: number) => x.toFixed(1);
  for (const r of runs.filter((x) => x !== ref)) {
    out[`tb ${r.tb}`] = {
      qvm: (r.bootCpu + r.workCpu) * 1000, baseline: (ref.bootCpu + ref.workCpu) * 1000, unit: "ms", qvmLabel: `QEMU CPU, boot + workload, tb-size ${r.tb}`, baselineLabel: `the same, tb-size ${ref.tb}`,
      note:
        `QEMU CPU: boot ${secs(r.bootCpu)} s vs ${secs(ref.bootCpu)} s, workload ${secs(r.workCpu)} s vs ${secs(ref.workCpu)} s; wall: boot ${secs(r.bootMs / 1000)} s vs ${secs(ref.bootMs / 1000)} s, ` +
        `workload ${secs(r.workMs / 1000)} s vs ${secs(ref.workMs / 1000)} s; full translation cache flushes ${r.flushes} vs ${ref.flushes}; QEMU's anonymous memory ${fmt(r.anonMiB)} MiB vs ${fmt(ref.anonMiB)} MiB.`,
    };
  }
}

/** One HMP command through a QMP monitor (`info jit`: the translation cache's statistics). */
async function hmp(socket: string, command: string): Promise<string> {
  const conn = net.connect(socket);
  let buf = "";
  const lines: Record<string, unknown>[] = [];
  conn.on("data", (d: Buffer) => {
    buf += d.toString();
    for (let i = buf.indexOf("\n"); i >= 0; i = buf.indexOf("\n")) {
      lines.push(JSON.parse(buf.slice(0, i)) as Record<string, unknown>);
      buf = buf.slice(i + 1);
    }
  });
  const reply = async (): Promise<unknown> => {
    for (let i = 0; i < 200; i++) {
      const at = lines.findIndex((l) => "return" in l || "error" in l);
      if (at >= 0) return lines.splice(0, at + 1).at(-1)!.return;
      await sleep(25);
    }
    throw new Error(`QMP on ${socket} did not answer`);
  };
  try {
    await once(conn, "connect");
    conn.write(`${JSON.stringify({ execute: "qmp_capabilities" })}\n`);
    await reply();
    conn.write(`${JSON.stringify({ execute: "human-monitor-command", arguments: { "command-line": command } })}\n`);
    return String(await reply());
  } finally {
    conn.destroy();
  }
}

async function pileUp(log: (m: string) => void, out: Record<string, Figure>): Promise<void> {
  const dirs = testDaemonDirs("bench-scale", defaultImagesDir());
  const lifted = ["--max-running", "100000", "--max-guest-memory", String(Math.ceil(os.totalmem() / 1024 / 1024))];
  const d = await startTestDaemon(dirs, 15_000, lifted);
  const started: string[] = [];
  try {
    const template = (await d.client.listDomains({})).domains.find((x) => x.class === adminV1.DomainClass.DOMAIN_CLASS_TEMPLATE_VM)!.name;
    const create = (name: string) => d.client.createDomain({ name, class: domainClassFromWord("AppVM"), template, label: "blue", properties: {} });
    // The default size: no memory property, so each gets what every new domain gets.
    await create("s0");
    const memoryMiB = Number((await d.client.getProperty({ domain: "s0", name: "memory" })).property!.value);
    const available0 = hostAvailableMiB();
    const qvmd0 = ownMiB(processMemory(d.proc.pid!));
    const startMs: number[] = [];
    const pids: VmmPids[] = [];
    // Until one is measured, a domain is taken to cost its guest RAM and a translation cache.
    let perDomain = memoryMiB + 256;
    let stopped = `the cap of ${MAX_DOMAINS} domains (QVM_BENCH_SCALE_MAX)`;
    log(`piling up idle ${memoryMiB} MiB domains: MemAvailable ${fmt(available0)} MiB, margin ${MARGIN_MIB} MiB`);
    for (let i = 0; i < MAX_DOMAINS; i++) {
      const available = hostAvailableMiB();
      if (available - perDomain < MARGIN_MIB) {
        stopped = `MemAvailable ${fmt(available)} MiB less one more domain (${fmt(perDomain)} MiB) is under the ${MARGIN_MIB} MiB margin`;
        break;
      }
      const name = `s${i}`;
      if (i > 0) await create(name);
      const t0 = performance.now();
      try {
        await d.client.startDomain({ name });
      } catch (err) {
        stopped = `qvmd refused: ${err instanceof Error ? err.message : String(err)}`;
        break;
      }
      startMs.push(performance.now() - t0);
      started.push(name);
      pids.push(domainPids(dirs.runtimeDir, name));
      perDomain = Math.max(perDomain, (available0 - hostAvailableMiB()) / started.length);
      log(`${started.length} running: start took ${(startMs.at(-1)! / 1000).toFixed(1)} s, MemAvailable ${fmt(hostAvailableMiB())} MiB, ${fmt(perDomain)} MiB per domain so far`);
    }
    log(`stopped: ${stopped}; letting the last ones settle`);
    if (!started.length) throw new Error(`no domain started: ${stopped}`);
    await settle(() => available0 - hostAvailableMiB(), { stepMs: 3000, stableMiB: 8, rounds: 3, maxMs: 120_000 });
    const n = started.length;
    const dropPer = (available0 - hostAvailableMiB()) / n;
    const sum = (f: (p: VmmPids) => number) => pids.reduce((a, p) => a + f(p), 0);
    const vmmOwn = sum((p) => ownMiB(processMemory(p.qemu)) + ownMiB(processMemory(p.vhost))) / n;
    const guest = sum((p) => guestRamMiB(p.qemu)) / n;
    const qvmdPer = Math.max(0, ownMiB(processMemory(d.proc.pid!)) - qvmd0) / n;
    const cpu0 = sum((p) => cpuSeconds(p.qemu));
    await sleep(10_000);
    const idleCpu = ((sum((p) => cpuSeconds(p.qemu)) - cpu0) / 10 / n) * 100;
    // Counted from the domains' own processes, not from MemAvailable, which other users of the
    // machine move too; the worst case is a guest that touched all of its RAM.
    const per = guest + vmmOwn + qvmdPer;
    const worst = memoryMiB + vmmOwn + qvmdPer;
    const fits = (cost: number) => Math.floor((available0 - MARGIN_MIB) / cost);
    out["scale mem"] = {
      qvm: per, baseline: memoryMiB, unit: "MiB", qvmLabel: `host memory per idle domain, ${n} running`, baselineLabel: "guest RAM given to each",
      note:
        `${n} idle ${memoryMiB} MiB domains ran at once; the pile stopped at ${stopped}. Per domain: guest RAM held ${fmt(guest)} MiB, QEMU + vhost-device-vsock's own ${fmt(vmmOwn)} MiB, ` +
        `qvmd ${fmt(qvmdPer)} MiB (MemAvailable fell ${fmt(dropPer)} MiB per domain, other users included); each idle QEMU used ${fmt(idleCpu)}% of a core. ` +
        `Above the ${MARGIN_MIB} MiB margin of the ${fmt(available0)} MiB available at the start, ${fits(per)} such idle domains fit, ${fits(worst)} if each touched all its RAM (${fmt(worst)} MiB).`,
    };
    out["scale start"] = {
      qvm: startMs.at(-1)!, baseline: startMs[0]!, unit: "ms", qvmLabel: `start with ${n - 1} others idle`, baselineLabel: "the first start",
      note: `Starts in order (s): ${startMs.map((ms) => (ms / 1000).toFixed(1)).join(", ")}. Under TCG every idle guest still takes CPU (timers), which the new one's boot shares.`,
    };
  } catch (err) {
    log(`qvmd's log ends with:\n${d.log().slice(-3000)}`);
    throw err;
  } finally {
    for (const name of started) await d.client.killDomain({ name }).catch(() => {});
    await d.stop();
    removeTestDaemonDirs(dirs);
  }
}
