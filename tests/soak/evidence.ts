// What the soak keeps of a failed boot: the part of each log that this boot wrote (qvmd appends
// every boot of a domain to the same console, VMM and vsock logs), qvmd's own log since the round
// began, the guest's journal when its agent still answers, and a first reading of them.
import { closeSync, copyFileSync, existsSync, mkdirSync, openSync, readdirSync, readSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";

/** The per-domain logs qvmd writes in DATA/logs/NAME (see runtimePaths in the QEMU driver). */
export const DOMAIN_LOGS = ["console.log", "vmm.log", "vsock.log"] as const;
export type DomainLog = (typeof DOMAIN_LOGS)[number];

/** Where each of a domain's logs ended before a boot, so that the boot's own part can be cut out. */
export interface LogMarks {
  at: number;
  sizes: Record<DomainLog, number>;
}

export function markLogs(logDir: string): LogMarks {
  const sizes = {} as Record<DomainLog, number>;
  for (const f of DOMAIN_LOGS) sizes[f] = existsSync(path.join(logDir, f)) ? statSync(path.join(logDir, f)).size : 0;
  return { at: Date.now(), sizes };
}

/** The bytes `file` gained after `from`; all of it when it shrank meanwhile (capped or rotated). */
export function readSince(file: string, from: number): Buffer {
  if (!existsSync(file)) return Buffer.alloc(0);
  const fd = openSync(file, "r");
  try {
    const size = statSync(file).size;
    const start = size >= from ? from : 0;
    const buf = Buffer.alloc(size - start);
    let got = 0;
    while (got < buf.length) {
      const n = readSync(fd, buf, got, buf.length - got, start + got);
      if (n === 0) break;
      got += n;
    }
    return buf.subarray(0, got);
  } finally {
    closeSync(fd);
  }
}

/** A first reading of a failed boot's logs: what a person looks at first. */
export interface Diagnosis {
  /** The serial getty printed its login prompt: the guest booted to the end. */
  loginPrompt: boolean;
  /** The guest agent wrote that it listens (visible when the journal goes to the console). */
  agentListening: boolean;
  /** systemd reported qvm-agent.service failing or its process exiting. */
  agentUnitFailed: boolean;
  /** vhost-device-vsock's worker panicked: the domain's vsock device is dead from then on. */
  vsockPanic: boolean;
  /** The last line of the vsock log, when it has one. */
  vsockLastLine: string;
}

const clean = (s: string) => s.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, "").replace(/[^\x20-\x7e\n]/g, "");

export function diagnose(consoleText: string, vsockText: string): Diagnosis {
  const con = clean(consoleText);
  const vsockLines = clean(vsockText).split("\n").map((l) => l.trim()).filter(Boolean);
  return {
    loginPrompt: /^\S+ login: /m.test(con),
    agentListening: /qvm-agent: version .* listening/.test(con),
    agentUnitFailed: /qvm-agent\.service: (Failed|Main process exited)|Failed to start qvm-agent/i.test(con),
    vsockPanic: vsockLines.some((l) => l.includes("panicked at")),
    vsockLastLine: vsockLines.at(-1)?.slice(0, 300) ?? "",
  };
}

export interface FailureRecord {
  [key: string]: unknown;
}

/**
 * Writes failure-N: `info.json` (the record and its diagnosis), this boot's part of each domain
 * log, qvmd's log since the round began, and the journal texts given (or why there is none).
 * Rotated siblings of the logs written since the boot began (console.log.1, ...) are copied whole.
 */
export function keepFailure(
  dir: string,
  opts: { logDir: string; marks: LogMarks; qvmdLog: string; journal: Record<string, string>; record: FailureRecord },
): Diagnosis {
  mkdirSync(dir, { recursive: true });
  const texts = {} as Record<DomainLog, Buffer>;
  for (const f of DOMAIN_LOGS) {
    texts[f] = readSince(path.join(opts.logDir, f), opts.marks.sizes[f]);
    writeFileSync(path.join(dir, f), texts[f]);
  }
  if (existsSync(opts.logDir)) {
    for (const name of readdirSync(opts.logDir)) {
      const rotated = DOMAIN_LOGS.some((f) => name.startsWith(`${f}.`) || name.startsWith(`${f.replace(/\.log$/, "")}.`)) && !(DOMAIN_LOGS as readonly string[]).includes(name);
      const file = path.join(opts.logDir, name);
      if (rotated && statSync(file).mtimeMs >= opts.marks.at) copyFileSync(file, path.join(dir, `rotated-${name}`));
    }
  }
  writeFileSync(path.join(dir, "qvmd.log"), opts.qvmdLog);
  for (const [name, text] of Object.entries(opts.journal)) writeFileSync(path.join(dir, name), text);
  const diagnosis = diagnose(texts["console.log"].toString("latin1"), texts["vsock.log"].toString("latin1"));
  writeFileSync(path.join(dir, "info.json"), `${JSON.stringify({ ...opts.record, diagnosis }, null, 2)}\n`);
  return diagnosis;
}
