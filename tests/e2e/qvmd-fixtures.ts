// Layered end-to-end fixtures around a real qvmd: withDaemon (qvmd on temporary directories) ->
// withDomain (a domain made through its admin API) -> withService (a long-running `qvm` command
// talking to it: the web shell server, an ask prompt). Each layer is an AsyncDisposable that owns
// the layers made on top of it and releases them first, newest first. Its dispose cleans up, then
// checks that nothing leaked and throws an error naming what did, after removing it, so that one
// leaking test does not break the next file.
//
// A file shares one daemon and its booted domains across its tests (TCG boots are slow): it makes
// them in beforeAll and disposes the daemon in afterAll (Node 20 has Symbol.asyncDispose but no
// AsyncDisposableStack). A test holds what it needs only for itself with `await using`.
import { existsSync, readdirSync, rmSync } from "node:fs";
import path from "node:path";
import { execa } from "execa";
import { repoRoot } from "@qvm/images";
import { QvmError, adminV1 } from "@qvm/protocol";
import { removeTestDaemonDirs, startTestDaemon, testDaemonDirs, type TestDaemon, type TestDaemonDirs } from "@qvm/host-agent/testing";
import { alive, describeProcess, descendantsOf, imagesDir, killProcesses, pollUntil, processesMentioning, socketsUnder } from "./fixtures.js";
import { e2eVmm } from "./e2e-vmm.js";

/** How long qvmd may take to answer at start and to exit at SIGTERM. */
const QVMD_START_MS = 15_000;
const QVMD_STOP_MS = 30_000;
/** How long a killed domain's or a stopped service's processes and files may take to go. */
const GONE_MS = 5_000;
/** How long a service may take to print what says it is ready, and to exit when asked. */
const SERVICE_READY_MS = 30_000;
const SERVICE_STOP_MS = 15_000;

/** A resource a fixture owns; `what` names it in leak reports. */
interface Layer extends AsyncDisposable {
  readonly what: string;
}

/** A leak or a failed cleanup found by a fixture's dispose; the message says what and where. */
export class LeakError extends Error {
  override readonly name = "LeakError";
}

/** The `qvm` CLI of this checkout (builds its bundle on first use). */
const qvmBin = () => path.join(repoRoot(), "qvm");

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Whether `p` settles within `ms`. */
async function within(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<false>((r) => (timer = setTimeout(() => r(false), ms)));
  try {
    return await Promise.race([p.then(() => true), late]);
  } finally {
    clearTimeout(timer);
  }
}

function running(proc: TestDaemon["proc"]): boolean {
  return proc.exitCode === null && proc.signalCode === null;
}

/** What one dispose found: its own leaks and failures, and those of the layers it released. */
class Findings {
  private readonly own: string[] = [];
  private readonly layers: string[] = [];

  constructor(private readonly what: string) {}

  add(problem: string): void {
    this.own.push(problem);
  }

  /** Releases `layers` newest first; one that throws is recorded and the others still run. */
  async release(layers: Layer[]): Promise<void> {
    for (let l = layers.pop(); l; l = layers.pop()) {
      try {
        await l[Symbol.asyncDispose]();
      } catch (err) {
        this.layers.push(err instanceof LeakError ? err.message : `${l.what}: ${messageOf(err)}`);
      }
    }
  }

  /** Processes still mentioning `marker` after GONE_MS are recorded and killed. */
  async reap(marker: string): Promise<void> {
    if (await pollUntil(() => processesMentioning(marker).length === 0, GONE_MS)) return;
    const pids = processesMentioning(marker);
    this.add(`processes still running: ${pids.map(describeProcess).join(", ")} (killed)`);
    await killProcesses(pids);
  }

  /** One line per layer that leaked, naming it and what it left. */
  throwIfAny(): void {
    const lines = [...this.layers, ...(this.own.length ? [`${this.what}: ${this.own.join("; ")}`] : [])];
    if (lines.length) throw new LeakError(lines.join("\n"));
  }
}

export interface DaemonOptions {
  /** More qvmd arguments, e.g. `--ask-timeout 6`; also used when the daemon is restarted. */
  args?: string[];
  /** The network namespace qvmd runs in (a TestInternet's hostNetns); also used when restarted. */
  netns?: string;
}

/** A real qvmd on temporary directories (the images the e2e setup built), for one test file. */
export class E2eDaemon implements Layer {
  readonly what: string;
  private readonly layers: Layer[] = [];
  private disposed = false;

  private constructor(
    readonly dirs: TestDaemonDirs,
    private readonly args: string[],
    private readonly netns: string | undefined,
    private qvmd: TestDaemon,
  ) {
    this.what = `qvmd on ${dirs.base}`;
  }

  static async start(label: string, opts: DaemonOptions = {}): Promise<E2eDaemon> {
    const dirs = testDaemonDirs(label, imagesDir());
    const args = opts.args ?? [];
    try {
      const daemon = new E2eDaemon(dirs, args, opts.netns, await startTestDaemon(dirs, QVMD_START_MS, args, { netns: opts.netns }));
      // QVM_VMM=cloud-hypervisor runs the suite's domains on that backend (e2e-vmm.ts).
      if (e2eVmm() !== "qemu") await daemon.client.setProperty({ domain: "", name: "default_vmm", value: e2eVmm() });
      return daemon;
    } catch (err) {
      await killProcesses(processesMentioning(dirs.base));
      removeTestDaemonDirs(dirs);
      throw err;
    }
  }

  /** The admin client of the qvmd running now (a restart makes a new one). */
  get client(): TestDaemon["client"] {
    return this.qvmd.client;
  }

  get proc(): TestDaemon["proc"] {
    return this.qvmd.proc;
  }

  /** What the qvmd running now wrote to stderr. */
  log(): string {
    return this.qvmd.log();
  }

  /** The environment the `qvm` CLI needs to reach this qvmd. */
  get env(): Record<string, string> {
    return { QVM_RUNTIME_DIR: this.dirs.runtimeDir, NO_COLOR: "1" };
  }

  /** Runs the `qvm` CLI against this qvmd; resolves with its exit code and output (never rejects). */
  qvm(args: readonly string[], input?: string | Buffer) {
    return execa(qvmBin(), args, { env: this.env, reject: false, ...(input === undefined ? { stdin: "ignore" as const } : { input }) });
  }

  /** SIGKILLs qvmd, as a crash: its domains keep running. */
  kill(): Promise<void> {
    return this.qvmd.kill();
  }

  /** Starts a new qvmd on the same directories, once the current one is gone (SIGTERM if it still runs). */
  async restart(): Promise<void> {
    if (running(this.qvmd.proc)) await this.qvmd.stop();
    this.qvmd = await startTestDaemon(this.dirs, QVMD_START_MS, this.args, { netns: this.netns });
  }

  /** Takes ownership of a layer made on this daemon (released before the daemon goes). */
  own<T extends Layer>(layer: T): T {
    this.layers.push(layer);
    return layer;
  }

  /** Gives up ownership of a layer that is being released by its holder. */
  disown(layer: Layer): void {
    const i = this.layers.indexOf(layer);
    if (i >= 0) this.layers.splice(i, 1);
  }

  /**
   * Releases the layers on top, kills every domain still running through the admin API (tests
   * leave shared domains running), stops qvmd, and then checks that no process mentions the test
   * directory, no per-domain runtime directory is left and no socket remains. Throws a LeakError
   * naming each leak, after killing the processes and removing the directories.
   */
  async [Symbol.asyncDispose](): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    const found = new Findings(this.what);
    // A test may have left qvmd killed (crash tests): a new one re-attaches to the VMMs to kill them.
    if (!running(this.qvmd.proc)) {
      await this.restart().catch((err) => found.add(`qvmd did not start again for cleanup: ${messageOf(err)}`));
    }
    await found.release(this.layers);
    const { domains } = await this.client.listDomains({}).catch(() => ({ domains: [] as adminV1.Domain[] }));
    for (const dom of domains) await this.client.killDomain({ name: dom.name }).catch(() => {}); // a halted one answers "not running"
    if (!(await within(this.qvmd.stop(), QVMD_STOP_MS))) {
      found.add(`qvmd did not exit within ${QVMD_STOP_MS / 1000} s of SIGTERM (killed)`);
      await this.qvmd.kill();
    }

    await found.reap(this.dirs.base);
    const domainsDir = path.join(this.dirs.runtimeDir, "domains");
    const domainDirs = existsSync(domainsDir) ? readdirSync(domainsDir) : [];
    if (domainDirs.length) found.add(`per-domain runtime directories left: ${domainDirs.map((n) => path.join(domainsDir, n)).join(", ")}`);
    const sockets = socketsUnder(this.dirs.base);
    if (sockets.length) found.add(`sockets left: ${sockets.join(", ")}`);
    removeTestDaemonDirs(this.dirs);
    found.throwIfAny();
  }
}

/** Starts a qvmd for one test file on fresh temporary directories named after `label`. */
export function withDaemon(label: string, opts: DaemonOptions = {}): Promise<E2eDaemon> {
  return E2eDaemon.start(label, opts);
}

export interface DomainOptions {
  label: string;
  /** Default: debian-12, the template the e2e setup builds. */
  template?: string;
  properties?: Record<string, string>;
  /** Start it (returns once its agent answers). */
  start?: boolean;
}

/** A domain made through the admin API, owned by its daemon. */
export class E2eDomain implements Layer {
  readonly what: string;
  /** Its runtime directory while it runs: `<runtimeDir>/domains/<name>`. */
  readonly runtimeDir: string;
  private disposed = false;

  constructor(
    readonly daemon: E2eDaemon,
    readonly name: string,
  ) {
    this.what = `domain ${name}`;
    this.runtimeDir = path.join(daemon.dirs.runtimeDir, "domains", name);
  }

  /** Kills it, removes it, and checks that its runtime directory and processes are gone. */
  async [Symbol.asyncDispose](): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    this.daemon.disown(this);
    const found = new Findings(this.what);
    const { client } = this.daemon;
    await client.killDomain({ name: this.name }).catch(() => {}); // a halted one answers "not running"
    await client.removeDomain({ name: this.name }).catch((err) => {
      if (!(err instanceof QvmError && err.code === "NOT_FOUND")) found.add(`not removed: ${messageOf(err)}`);
    });
    await found.reap(`${this.runtimeDir}/`);
    if (!(await pollUntil(() => !existsSync(this.runtimeDir), GONE_MS))) {
      found.add(`runtime directory left: ${this.runtimeDir} (removed)`);
      rmSync(this.runtimeDir, { recursive: true, force: true });
    }
    found.throwIfAny();
  }
}

/** Creates domain `name` on `daemon` (and starts it with `start`); the daemon owns it until it is disposed. */
export async function withDomain(daemon: E2eDaemon, name: string, opts: DomainOptions): Promise<E2eDomain> {
  await daemon.client.createDomain(adminV1.CreateDomainRequest.fromPartial({ name, template: opts.template ?? "debian-12", label: opts.label, properties: opts.properties ?? {} }));
  const dom = daemon.own(new E2eDomain(daemon, name));
  if (opts.start) await daemon.client.startDomain({ name });
  return dom;
}

export interface ServiceOptions {
  /** Ready once stdout or stderr matches this (e.g. the URL the web shell prints). */
  ready?: RegExp;
  /** Keep stdin open for answers (an ask prompt); default ignored. */
  stdin?: "pipe" | "ignore";
  /** How it is asked to stop: SIGTERM (default) or SIGINT (as Ctrl-C). */
  stopSignal?: NodeJS.Signals;
}

function spawnQvm(env: Record<string, string>, args: readonly string[], stdin: "pipe" | "ignore") {
  return execa(qvmBin(), args, { env, reject: false, stdin, stdout: "pipe", stderr: "pipe" });
}

/** A long-running `qvm` command against a daemon, owned by the daemon. */
export class E2eService implements Layer {
  readonly what: string;
  readonly proc: ReturnType<typeof spawnQvm>;
  /** The match of `ready`, once ready. */
  ready: RegExpExecArray | null = null;
  private out = "";
  private err = "";
  private disposed = false;
  /** The command's own exit; `proc` itself settles only once its output pipes close, which a child left running holds open. */
  private readonly exited: Promise<void>;

  constructor(
    readonly daemon: E2eDaemon,
    args: readonly string[],
    private readonly opts: ServiceOptions,
  ) {
    this.what = `qvm ${args.join(" ")}`;
    this.proc = spawnQvm(daemon.env, args, opts.stdin ?? "ignore");
    this.exited = new Promise((r) => this.proc.once("exit", () => r()));
    void this.proc.catch(() => {}); // reject is false; a failed spawn shows as an exit too
    this.proc.stdout!.on("data", (c: Buffer) => (this.out += c.toString()));
    this.proc.stderr!.on("data", (c: Buffer) => (this.err += c.toString()));
  }

  stdout(): string {
    return this.out;
  }

  stderr(): string {
    return this.err;
  }

  /** Resolves once `opts.ready` matches its output; rejects if it exits or stays silent. */
  async whenReady(): Promise<void> {
    const re = this.opts.ready;
    if (!re) return;
    let exited = false;
    void this.exited.then(() => (exited = true));
    const match = () => (this.ready = re.exec(this.out) ?? re.exec(this.err));
    if (!(await pollUntil(() => match() !== null || exited, SERVICE_READY_MS)) || !this.ready) {
      throw new Error(`${this.what} ${exited ? "exited" : `printed nothing matching ${re} within ${SERVICE_READY_MS / 1000} s`}: ${this.err.slice(-600)}`);
    }
  }

  /** Stops it as a user would (SIGTERM or SIGINT); same as disposing it. */
  stop(): Promise<void> {
    return this[Symbol.asyncDispose]();
  }

  /** Stops it and checks that it exited and left none of its child processes running. */
  async [Symbol.asyncDispose](): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    this.daemon.disown(this);
    const found = new Findings(this.what);
    const pid = this.proc.pid;
    const children = pid === undefined ? [] : descendantsOf(pid);
    this.proc.kill(this.opts.stopSignal ?? "SIGTERM");
    if (!(await within(this.exited, SERVICE_STOP_MS))) {
      found.add(`did not exit within ${SERVICE_STOP_MS / 1000} s of ${this.opts.stopSignal ?? "SIGTERM"} (killed)`);
      this.proc.kill("SIGKILL");
      await this.exited;
    }
    if (!(await pollUntil(() => !children.some(alive), GONE_MS))) {
      const left = children.filter(alive);
      found.add(`child processes still running: ${left.map(describeProcess).join(", ")} (killed)`);
      await killProcesses(left);
    }
    await this.proc; // its pipes are closed now that nothing of it runs
    found.throwIfAny();
  }
}

/** Runs `qvm ARGS` against `daemon` until disposed (or until the daemon is); resolves once ready. */
export async function withService(daemon: E2eDaemon, args: readonly string[], opts: ServiceOptions = {}): Promise<E2eService> {
  const svc = daemon.own(new E2eService(daemon, args, opts));
  try {
    await svc.whenReady();
  } catch (err) {
    await svc[Symbol.asyncDispose]().catch(() => {});
    throw err;
  }
  return svc;
}
