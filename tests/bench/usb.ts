// USB figures (docs/usb.md), with two real domains under one qvmd: sys-usb gets an emulated stick
// (`qvm usb plug sys-usb --disk IMAGE`: a raw image of random bytes, on its own emulated xHCI) and
// `qvm usb attach work sys-usb:BUSID` carries it to work over USB/IP inside a qubes.USB qrexec call.
//   usb read    a sequential read of the whole stick in work (dd bs=1M iflag=direct: every byte
//               comes over USB/IP through qrexec, none from work's page cache), timed in the guest
//               vs the same read in sys-usb of the stick on its emulated xHCI, before attaching
//   usb 1MiB    one 1 MiB direct read, the same two places (the latency of a burst of SCSI
//               commands, which is where USB/IP's round trips show)
// Logged with them, so that a slow read says where its time goes instead of hiding it in a median:
// a 4 KiB read (one SCSI command) in each place; the CPU time that qvmd, each VMM and the busiest
// processes inside both domains spent during work's last whole read; a plain qrexec stream of the
// same size from sys-usb to work (the pipe USB/IP rides in, without USB/IP); and work's kernel log
// searched for USB resets and SCSI timeouts (usb-storage aborts a command after 30 s).
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { execa } from "execa";
import { defaultImagesDir, repoRoot } from "@qvm/images";
import { removeTestDaemonDirs, startTestDaemon, testDaemonDirs } from "@qvm/host-agent/testing";
import type { Figure } from "./admin.js";

const MIB = Number(process.env.QVM_BENCH_USB_MIB ?? 32);
const ROUNDS = Number(process.env.QVM_BENCH_USB_ROUNDS ?? 3);
/** A bound on one read in a guest (`timeout` there), far above any sane read of MIB MiB. */
const READ_LIMIT_S = Number(process.env.QVM_BENCH_USB_READ_LIMIT_S ?? 600);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The USB disk a domain's kernel has (sd* whose sysfs path runs through a USB bus), or "". */
const FIND_DISK = "for b in /sys/block/sd*; do [ -e \"$b\" ] && readlink -f \"$b\" | grep -q /usb && basename \"$b\"; done; true";
/** USB resets, SCSI aborts and timeouts, and I/O errors in a kernel log. */
const TROUBLE = "dmesg | grep -iE 'reset|abort|timed? ?out|i/o error|blk_update_request' | tail -n 40; true";
/** Every process's /proc/PID/stat, one a line (for CPU times inside a domain). */
const GUEST_STATS = "for f in /proc/[0-9]*/stat; do cat \"$f\"; echo; done 2>/dev/null; true";
/** USER_HZ: the unit of utime and stime in /proc/PID/stat, 100 on Linux. */
const TICKS_PER_S = 100;

/** CPU ticks (user + system) by "comm pid" from /proc/PID/stat lines. */
function cpuTicks(statLines: Iterable<string>, label: (pid: string, comm: string) => string | undefined): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of statLines) {
    const open = line.indexOf("(");
    const close = line.lastIndexOf(")");
    if (open < 0 || close < open) continue;
    const pid = line.slice(0, open).trim();
    const name = label(pid, line.slice(open + 1, close));
    if (!name) continue;
    const f = line.slice(close + 2).split(" "); // f[0] is field 3 (state): utime is field 14, stime 15
    out.set(name, Number(f[11]) + Number(f[12]));
  }
  return out;
}

/** The processes that spent the most CPU between two snapshots: "name 12.3 s (47%)", busiest first. */
function busiest(before: Map<string, number>, after: Map<string, number>, wallS: number, n = 6): string {
  return [...after]
    .map(([k, t]) => [k, (t - (before.get(k) ?? 0)) / TICKS_PER_S] as const)
    .filter(([, s]) => s >= 0.05)
    .sort((a, b) => b[1] - a[1])
    .slice(0, n)
    .map(([k, s]) => `${k} ${s.toFixed(1)} s (${((100 * s) / wallS).toFixed(0)}%)`)
    .join(", ") || "nothing measurable";
}

/** qvmd and every host process whose command line names the daemon's directories (VMMs, vsock devices). */
function hostTicks(qvmdPid: number | undefined, base: string): Map<string, number> {
  const lines: string[] = [];
  const names = new Map<string, string>();
  for (const pid of readdirSync("/proc").filter((e) => /^\d+$/.test(e))) {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll("\0", " ");
      if (Number(pid) !== qvmdPid && !cmd.includes(base)) continue;
      const dom = /\/(?:domains|logs)\/([^/\s]+)/.exec(cmd)?.[1];
      names.set(pid, Number(pid) === qvmdPid ? "qvmd" : dom ? `(${dom})` : "");
      lines.push(readFileSync(`/proc/${pid}/stat`, "utf8"));
    } catch {
      // gone meanwhile
    }
  }
  return cpuTicks(lines, (pid, comm) => (names.get(pid) === "qvmd" ? "qvmd" : `${comm}${names.get(pid) ? ` ${names.get(pid)}` : ""} ${pid}`));
}

export async function usbFigures(log: (m: string) => void): Promise<Record<string, Figure>> {
  const tmp = mkdtempSync(path.join(os.tmpdir(), "qvm-bench-usb-"));
  const image = path.join(tmp, "stick.img");
  const content = randomBytes(MIB * 1024 * 1024);
  writeFileSync(image, content);
  const firstMiBSha = createHash("sha256").update(content.subarray(0, 1024 * 1024)).digest("hex");

  const dirs = testDaemonDirs("bench-usb", defaultImagesDir());
  const d = await startTestDaemon(dirs);
  const cli = path.join(repoRoot(), "cli/dist/qvm.js");
  const env = { ...process.env, QVM_RUNTIME_DIR: dirs.runtimeDir, NO_COLOR: "1" };
  // Asynchronous: qvmd's stderr is a pipe to this process, which must keep draining it.
  const qvm = async (...args: string[]) => {
    const r = await execa(process.execPath, [cli, ...args], { env, stdin: "ignore", reject: false });
    if (r.exitCode !== 0) throw new Error(`qvm ${args.join(" ")} exited with ${r.exitCode}: ${r.stderr}`);
    return r.stdout;
  };
  const inDomain = (dom: string, script: string) => qvm("run", "-p", "--no-pty", "-u", "root", dom, "--", "sh", "-c", script);

  /** Waits for the USB disk in `dom`; its name (sda). */
  async function diskIn(dom: string, timeoutMs = 120_000): Promise<string> {
    const t0 = performance.now();
    for (;;) {
      const disk = (await inDomain(dom, FIND_DISK)).trim().split("\n")[0] ?? "";
      if (disk) return disk;
      if (performance.now() - t0 > timeoutMs) throw new Error(`no USB disk in ${dom} within ${timeoutMs / 1000} s; its kernel log:\n${await inDomain(dom, TROUBLE)}`);
      await sleep(1000);
    }
  }

  /** One direct read of `mib` MiB (or `bs` × `count`) from /dev/`disk` in `dom`, timed there; ms. */
  async function timedRead(dom: string, disk: string, bs: string, count: number): Promise<number> {
    const script =
      `s=$(date +%s%N); timeout ${READ_LIMIT_S} dd if=/dev/${disk} of=/dev/null bs=${bs} count=${count} iflag=direct 2>/tmp/dd.err; rc=$?; ` +
      `e=$(date +%s%N); echo "$rc $(( (e - s) / 1000 ))"; tail -n 3 /tmp/dd.err`;
    const out = (await inDomain(dom, script)).trim().split("\n");
    const [rc, us] = (out[0] ?? "").split(" ").map(Number);
    if (rc !== 0 || !(us! > 0)) {
      throw new Error(
        `dd of ${count} × ${bs} from /dev/${disk} in ${dom} failed (exit ${rc}${rc === 124 ? `: not done within ${READ_LIMIT_S} s` : ""}, ` +
          `${((us ?? 0) / 1e6).toFixed(1)} s): ${out.slice(1).join(" | ")}\n${dom}'s kernel log:\n${await inDomain(dom, TROUBLE)}`,
      );
    }
    return us! / 1000;
  }

  /**
   * The reads of one place: a 4 KiB probe, ROUNDS 1 MiB reads and ROUNDS whole-stick reads; the
   * last whole read through `around` (which may measure what it costs).
   */
  async function reads(dom: string, disk: string, around = (read: () => Promise<number>) => read()) {
    const size = Number((await inDomain(dom, `blockdev --getsize64 /dev/${disk}`)).trim());
    if (size < MIB * 1024 * 1024) throw new Error(`/dev/${disk} in ${dom} has ${size} bytes, not the stick's ${MIB} MiB`);
    const sha = (await inDomain(dom, `dd if=/dev/${disk} bs=1M count=1 iflag=direct 2>/dev/null | sha256sum`)).split(" ")[0];
    if (sha !== firstMiBSha) throw new Error(`/dev/${disk} in ${dom} is not the stick: its first MiB has SHA-256 ${sha}`);
    const probe4k = await timedRead(dom, disk, "4K", 1);
    const oneMiB: number[] = [];
    const whole: number[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      oneMiB.push(await timedRead(dom, disk, "1M", 1));
      const read = () => timedRead(dom, disk, "1M", MIB);
      whole.push(await (i === ROUNDS - 1 ? around(read) : read()));
      log(`${dom}: ${MIB} MiB in ${(whole.at(-1)! / 1000).toFixed(2)} s (${(MIB / (whole.at(-1)! / 1000)).toFixed(2)} MiB/s); 1 MiB in ${oneMiB.at(-1)!.toFixed(0)} ms`);
    }
    log(`${dom}: one 4 KiB read (one SCSI command) ${probe4k.toFixed(1)} ms; max_sectors_kb ${(await inDomain(dom, `cat /sys/block/${disk}/queue/max_sectors_kb`)).trim()}`);
    return { oneMiB: median(oneMiB), mibPerS: MIB / (median(whole) / 1000) };
  }

  const domains = ["work", "sys-usb"];
  try {
    for (const [name, label] of [["sys-usb", "red"], ["work", "blue"]] as const) {
      await qvm("create", "--template", "debian-12", "--label", label, "--prop", "memory=500", "--prop", "netvm=", name);
    }
    await qvm("usb", "plug", "sys-usb", "--disk", image);
    log("starting sys-usb (with a stick on its emulated xHCI) and work");
    await Promise.all(domains.map((name) => d.client.startDomain({ name })));

    let busid = "";
    const t0 = performance.now();
    while (!busid) {
      const list = JSON.parse(await qvm("usb", "list", "sys-usb", "--json")) as Array<{ backend: string; busid: string; vendorId: string }>;
      busid = list.find((x) => x.backend === "sys-usb" && x.vendorId === "46f4")?.busid ?? "";
      if (!busid && performance.now() - t0 > 120_000) throw new Error(`sys-usb reported no stick within 120 s: ${JSON.stringify(list)}`);
      if (!busid) await sleep(1000);
    }

    log(`timing direct reads of the ${MIB} MiB stick in sys-usb (its own xHCI), ${ROUNDS} rounds`);
    const native = await reads("sys-usb", await diskIn("sys-usb"));

    log(`attaching sys-usb:${busid} to work`);
    const a0 = performance.now();
    await qvm("usb", "attach", "work", `sys-usb:${busid}`);
    const attachMs = performance.now() - a0;
    const workDisk = await diskIn("work");
    log(`attached in ${(attachMs / 1000).toFixed(1)} s; /dev/${workDisk} in work ${((performance.now() - a0) / 1000).toFixed(1)} s after the attach began`);

    log(`timing the same reads in work (USB/IP inside qubes.USB), ${ROUNDS} rounds`);
    const guestTicks = async (dom: string) =>
      cpuTicks((await inDomain(dom, GUEST_STATS)).split("\n"), (pid, comm) => `${comm} ${pid}`);
    const overUsbip = await reads("work", workDisk, async (read) => {
      const before = { host: hostTicks(d.proc.pid, dirs.base), work: await guestTicks("work"), usb: await guestTicks("sys-usb") };
      const ms = await read();
      const wallS = ms / 1000;
      log(`CPU during work's last ${MIB} MiB read (${wallS.toFixed(1)} s; 2 host CPUs, TCG):`);
      log(`  host: ${busiest(before.host, hostTicks(d.proc.pid, dirs.base), wallS)}`);
      log(`  in work: ${busiest(before.work, await guestTicks("work"), wallS)}`);
      log(`  in sys-usb: ${busiest(before.usb, await guestTicks("sys-usb"), wallS)}`);
      return ms;
    });

    // The pipe alone: the same bytes as a plain qrexec stream sys-usb -> work (stdio, no USB/IP).
    writeFileSync(path.join(dirs.dataDir, "policy.d", "30-user.policy"), "test.Stream * work sys-usb allow\n");
    await inDomain("sys-usb", `printf '#!/bin/sh\\nexec head -c ${MIB}M /dev/zero\\n' > /usr/local/etc/qubes-rpc/test.Stream && chmod 755 /usr/local/etc/qubes-rpc/test.Stream`);
    const stream = (await inDomain("work", `s=$(date +%s%N); n=$(qrexec-client-vm sys-usb test.Stream | wc -c); e=$(date +%s%N); echo "$n $(( (e - s) / 1000 ))"`)).trim().split(" ").map(Number);
    if (stream[0] !== MIB * 1024 * 1024) log(`the plain qrexec stream carried ${stream[0]} bytes, not ${MIB} MiB`);
    else log(`for scale, a plain qrexec stream of ${MIB} MiB sys-usb → work (stdio, no USB/IP): ${(stream[1]! / 1e6).toFixed(1)} s, ${(MIB / (stream[1]! / 1e6)).toFixed(2)} MiB/s`);

    const trouble = (await inDomain("work", TROUBLE)).trim();
    const resets = trouble.split("\n").filter((l) => /reset/i.test(l)).length;
    log(`work's kernel log after the reads: ${resets} USB reset line(s)${trouble ? `; trouble lines:\n${trouble}` : ", no reset, abort, timeout or I/O error"}`);
    const backendTrouble = (await inDomain("sys-usb", TROUBLE)).trim();
    if (/reset|abort|error/i.test(backendTrouble)) log(`sys-usb's kernel log:\n${backendTrouble}`);

    return {
      "usb read": { qvm: overUsbip.mibPerS, baseline: native.mibPerS, unit: "MiB/s", qvmLabel: `${MIB} MiB direct read in work, USB/IP over qrexec`, baselineLabel: "the same read in sys-usb, its own emulated xHCI",
        note: "USB/IP rides a qrexec call between the two domains: the qrexec data path, not USB, sets this figure (the bench logs that plain stream's rate)." },
      "usb 1MiB": { qvm: overUsbip.oneMiB, baseline: native.oneMiB, unit: "ms", qvmLabel: "one 1 MiB direct read in work", baselineLabel: "the same in sys-usb" },
    };
  } catch (err) {
    log(`qvmd's log ends with:\n${d.log().slice(-3000)}`);
    throw err;
  } finally {
    // The frontend first, so that its vhci port goes before the backend's usbip-host does.
    for (const name of domains) await d.client.killDomain({ name }).catch(() => {});
    await d.stop();
    removeTestDaemonDirs(dirs);
    rmSync(tmp, { recursive: true, force: true });
  }
}
