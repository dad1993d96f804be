// npm run soak: repeated start -> run a command -> stop cycles through a real qvmd, QVM_SOAK_PARALLEL
// domains at once (default 2), until QVM_SOAK_BOOTS boots (default 50) are done; the command is
// QVM_SOAK_COMMAND (default `cat /proc/uptime`). Each boot that fails at any step is kept in
// .qvm/soak/<time>/failure-N/ with this boot's part of the domain's serial console, VMM and vsock
// logs, qvmd's log, and the guest's journal when its agent still answers; a summary (boots,
// failures, start -> agent times) is printed and written as JSON (.qvm/soak/latest links the
// newest run). Never part of the test command: 50 boots under TCG take about 25 minutes on a
// 2-core machine.
//
// Issue 12, item 8: twice a domain reached its login prompt and its agent did not answer in
// 60 s. Its domains boot with the default properties (memory, vcpus, qrexec_timeout) and, unless
// QVM_SOAK_KERNELOPTS says otherwise, with systemd.journald.forward_to_console=1: qvmd stops a
// domain whose agent stays silent, so the console log is the only place where the guest's
// journal (and the agent's own lines) of such a boot survives.
import { mkdirSync, symlinkSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { defaultImagesDir, repoRoot } from "@qvm/images";
import { QvmError, adminV1, domainClassFromWord } from "@qvm/protocol";
import { chooseAccel, removeTestDaemonDirs, startTestDaemon, testDaemonDirs, type TestDaemon } from "@qvm/host-agent/testing";
import { killProcesses, processesMentioning } from "../e2e/fixtures.js";
import { execInDomain } from "./admin-exec.js";
import { keepFailure, markLogs, type Diagnosis } from "./evidence.js";

function intEnv(name: string, fallback: number, min: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min) throw new Error(`${name} must be an integer of at least ${min}, not ${JSON.stringify(raw)}`);
  return n;
}

const BOOTS = intEnv("QVM_SOAK_BOOTS", 50, 1);
const PARALLEL = intEnv("QVM_SOAK_PARALLEL", 2, 1);
const KERNELOPTS = process.env.QVM_SOAK_KERNELOPTS ?? "systemd.journald.forward_to_console=1";
/** The command each boot runs (by /bin/sh, after an echo of a marker that must come back). */
const COMMAND = process.env.QVM_SOAK_COMMAND || "cat /proc/uptime";
/** Bounds on each step, well past qvmd's own (qrexec_timeout 60 s, shutdown_timeout 60 s), so a hang shows as a failure. */
const START_LIMIT_MS = 5 * 60_000;
const RUN_LIMIT_MS = 60_000;
const STOP_LIMIT_MS = 3 * 60_000;
const JOURNAL_LIMIT_MS = 60_000;

const log = (m: string) => process.stderr.write(`soak: ${m}\n`);
const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
const errorCode = (err: unknown) => (err instanceof QvmError ? err.code : err instanceof Error ? err.name : "unknown");
const errorMessage = (err: unknown) => (err instanceof Error ? err.message : String(err));

type Step = "start" | "run" | "stop";

interface BootRow {
  boot: number;
  round: number;
  domain: string;
  ok: boolean;
  /** StartDomain until it returned: qvmd returns once the agent answers Ping. */
  startMs?: number;
  runMs?: number;
  stopMs?: number;
  stopReason?: string;
  guestUptimeS?: number;
  failedAt?: Step;
  error?: { code: string; message: string };
  failure?: string;
  diagnosis?: Diagnosis;
  interrupted?: boolean;
}

// Domains under TCG are not isolated by hardware; qvmd refuses them unless told (issue 12, item 2).
process.env.QVM_ALLOW_TCG = "1";
const accel = chooseAccel();
log(`QVM_ALLOW_TCG=1: this soak opts in to domains under TCG software emulation, which does not isolate them by hardware (accelerator here: ${accel.accel}, ${accel.why})`);

const stamp = new Date().toISOString().replace(/\.\d+Z$/, "Z").replaceAll(":", "-");
const soakRoot = path.join(repoRoot(), ".qvm/soak");
const outDir = path.join(soakRoot, stamp);
const names = Array.from({ length: PARALLEL }, (_, i) => `soak${i + 1}`);
const rows: BootRow[] = [];
let failures = 0;
let interrupted = false;

async function main(): Promise<number> {
  mkdirSync(outDir, { recursive: true });
  rmSync(path.join(soakRoot, "latest"), { force: true });
  symlinkSync(stamp, path.join(soakRoot, "latest"));
  const dirs = testDaemonDirs("soak", defaultImagesDir());
  log(`${BOOTS} boots, ${PARALLEL} domains at once; kernelopts ${JSON.stringify(KERNELOPTS)}; results in ${path.relative(process.cwd(), outDir) || outDir}`);
  const d = await startTestDaemon(dirs);
  const onSignal = (sig: NodeJS.Signals) => {
    if (interrupted) process.exit(130);
    interrupted = true;
    log(`${sig}: stopping; killing the soak's domains (again to give up at once)`);
    void Promise.all(names.map((name) => d.client.killDomain({ name }, { timeoutMs: 10_000 }).catch(() => {}))).then(() => killProcesses(processesMentioning(dirs.base)));
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  try {
    const template = (await d.client.listDomains({})).domains.find((x) => x.class === adminV1.DomainClass.DOMAIN_CLASS_TEMPLATE_VM)?.name;
    if (!template) throw new Error(`no template in ${defaultImagesDir()}: run ./qvm-images build`);
    for (const name of names) {
      const properties: Record<string, string> = KERNELOPTS ? { kernelopts: KERNELOPTS } : {};
      await d.client.createDomain(adminV1.CreateDomainRequest.fromPartial({ name, template, label: "orange", class: domainClassFromWord("AppVM"), properties }));
    }
    const t0 = Date.now();
    let done = 0;
    for (let round = 1; done < BOOTS && !interrupted; round++) {
      const batch = names.slice(0, Math.min(PARALLEL, BOOTS - done));
      const got = await Promise.all(batch.map((name, i) => cycle(d, dirs.dataDir, done + i + 1, round, name)));
      rows.push(...got);
      done += batch.length;
      const failed = rows.filter((r) => !r.ok && !r.interrupted).length;
      log(`round ${round}: ${done}/${BOOTS} boots, ${failed} failed, ${secs(Date.now() - t0)} so far`);
    }
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    for (const name of names) await d.client.killDomain({ name }, { timeoutMs: 30_000 }).catch(() => {}); // halted ones answer "not running"
    const stopped = await Promise.race([d.stop(), new Promise<"late">((r) => setTimeout(() => r("late"), 30_000).unref())]);
    if (stopped === "late") await d.kill();
    writeFileSync(path.join(outDir, "qvmd.log"), d.log());
    await killProcesses(processesMentioning(dirs.base));
    removeTestDaemonDirs(dirs);
  }
  return report();
}

/** One boot of `name`: start (until its agent answers), run a command, shut down cleanly. */
async function cycle(d: TestDaemon, dataDir: string, boot: number, round: number, name: string): Promise<BootRow> {
  const logDir = path.join(dataDir, "logs", name);
  const marks = markLogs(logDir);
  const qvmdFrom = d.log().length;
  const row: BootRow = { boot, round, domain: name, ok: false };
  let step: Step = "start";
  try {
    let t = performance.now();
    await d.client.startDomain({ name }, { timeoutMs: START_LIMIT_MS });
    row.startMs = Math.round(performance.now() - t);

    step = "run";
    t = performance.now();
    const marker = `qvm-soak-${boot}`;
    const r = await execInDomain(d.client, name, `echo ${marker}; ${COMMAND}`, RUN_LIMIT_MS);
    row.runMs = Math.round(performance.now() - t);
    const [first, second] = r.stdout.split("\n");
    if (r.code !== 0 || r.signal || first !== marker) {
      throw new Error(`the command exited ${r.signal || r.code} printing ${JSON.stringify(r.stdout.slice(0, 200))}, stderr ${JSON.stringify(r.stderr.slice(0, 200))}`);
    }
    if (COMMAND === "cat /proc/uptime") row.guestUptimeS = Number(second?.split(" ")[0]);

    step = "stop";
    t = performance.now();
    const { reason } = await d.client.shutdownDomain({ name, wait: true, force: true }, { timeoutMs: STOP_LIMIT_MS });
    row.stopMs = Math.round(performance.now() - t);
    row.stopReason = reason;
    if (!/powered off/.test(reason)) throw new Error(`${name} did not power off by itself: ${reason}`);
    row.ok = true;
    log(`boot ${boot} ${name}: agent after ${secs(row.startMs)}, command ${secs(row.runMs)}, shutdown ${secs(row.stopMs)}`);
  } catch (err) {
    if (interrupted) {
      row.interrupted = true;
      return row;
    }
    row.failedAt = step;
    row.error = { code: errorCode(err), message: errorMessage(err) };
    const n = ++failures;
    row.failure = `failure-${n}`;
    const dir = path.join(outDir, row.failure);
    const journal = await guestJournal(d, name);
    await d.client.killDomain({ name }, { timeoutMs: 30_000 }).catch(() => {}); // after a failed start qvmd has stopped it already
    await waitHalted(d, name);
    row.diagnosis = keepFailure(dir, { logDir, marks, qvmdLog: d.log().slice(qvmdFrom), journal, record: { ...row } });
    const seen = [
      row.diagnosis.loginPrompt && "login prompt reached",
      row.diagnosis.agentListening && "agent said it listens",
      row.diagnosis.agentUnitFailed && "qvm-agent.service failed",
      row.diagnosis.vsockPanic && `vhost-device-vsock panicked (${row.diagnosis.vsockLastLine})`,
    ].filter(Boolean);
    log(`boot ${boot} ${name}: FAILED at ${step}: ${row.error.code}: ${row.error.message}`);
    log(`  kept in ${path.relative(process.cwd(), dir) || dir}${seen.length ? `; ${seen.join("; ")}` : ""}`);
  }
  return row;
}

/** The guest's journal for this boot, and the agent's part of it, while the domain runs and its agent answers. */
async function guestJournal(d: TestDaemon, name: string): Promise<Record<string, string>> {
  const state = await d.client.getDomain({ name }, { timeoutMs: 10_000 }).then(
    (r) => r.domain?.state,
    () => undefined,
  );
  if (state !== adminV1.PowerState.POWER_STATE_RUNNING) {
    return { "journal-unreachable.txt": `${name} was not running when the failure was kept (qvmd stops a domain whose agent does not answer at start); its journal went with its root overlay. With the default QVM_SOAK_KERNELOPTS the journal is in console.log.\n` };
  }
  const files: Record<string, string> = {};
  for (const [file, command] of [
    ["journal.txt", "journalctl -b --no-pager -o short-monotonic"],
    ["agent-journal.txt", "journalctl -b --no-pager -o short-monotonic -u qvm-agent.service"],
  ] as const) {
    try {
      const r = await execInDomain(d.client, name, command, JOURNAL_LIMIT_MS, { user: "root" });
      files[file] = r.stdout + (r.stderr ? `\n--- stderr ---\n${r.stderr}` : "");
    } catch (err) {
      files[file.replace(/\.txt$/, "-unreachable.txt")] = `${errorCode(err)}: ${errorMessage(err)}\n`;
      break;
    }
  }
  return files;
}

async function waitHalted(d: TestDaemon, name: string): Promise<void> {
  const end = Date.now() + 30_000;
  while (Date.now() < end) {
    const state = await d.client.getDomain({ name }, { timeoutMs: 10_000 }).then(
      (r) => r.domain?.state,
      () => undefined,
    );
    if (state === adminV1.PowerState.POWER_STATE_HALTED) return;
    await new Promise((r) => setTimeout(r, 250));
  }
}

function stats(xs: number[]): { n: number; min: number; median: number; max: number } | undefined {
  if (!xs.length) return undefined;
  const s = [...xs].sort((a, b) => a - b);
  return { n: s.length, min: s[0]!, median: s[Math.floor(s.length / 2)]!, max: s.at(-1)! };
}

function report(): number {
  const counted = rows.filter((r) => !r.interrupted);
  const failed = counted.filter((r) => !r.ok);
  const startMs = stats(counted.flatMap((r) => (r.startMs === undefined ? [] : [r.startMs])));
  const stopMs = stats(counted.flatMap((r) => (r.stopMs === undefined ? [] : [r.stopMs])));
  const summary = {
    date: new Date().toISOString(),
    accel: accel.accel,
    allowTcg: true,
    config: { boots: BOOTS, parallel: PARALLEL, kernelopts: KERNELOPTS, command: COMMAND },
    interrupted,
    boots: counted.length,
    failures: failed.length,
    failuresAt: { start: failed.filter((r) => r.failedAt === "start").length, run: failed.filter((r) => r.failedAt === "run").length, stop: failed.filter((r) => r.failedAt === "stop").length },
    bootToAgentMs: startMs,
    shutdownMs: stopMs,
    rows,
  };
  writeFileSync(path.join(outDir, "summary.json"), `${JSON.stringify(summary, null, 2)}\n`);
  const line = (label: string, s: typeof startMs) => (s ? `  ${label}: min ${secs(s.min)}, median ${secs(s.median)}, max ${secs(s.max)} (${s.n} boots)` : `  ${label}: none`);
  console.log(`\nsoak: ${counted.length} boots (${PARALLEL} at a time, ${accel.accel}), ${failed.length} failed${interrupted ? " (interrupted)" : ""}`);
  console.log(line("boot to agent (start → agent answers)", startMs));
  console.log(line("shutdown", stopMs));
  const byNumber = (r: BootRow) => Number(r.failure?.replace("failure-", "") ?? 0);
  for (const r of [...failed].sort((a, b) => byNumber(a) - byNumber(b))) {
    const d = r.diagnosis;
    const notes = d ? [d.loginPrompt && "login prompt", d.agentUnitFailed && "agent unit failed", d.vsockPanic && "vsock panic"].filter(Boolean).join(", ") : "";
    console.log(`  ${r.failure}: boot ${r.boot} ${r.domain} at ${r.failedAt}: ${r.error?.code}: ${r.error?.message.slice(0, 300)}${notes ? ` [${notes}]` : ""}`);
  }
  log(`wrote ${path.relative(process.cwd(), path.join(outDir, "summary.json"))}`);
  return interrupted ? 130 : failed.length ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
