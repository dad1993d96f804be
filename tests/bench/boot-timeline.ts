// A domain's boot as the guest itself saw it, on the guest's monotonic clock (which starts with
// the kernel, after QEMU has started and loaded it): the kernel log (when the kernel ran /init,
// qvm's busybox initramfs, and when systemd took over from it), systemd-analyze's split, when the
// agent's unit started (critical-chain) and when the agent said it was listening (the journal).
// Against the host's clock: when the guest's clock started, from its uptime read at a known host
// time, and so how long the host's connect and Ping took after the agent listened. Parsing is
// best effort: what does not parse is kept as raw text and the bench goes on.
import type { AgentClient } from "@qvm/host-agent";

export interface BootTimeline {
  /** The host: from calling DomainVm.start to the agent's Ping answered. */
  hostStartToPingS?: number;
  /** The host: when the guest's clock started, after the call to start (QEMU's start, loading the kernel, decompressing it). */
  guestClockStartS?: number;
  /** The guest's clock source: "tsc" keeps time with the host; "jiffies" or "refined-jiffies" can lose it under emulation. */
  clocksource?: string;
  /** The kernel log: the kernel ran /init (qvm's initramfs), and systemd started after switch_root. */
  initramfsStartS?: number;
  systemdStartS?: number;
  /** systemd-analyze: seconds in the kernel (with qvm's initramfs, which is not systemd's), in a systemd initrd, in userspace to the default target. */
  kernelS?: number;
  initrdS?: number;
  userspaceS?: number;
  /** The agent's unit started: critical-chain's @ (which counts from userspace's start) moved onto the guest's clock. */
  agentUnitStartS?: number;
  /** The agent logged "listening on vsock port". */
  agentListeningS?: number;
  /** Only when something did not parse: the commands' output. */
  raw?: Record<string, string>;
}

const UNIT_S: Record<string, number> = { h: 3600, min: 60, s: 1, ms: 1e-3, us: 1e-6, "µs": 1e-6 };

/** systemd's time spans: "1min 2.345s", "345ms", "2.1s". */
export function parseSpan(text: string): number | undefined {
  const parts = [...text.trim().matchAll(/(\d+(?:\.\d+)?)(h|min|ms|us|µs|s)\b/g)];
  if (!parts.length) return undefined;
  return parts.reduce((sum, m) => sum + Number(m[1]) * UNIT_S[m[2]!]!, 0);
}

/** "Startup finished in 1.2s (kernel) + 3.4s (initrd) + 5.6s (userspace) = 10.2s" */
export function parseAnalyze(text: string): Pick<BootTimeline, "kernelS" | "initrdS" | "userspaceS"> {
  const line = text.split("\n").find((l) => l.includes("Startup finished in")) ?? "";
  const span = (what: string) => {
    const m = new RegExp(`(?:in|\\+)\\s+([^+=()]+?)\\s+\\(${what}\\)`).exec(line);
    return m ? parseSpan(m[1]!) : undefined;
  };
  return { kernelS: span("kernel"), initrdS: span("initrd"), userspaceS: span("userspace") };
}

/** critical-chain's "qvm-agent.service @3.012s +45ms": when the unit became active or started. */
export function parseCriticalChain(text: string): number | undefined {
  const m = /qvm-agent\.service\s+@([^+\n]+)/.exec(text);
  return m ? parseSpan(m[1]!) : undefined;
}

/** dmesg: "[    1.234567] Run /init as init process" and "[ 3.1] systemd[1]: systemd 252.33-1 running in system mode …". */
export function parseKernelLog(text: string): Pick<BootTimeline, "initramfsStartS" | "systemdStartS"> {
  return { initramfsStartS: stampOf(text, /Run \/init as init process/), systemdStartS: stampOf(text, /systemd\[1\]: systemd \d+.* running in system mode/) };
}

/** The "[   seconds]" stamp of the first line that matches. */
function stampOf(text: string, re: RegExp): number | undefined {
  const line = text.split("\n").find((l) => re.test(l));
  const m = line && /^\[\s*(\d+\.\d+)\]/.exec(line);
  return m ? Number(m[1]) : undefined;
}

/** journalctl -o short-monotonic: the first "[  3.012345] host systemd[1]: Started qvm-agent…" and "… listening on vsock port". */
export function parseJournal(text: string): Pick<BootTimeline, "agentUnitStartS" | "agentListeningS"> {
  return { agentUnitStartS: stampOf(text, /Started qvm-agent/), agentListeningS: stampOf(text, /listening on vsock port/) };
}

async function run(agent: AgentClient, command: string): Promise<string> {
  const p = agent.exec({ command, user: "root" });
  p.stdin.end();
  const text = async (s: NodeJS.ReadableStream) => {
    let out = "";
    for await (const c of s) out += (c as Buffer).toString("utf8");
    return out;
  };
  const [out, err] = await Promise.all([text(p.stdout), text(p.stderr), p.exit]);
  return out + err;
}

/** When the guest's clock started, on the host's: the host's time since `startedAt` less the guest's uptime, read in the middle of one Exec. */
async function guestClock(agent: AgentClient, startedAt: number): Promise<{ startS?: number; clocksource?: string; raw: string }> {
  const before = performance.now();
  const raw = await run(agent, "cat /proc/uptime /sys/devices/system/clocksource/clocksource0/current_clocksource");
  const hostS = ((before + performance.now()) / 2 - startedAt) / 1000;
  const [uptime, , clocksource] = raw.split(/\s+/);
  return { startS: uptime && /^\d+\.\d+$/.test(uptime) ? hostS - Number(uptime) : undefined, clocksource, raw };
}

/**
 * Reads the timeline of a domain whose start was called at `startedAt` and answered its Ping at
 * `readyAt` (performance.now()). Waits (up to 2 minutes) for systemd to finish the boot first.
 */
export async function readBootTimeline(agent: AgentClient, startedAt: number, readyAt: number): Promise<BootTimeline> {
  const raw: Record<string, string> = {};
  const got = async (key: string, command: string) => (raw[key] = await run(agent, command).catch((err: Error) => `(failed: ${err.message})`));
  const clock = await guestClock(agent, startedAt).catch((err: Error) => ({ startS: undefined, clocksource: undefined, raw: `(failed: ${err.message})` }));
  raw.clock = clock.raw;
  // systemd-analyze refuses until the boot has finished ("Bootup is not yet finished").
  await got("is-system-running", "timeout 120 systemctl is-system-running --wait");
  const kernelLog = parseKernelLog(await got("dmesg", "dmesg | grep -E 'Run /init as init process|running in system mode'"));
  const analyze = parseAnalyze(await got("systemd-analyze", "systemd-analyze"));
  const chain = parseCriticalChain(await got("critical-chain", "systemd-analyze critical-chain --no-pager qvm-agent.service"));
  const journal = parseJournal(await got("journal", "journalctl -b --no-pager -o short-monotonic -u qvm-agent.service | grep -E 'Started qvm-agent|listening on vsock port'"));
  const userspaceStart = analyze.kernelS === undefined ? undefined : analyze.kernelS + (analyze.initrdS ?? 0);
  const t: BootTimeline = {
    hostStartToPingS: (readyAt - startedAt) / 1000, guestClockStartS: clock.startS, clocksource: clock.clocksource, ...kernelLog, ...analyze,
    agentUnitStartS: chain !== undefined && userspaceStart !== undefined ? userspaceStart + chain : journal.agentUnitStartS,
    agentListeningS: journal.agentListeningS,
  };
  const parsed = [t.guestClockStartS, t.kernelS, t.userspaceS, t.agentUnitStartS, t.agentListeningS].every((x) => x !== undefined);
  return Object.fromEntries(Object.entries(parsed ? t : { ...t, raw }).filter(([, v]) => v !== undefined)) as BootTimeline;
}

/** The timeline in one line, for the log. */
export function describeTimeline(t: BootTimeline): string {
  const s = (x: number | undefined) => (x === undefined ? "?" : `${x.toFixed(2)} s`);
  const initrd = t.initrdS === undefined ? "" : `, initrd ${s(t.initrdS)}`;
  const afterListen = t.hostStartToPingS !== undefined && t.guestClockStartS !== undefined && t.agentListeningS !== undefined
    ? t.hostStartToPingS - t.guestClockStartS - t.agentListeningS : undefined;
  return [
    `guest boot timeline (guest clock, ${t.clocksource ?? "?"}): /init (qvm's initramfs) at ${s(t.initramfsStartS)}, systemd at ${s(t.systemdStartS)},`,
    `agent unit started at ${s(t.agentUnitStartS)}, agent listening at ${s(t.agentListeningS)}; systemd-analyze: kernel ${s(t.kernelS)}${initrd}, userspace ${s(t.userspaceS)}.`,
    `Host clock: start → Ping ${s(t.hostStartToPingS)}, of which ${s(t.guestClockStartS)} before the guest's clock started and ${s(afterListen)} from the agent listening to its Ping answered`,
    t.raw ? "(some output did not parse: raw text in bench.json)" : "",
  ].join(" ").trim();
}
