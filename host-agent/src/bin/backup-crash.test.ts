// Kills a real qvmd (SIGKILL) at random points of a backup restore and of a backup create, with
// domains whose volumes are real qcow2 files (no VM is ever started). After each restart the state
// must be whole: every stored domain has a private volume qemu-img accepts, no half-made volume
// directory survives, a restored domain is there byte for byte or not at all, the domains that
// were there before are untouched; running the restore again completes it. A backup cut short
// leaves at most a vault file that verify refuses as damaged, and no scratch file survives the
// next backup. The kill points are drawn from a seed printed with every failure
// (QVM_TEST_SEED=… replays a run).
import { execFileSync, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { copyFileSync, existsSync, mkdirSync, readdirSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import type { ClientReadableStream } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { adminV1, domainClassFromWord, type QvmError } from "@qvm/protocol";
import { removeTestDaemonDirs, startTestDaemon, testDaemonDirs, type TestDaemon } from "../testing/test-daemon.js";
import { collectStream } from "../testing/streams.js";

const PASS = "backup crash test passphrase";
/** Domains in the backup, each with its own data; "keep" is never backed up, "tmpl" is their template. */
const BACKED_UP = ["a", "b", "c"];
/** Random bytes in each private volume: what makes writing volumes take a while (deflate, cipher). */
const NOISE_BYTES = 5 * 1024 * 1024;
const seed = Number(process.env.QVM_TEST_SEED ?? Date.now() % 100000);
const random = rng(seed);
const dirs = testDaemonDirs("backupkill");
const refDir = path.join(dirs.base, "ref");
/** What each round did, printed at the end: kill points, what the kill left on disk, phase timings. */
const journal: string[] = [];

/** Small deterministic generator so a failing run can be replayed from the printed seed. */
function rng(s0: number): () => number {
  let s = s0 >>> 0;
  return () => ((s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32);
}

const msg = (what: string): string => `seed ${seed} (QVM_TEST_SEED=${seed} replays it): ${what}`;
const volumesDir = (): string => path.join(dirs.dataDir, "volumes");
const privateOf = (name: string): string => path.join(volumesDir(), name, "private.qcow2");
const refOf = (name: string): string => path.join(refDir, `${name}.qcow2`);

function guestWrite(file: string, offset: string, byte: number, length: string): void {
  execFileSync("qemu-io", ["-f", "qcow2", "-c", `write -P ${byte} ${offset} ${length}`, file], { stdio: "ignore" });
}

/** Whether qemu-img check accepts the qcow2 file (no corruption, no leaked clusters). */
function imageOk(file: string): boolean {
  return spawnSync("qemu-img", ["check", "-U", "-f", "qcow2", file], { stdio: "ignore" }).status === 0;
}

/** Whether two qcow2 files show the guest the same bytes (`qemu-img compare`: holes cost nothing). */
function sameGuestView(a: string, b: string): boolean {
  const r = spawnSync("qemu-img", ["compare", "-U", "-f", "qcow2", "-F", "qcow2", a, b], { encoding: "utf8" });
  if (r.status === 0) return true;
  if (r.status === 1) return false;
  throw new Error(`qemu-img compare ${a} ${b}: ${r.stderr}`);
}

const collect = (stream: ClientReadableStream<adminV1.BackupProgress>): Promise<adminV1.BackupProgress[]> => collectStream(stream, (e) => d.client.errorOf(e));

/** When a call's phases begin: its first progress message (the key is derived: scrypt), its first volume write, its end. */
interface Timing {
  firstMs: number;
  writeMs: number;
  endMs: number;
}

async function timed(stream: ClientReadableStream<adminV1.BackupProgress>): Promise<Timing> {
  const t0 = Date.now();
  const t: Timing = { firstMs: -1, writeMs: -1, endMs: -1 };
  stream.on("data", (m: adminV1.BackupProgress) => {
    if (t.firstMs < 0) t.firstMs = Date.now() - t0;
    if (t.writeMs < 0 && m.phase === "write") t.writeMs = Date.now() - t0;
  });
  await collect(stream);
  t.endMs = Date.now() - t0;
  return t;
}

/**
 * Round `round` of `rounds`' kill point: the first round while the key is derived (nothing is
 * written yet), the second while the backup is verified (a restore's first step; none in a
 * create), the others spread over the writing, one slice each, the last one past the end.
 */
function killPoint(round: number, rounds: number, t: Timing): number {
  const slices: Array<[number, number]> = [[0, t.firstMs]];
  if (t.writeMs - t.firstMs > 20) slices.push([t.firstMs, t.writeMs]);
  const from = slices.at(-1)![1];
  const n = rounds - slices.length;
  for (let i = 0; i < n; i++) slices.push([from + (i / n) * (t.endMs * 1.05 - from), from + ((i + 1) / n) * (t.endMs * 1.05 - from)]);
  const [a, b] = slices[round]!;
  return Math.floor(a + random() * (b - a));
}

const createReq = (file: string) => ({ file, domains: BACKED_UP, passphrase: PASS, includeRoot: false, incrementalFrom: "", chain: [] });
const restoreReq = (file: string, renameConflicts: boolean) => ({ file, chain: [], passphrase: PASS, domains: [], renameConflicts });

/** Vault scratch files in DATA/tmp (of any pid). */
function scratchFiles(): string[] {
  const tmp = path.join(dirs.dataDir, "tmp");
  return existsSync(tmp) ? readdirSync(tmp).filter((n) => n.startsWith("vault-")) : [];
}

/** What a dead qvmd left on disk, for the log: half-made and marked volume directories, scratch files. */
function leftovers(): string {
  const entries = readdirSync(volumesDir());
  const partial = entries.filter((n) => n.includes(".partial-"));
  const marked = entries.filter((n) => existsSync(path.join(volumesDir(), n, ".restoring")));
  return [partial.length ? `partial ${partial.join(" ")}` : "", marked.length ? `marked ${marked.join(" ")}` : "", scratchFiles().length ? `${scratchFiles().length} scratch` : ""].filter(Boolean).join("; ");
}

async function domainsOf(): Promise<Map<string, adminV1.Domain>> {
  return new Map((await d.client.listDomains({})).domains.map((x) => [x.name, x]));
}

/**
 * What every restart must find: each stored domain's volume directory with a sound private
 * volume, one directory per domain (half-made ones removed, unstored ones kept aside in
 * .orphans), the domains of `before` unchanged, their volumes as in `refs`.
 */
async function checkWhole(before: Map<string, adminV1.Domain>, refs: Map<string, string>): Promise<Map<string, adminV1.Domain>> {
  const now = await domainsOf();
  const entries = readdirSync(volumesDir()).filter((n) => n !== ".orphans");
  expect(entries.filter((n) => n.includes(".partial-")), msg("a half-made volume directory survived the restart")).toEqual([]);
  expect(entries.sort(), msg("one volume directory per stored domain")).toEqual([...now.keys()].sort());
  for (const name of now.keys()) expect(imageOk(privateOf(name)), msg(`qemu-img check of ${name}'s private volume`)).toBe(true);
  for (const [name, dom] of before) expect(now.get(name), msg(`${name}, there before, is lost or changed`)).toEqual(dom);
  for (const [name, ref] of refs) if (now.has(name)) expect(sameGuestView(ref, privateOf(name)), msg(`${name}'s private volume differs from ${ref}`)).toBe(true);
  return now;
}

/** Runs `call`, SIGKILLs qvmd after `killAfterMs`; whether the call had finished first. */
async function killDuring(killAfterMs: number, call: () => Promise<unknown>): Promise<boolean> {
  let killed = false;
  const timer = setTimeout(() => {
    killed = true;
    d.proc.kill("SIGKILL");
  }, killAfterMs);
  let finished = false;
  try {
    await call();
    finished = true;
  } catch (err) {
    expect(killed, msg(`the call failed before the kill: ${(err as Error).message}`)).toBe(true);
    expect((err as QvmError).code, msg((err as Error).message)).toBe("DAEMON_UNAVAILABLE");
  } finally {
    clearTimeout(timer);
    await d.kill();
  }
  return finished;
}

let d: TestDaemon;
/** The backup of a, b and c every restore reads, and how long the last uninterrupted backup took. */
let vault: string;
let createTiming: Timing;

beforeAll(async () => {
  mkdirSync(refDir);
  d = await startTestDaemon(dirs);
  await d.client.createDomain({ name: "tmpl", class: domainClassFromWord("TemplateVM"), template: "", label: "black", properties: {} });
  for (const name of [...BACKED_UP, "keep"]) await d.client.createDomain({ name, class: domainClassFromWord("AppVM"), template: "tmpl", label: "red", properties: {} });
  // qvmd makes a 2 GiB ext4 private volume; its zero blocks alone cost a backup ~1.5 s on 2 cores.
  // The engine does not care what is inside: each is replaced by a small qcow2 of its own (still
  // halted, never opened by qvmd meanwhile) holding a few patterns and some incompressible data,
  // which keeps the restore in its volume-writing part for a while.
  [...BACKED_UP, "keep"].forEach((name, i) => {
    const file = privateOf(name);
    execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", file, "256M"]);
    for (let j = 0; j < 2; j++) guestWrite(file, `${8 + j * 100}M`, 0x11 * (i + 1) + j, "1M");
    const noise = path.join(dirs.base, `${name}.noise`);
    writeFileSync(noise, randomBytes(NOISE_BYTES));
    execFileSync("qemu-io", ["-f", "qcow2", "-c", `write -s ${noise} 150M ${NOISE_BYTES}`, file], { stdio: "ignore" });
    copyFileSync(file, refOf(name));
  });
  copyFileSync(privateOf("tmpl"), refOf("tmpl"));
  vault = path.join(dirs.base, "abc.vault");
  createTiming = await timed(d.client.createBackup(createReq(vault)));
  journal.push(`create ${createTiming.firstMs}/${createTiming.writeMs}/${createTiming.endMs} ms`);
}, 60_000);

afterAll(async () => {
  await d?.kill();
  console.log(`backup-crash: seed ${seed}; ${journal.join(", ")}`);
  removeTestDaemonDirs(dirs);
});

describe("SIGKILL of qvmd during a backup restore", () => {
  it("leaves each restored domain whole or absent, the others untouched; running it again completes it", async () => {
    const refs = new Map([...BACKED_UP, "keep", "tmpl"].map((n) => [n, refOf(n)]));
    // The restored copies (a-1 … with --rename-conflicts) must equal the originals too.
    for (const n of BACKED_UP) refs.set(`${n}-1`, refOf(n));

    // One uninterrupted restore (as a-1, b-1, c-1): how long a restore takes here.
    let restoreTiming = await timed(d.client.restoreBackup(restoreReq(vault, true)));
    journal.push(`restore ${restoreTiming.firstMs}/${restoreTiming.writeMs}/${restoreTiming.endMs} ms`);
    await checkWhole(new Map(), refs);
    for (const n of BACKED_UP) await d.client.removeDomain({ name: `${n}-1` });

    const rounds = 6;
    for (let round = 0; round < rounds; round++) {
      // Even rounds: a, b and c are there, the backup's copies come as a-1 …; odd rounds: they
      // were removed and come back under their own names.
      const rename = round % 2 === 0;
      if (!rename) for (const n of BACKED_UP) await d.client.removeDomain({ name: n });
      const targets = BACKED_UP.map((n) => (rename ? `${n}-1` : n));
      const before = await domainsOf();
      for (const t of targets) expect(before.has(t)).toBe(false);

      const killAfter = killPoint(round, rounds, restoreTiming);
      const finished = await killDuring(killAfter, () => collect(d.client.restoreBackup(restoreReq(vault, rename))));
      const left = leftovers();
      d = await startTestDaemon(dirs);
      const after = await checkWhole(before, refs);
      // One store write: all of the backup's domains are stored, or none.
      const stored = targets.filter((t) => after.has(t));
      expect([0, targets.length], msg(`round ${round}, killed after ${killAfter} ms: restored only ${stored.join(", ")}`)).toContain(stored.length);
      if (finished) expect(stored, msg("a finished restore")).toEqual(targets);
      if (stored.length === 0) {
        // Run again, uninterrupted: it completes, and times the next round's kill (on a freshly
        // started qvmd, as every killed restore is).
        const stream = d.client.restoreBackup(restoreReq(vault, rename));
        const result = new Promise<string[]>((resolve) =>
          stream.on("data", (m: adminV1.BackupProgress) => {
            if (m.result) resolve(m.result.domains.map((x) => x.name));
          }),
        );
        restoreTiming = await timed(stream);
        journal.push(`r${round} kill@${killAfter} [${left}] rerun ${restoreTiming.firstMs}/${restoreTiming.writeMs}/${restoreTiming.endMs} ms`);
        expect(await result, msg("the re-run")).toEqual(targets);
        expect(scratchFiles(), msg("scratch files after a restore")).toEqual([]);
        const done = await checkWhole(before, refs);
        for (const t of targets) expect(done.has(t), msg(`${t} after the re-run`)).toBe(true);
      } else journal.push(`r${round} kill@${killAfter} [${left}] committed`);
      if (rename) for (const t of targets) await d.client.removeDomain({ name: t });
    }
  }, 120_000);
});

describe("SIGKILL of qvmd during a backup create", () => {
  it("leaves the domains untouched and at most a vault file verify refuses; the next backup succeeds", async () => {
    const refs = new Map([...BACKED_UP, "keep", "tmpl"].map((n) => [n, refOf(n)]));
    const rounds = 3;
    for (let round = 0; round < rounds; round++) {
      const before = await domainsOf();
      const file = path.join(dirs.base, `killed-${round}.vault`);
      const killAfter = killPoint(round, rounds, createTiming);
      const deadPid = d.proc.pid!;
      const finished = await killDuring(killAfter, () => collect(d.client.createBackup(createReq(file))));
      const left = `${leftovers()} ${existsSync(file) ? `vault ${statSync(file).size} B` : ""}`.trim();
      d = await startTestDaemon(dirs);
      await checkWhole(before, refs);
      if (existsSync(file)) {
        const verified = collect(d.client.verifyBackup({ file, chain: [], passphrase: PASS })).then(
          (m) => m.at(-1)!.result!.domains.map((x) => x.name),
          (e: QvmError) => e,
        );
        const r = await verified;
        if (Array.isArray(r)) {
          // Accepted: only a whole backup (the kill came after it was written).
          expect(r, msg(`round ${round}: ${file} accepted`)).toEqual(BACKED_UP);
          journal.push(`c${round} kill@${killAfter} [${left}] whole`);
        } else {
          expect(finished, msg(`round ${round}: a finished backup refused: ${r.message}`)).toBe(false);
          expect(r.code, msg(`round ${round}, killed after ${killAfter} ms: verify of the leftover ${file}: ${r.message}`)).toBe("CORRUPT_STATE");
          journal.push(`c${round} kill@${killAfter} [${left}] refused`);
        }
      } else {
        expect(finished, msg("a finished backup left no file")).toBe(false);
        journal.push(`c${round} kill@${killAfter} [${left}] no file`);
      }
      const next = path.join(dirs.base, `next-${round}.vault`);
      // Uninterrupted, on a freshly started qvmd as every killed one is: it times the next round's kill.
      createTiming = await timed(d.client.createBackup(createReq(next)));
      expect(scratchFiles(), msg(`scratch files (the dead qvmd's: vault-${deadPid}-*) after the next backup`)).toEqual([]);
      const m = await collect(d.client.verifyBackup({ file: next, chain: [], passphrase: PASS }));
      expect(m.at(-1)!.result!.domains.map((x) => x.name)).toEqual(BACKED_UP);
    }
  }, 120_000);
});
