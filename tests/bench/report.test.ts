// The benchmark report's pure parts: ratios, merging a partial run into bench.json, the floor's
// initramfs and QEMU arguments, and the guest boot timeline's parsers.
import { spawnSync } from "node:child_process";
import { describe, expect, it } from "vitest";
import { mergeReports, previousRows, ratioOf, toRows, type BenchReport } from "./report.js";
import { floorArgs, newcCpio } from "./floor.js";
import { parseAnalyze, parseCriticalChain, parseJournal, parseKernelLog, parseSpan } from "./boot-timeline.js";
import type { Figure } from "./admin.js";

const fig = (qvm: number, over: Partial<Figure> = {}): Figure => ({ qvm, baseline: 10, unit: "ms", qvmLabel: "q", baselineLabel: "b", ...over });
const run = (date: string, sections: Record<string, Record<string, Figure>>): BenchReport => ({
  date, accel: "tcg", host: { cpus: 2, memory: "8.0 GiB", kernel: "6.1" },
  figures: toRows(Object.entries(sections).map(([section, figures]) => ({ section, figures, complete: true })), date),
  extra: {},
});

describe("report", () => {
  it("ratio: qvm/baseline for costs, baseline/qvm for rates; met when ratio ≤ target", () => {
    expect(ratioOf(fig(20))).toBe(2);
    expect(ratioOf(fig(5, { unit: "MiB/s" }))).toBe(2);
    const [a, b, c] = toRows([{ section: "vm", figures: { a: fig(11, { target: 1.1 }), b: fig(12, { target: 1.1 }), c: fig(12, { note: "n" }) }, complete: true }], "D");
    expect([a!.met, b!.met, c!.met, c!.target, c!.note, a!.note]).toEqual([true, false, null, null, "n", null]);
    expect(a).toMatchObject({ id: "a", section: "vm", date: "D" });
  });

  it("a partial run replaces its sections' rows, keeps the others with their dates and merges extra", () => {
    const full = { ...run("d1", { vm: { boot: fig(1), exec: fig(2) }, admin: { "qvm ls": fig(3) }, gui: { frame: fig(4) } }), extra: { bootTimeline: { kernelS: 1 } } };
    const partial = { ...run("d2", { admin: { "qvm ls": fig(30), "prop get": fig(31) } }), extra: { other: 1 } };
    const merged = mergeReports(full, partial, new Set(["admin"]));
    expect(merged.figures.map((r) => [r.id, r.date])).toEqual([["boot", "d1"], ["exec", "d1"], ["qvm ls", "d2"], ["prop get", "d2"], ["frame", "d1"]]);
    expect(merged.date).toBe("d2");
    expect(merged.extra).toEqual({ bootTimeline: { kernelS: 1 }, other: 1 });
  });

  it("keeps a section's failure until that section runs again", () => {
    const before = { ...run("d1", { vm: { boot: fig(1) } }), extra: { failed: { vm: "e1", gui: "e2" } } };
    expect(mergeReports(before, run("d2", { vm: { boot: fig(2) } }), new Set(["vm"])).extra).toEqual({ failed: { gui: "e2" } });
    expect(mergeReports(before, { ...run("d2", { usb: {} }), extra: { failed: { usb: "e3" } } }, new Set()).extra).toEqual({ failed: { vm: "e1", gui: "e2", usb: "e3" } });
    expect(mergeReports(before, run("d2", { gui: { f: fig(1) } }), new Set(["vm", "gui"])).extra).toEqual({});
  });

  it("a section that failed part way replaces only the ids it measured", () => {
    const full = run("d1", { vm: { boot: fig(1), exec: fig(2), stdout: fig(3) } });
    const merged = mergeReports(full, run("d2", { vm: { boot: fig(10) } }), new Set());
    expect(merged.figures.map((r) => [r.id, r.date])).toEqual([["boot", "d2"], ["exec", "d1"], ["stdout", "d1"]]);
  });

  it("new sections go at the end; a missing or unreadable previous file is no rows", () => {
    const merged = mergeReports(run("d1", { vm: { boot: fig(1) } }), run("d2", { usb: { read: fig(2) } }), new Set(["usb"]));
    expect(merged.figures.map((r) => r.id)).toEqual(["boot", "read"]);
    expect(mergeReports(undefined, run("d2", { usb: { read: fig(2) } }), new Set(["usb"])).figures).toHaveLength(1);
    expect(previousRows("garbage")).toEqual([]);
  });

  it("reads the format before sections as section 'earlier'", () => {
    const old = { date: "2026-11-30T13:45:34.257Z", accel: "tcg", rows: [{ figure: "usb read", qvm: 2, baseline: 200, unit: "MiB/s", qvmLabel: "q", baselineLabel: "b", ratio: 100 }] };
    expect(previousRows(old)).toEqual([
      { id: "usb read", qvm: 2, baseline: 200, unit: "MiB/s", qvmLabel: "q", baselineLabel: "b", ratio: 100, target: null, met: null, note: null, section: "earlier", date: "2026-11-30T13:45:34.257Z" },
    ]);
  });
});

describe("boot floor", () => {
  it("keeps qvm's machine, CPU, memory and kernel options and drops its devices, sockets and sandbox", () => {
    const qvm = [
      "/usr/bin/qemu-system-x86_64", "-name", "qvm-x,debug-threads=on", "-machine", "microvm,memory-backend=mem", "-accel", "tcg,tb-size=128", "-sandbox", "on",
      "-cpu", "max", "-m", "1024M", "-smp", "2", "-object", "memory-backend-memfd,id=mem,size=1024M,share=on", "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
      "-global", "virtio-mmio.force-legacy=false", "-kernel", "/k/vmlinux", "-initrd", "/k/initrd.img", "-append", "console=ttyS0 quiet",
      "-chardev", "socket,id=console,path=/c", "-serial", "chardev:console", "-device", "vhost-user-vsock-device,chardev=vsock", "-qmp", "unix:/q,server=on,wait=off",
    ];
    expect(floorArgs(qvm, "/tmp/floor.cpio")).toEqual([
      "-machine", "microvm,memory-backend=mem", "-accel", "tcg,tb-size=128", "-cpu", "max", "-m", "1024M", "-smp", "2",
      "-object", "memory-backend-memfd,id=mem,size=1024M,share=on", "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
      "-kernel", "/k/vmlinux", "-append", "console=ttyS0 quiet", "-initrd", "/tmp/floor.cpio", "-serial", "stdio",
    ]);
  });

  it("writes a newc archive that cpio lists, device node included", () => {
    const archive = newcCpio([
      { name: "dev", mode: 0o040755 },
      { name: "dev/console", mode: 0o020600, rdev: [5, 1] },
      { name: "init", mode: 0o100755, data: Buffer.from("#!/bin/sh\necho hi\n") },
    ]);
    expect(archive.length % 4).toBe(0);
    // Read back by GNU cpio where it is installed (scripts/setup.sh installs it); -t only lists.
    const r = spawnSync("cpio", ["-t", "-v", "--quiet"], { input: archive, encoding: "utf8" });
    if (r.error) return;
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^crw-------.*5,\s+1 .*dev\/console$/m);
    expect(r.stdout).toMatch(/^-rwxr-xr-x.* 18 .*init$/m);
  });
});

describe("boot timeline", () => {
  it("parses systemd's spans and systemd-analyze's split", () => {
    expect(parseSpan("1min 2.5s")).toBeCloseTo(62.5);
    expect(parseSpan("345ms")).toBeCloseTo(0.345);
    expect(parseSpan("n/a")).toBeUndefined();
    expect(parseAnalyze("Startup finished in 1.234s (kernel) + 2.5s (initrd) + 1min 3.456s (userspace) = 1min 7.190s\nmulti-user.target reached after 1min 3.4s in userspace.\n")).toEqual({
      kernelS: 1.234, initrdS: 2.5, userspaceS: 63.456,
    });
    expect(parseAnalyze("Startup finished in 812ms (kernel) + 9.1s (userspace) = 9.9s")).toEqual({ kernelS: 0.812, initrdS: undefined, userspaceS: 9.1 });
    expect(parseAnalyze("Bootup is not yet finished.")).toEqual({ kernelS: undefined, initrdS: undefined, userspaceS: undefined });
  });

  it("finds the agent's unit in critical-chain and the journal", () => {
    const chain = 'The time when unit became active or started is printed after the "@" character.\n\nqvm-agent.service @4.512s\n└─local-fs.target @4.4s\n';
    expect(parseCriticalChain(chain)).toBeCloseTo(4.512);
    expect(parseCriticalChain("qvm-agent.service @1min 2.000s +30ms\n")).toBeCloseTo(62);
    const journal = "[    4.501234] bx systemd[1]: Started qvm-agent.service - qvm guest agent (gRPC over vsock port 1024).\n[    7.250000] bx node[201]: qvm-agent: version 0.1.0 listening on vsock port 1024\n";
    expect(parseJournal(journal)).toEqual({ agentUnitStartS: 4.501234, agentListeningS: 7.25 });
    expect(parseJournal("-- No entries --")).toEqual({ agentUnitStartS: undefined, agentListeningS: undefined });
    const dmesg = "[    1.204000] Run /init as init process\n[    3.290100] systemd[1]: systemd 252.33-1~deb12u1 running in system mode (+PAM +AUDIT)\n";
    expect(parseKernelLog(dmesg)).toEqual({ initramfsStartS: 1.204, systemdStartS: 3.2901 });
  });
});
