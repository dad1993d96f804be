// One window: its compositor, program, VNC server and vsock listener, started in that order, all
// in one containment. Any of them ending ends the window: the rest are killed, reaped, and the
// runtime directory removed (the entry stays, not alive, until the host closes it).
import { QvmError } from "@qvm/protocol/contracts";
import type { GuestUser } from "../users.js";
import {
  SOCAT_READY,
  closeRequestLaunch,
  findDisplaySocket,
  programLaunch,
  resizeLaunch,
  socatLaunch,
  swayConfig,
  swayLaunch,
  wayvncLaunch,
  windowPaths,
  SWAY_CONFIG,
  WAYVNC_CONFIG,
  type ListenAddress,
  type WindowPaths,
} from "./commands.js";
import { CLIPBOARD_TIMEOUT_MS, copyLaunch, copyResult, pasteLaunch, pasteResult, type ClipboardContent } from "./clipboard.js";
import type { Containment } from "./containment.js";
import type { GuiSystem, ProcessExit, WindowProcess } from "./system.js";

export interface WindowTimings {
  /** How long each of sway, wayvnc and socat may take to be ready (emulated domains are slow). */
  readyMs: number;
  /** How long the program may take to exit after its close request before it is killed. */
  closeGraceMs: number;
  /** How long a swaymsg may take. */
  commandMs: number;
  /** How long the processes may take to be gone after SIGKILL (then the window is reported anyway). */
  killWaitMs: number;
  /** How long a read (wl-paste) or a write (wl-copy) of the window's selection may take. */
  clipboardMs: number;
  pollMs: number;
}

export const DEFAULT_TIMINGS: WindowTimings = {
  readyMs: 30_000,
  closeGraceMs: 3000,
  commandMs: 10_000,
  killWaitMs: 5000,
  clipboardMs: CLIPBOARD_TIMEOUT_MS,
  pollMs: 25,
};

export interface WindowSpec {
  id: number;
  port: number;
  argv: string[];
  width: number;
  height: number;
  user: GuestUser;
}

type Role = "sway" | "program" | "wayvnc" | "socat";

const describeExit = (e: ProcessExit) => (e.signal ? `killed by ${e.signal}` : `exited with code ${e.code}`);
const clip = (t: string) => t.trim().split("\n").slice(-3).join(" | ").slice(-400);

export class Window {
  readonly id: number;
  readonly port: number;
  width: number;
  height: number;
  /** opening → alive → ended (once every process is gone). */
  state: "opening" | "alive" | "ended" = "opening";
  /** Why it ended, for the log. */
  endReason = "";
  readonly paths: WindowPaths;
  private readonly user: GuestUser;
  private readonly procs = new Map<Role, WindowProcess>();
  private containment: Containment | undefined;
  /** The Wayland socket sway made (wayland-1), once it has. */
  private display: string | undefined;
  private ending: Promise<void> | undefined;
  /** Set by close(): the program's exit is then the expected end, not a reason of its own. */
  private closing = false;
  /** Serializes resizes and the close. */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly spec: WindowSpec,
    private readonly system: GuiSystem,
    runtimeRoot: string,
    private readonly listen: ListenAddress,
    private readonly timings: WindowTimings,
    /** Called once when the window has ended (not when it fails to open). */
    private readonly onEnded: (w: Window) => void,
    private readonly log: (m: string) => void,
  ) {
    this.id = spec.id;
    this.port = spec.port;
    this.width = spec.width;
    this.height = spec.height;
    this.user = spec.user;
    this.paths = windowPaths(runtimeRoot, spec.id);
  }

  /** Opening or running, and not ending. */
  get alive(): boolean {
    return this.state !== "ended" && !this.ending;
  }

  /** Starts everything; on failure everything started is ended again and the error thrown. */
  async open(): Promise<void> {
    try {
      await this.start();
    } catch (err) {
      await this.teardown(`failed to open: ${(err as Error).message}`, false);
      throw err;
    }
    this.state = "alive";
    for (const [role, p] of this.procs) {
      void p.exited.then((e) => {
        if (this.state === "alive" && !this.closing) void this.end(`${role === "program" ? "the program" : role} ${describeExit(e)}`);
      });
    }
  }

  private async start(): Promise<void> {
    const { system, paths, user } = this;
    this.containment = system.contain(this.id);
    system.makeRuntimeDir(paths.runtimeDir, user, { [SWAY_CONFIG]: swayConfig(this.width, this.height), [WAYVNC_CONFIG]: "" });

    this.startProcess("sway", swayLaunch(user, paths));
    let display: string | undefined;
    await this.waitFor("sway", () => {
      display = findDisplaySocket(system.listDir(paths.runtimeDir));
      return display !== undefined && system.exists(paths.swaySocket);
    });

    this.display = display;
    const program = this.startProcess("program", programLaunch(user, paths, display!, this.spec.argv));
    this.startProcess("wayvnc", wayvncLaunch(user, paths, display!));
    await this.waitFor("wayvnc", () => system.exists(paths.vncSocket));

    const socat = this.startProcess("socat", socatLaunch(user, paths, this.listen(this.port)));
    let listening = SOCAT_READY.test(socat.stderrTail());
    socat.onStderr(() => (listening ||= SOCAT_READY.test(socat.stderrTail())));
    await this.waitFor("socat", () => listening);

    if (program.hasExited()) {
      const e = await program.exited;
      const why = clip(program.stderrTail());
      throw new QvmError("FAILED_PRECONDITION", `the program ${describeExit(e)} before its window was ready${why ? `: ${why}` : ""}`);
    }
  }

  private startProcess(role: Role, cmd: Parameters<GuiSystem["spawn"]>[0]): WindowProcess {
    const p = this.system.spawn(cmd, this.containment!);
    this.procs.set(role, p);
    return p;
  }

  /** Polls `ready` until it holds; fails when any process started so far has ended, or on time-out. */
  private async waitFor(role: Role, ready: () => boolean): Promise<void> {
    const deadline = Date.now() + this.timings.readyMs;
    for (;;) {
      if (ready()) return;
      for (const [r, p] of this.procs) {
        if (p.hasExited()) {
          const e = await p.exited;
          const why = clip(p.stderrTail());
          const what = r === "program" ? "the program" : r;
          throw new QvmError(r === "program" ? "FAILED_PRECONDITION" : "INTERNAL", `${what} ${describeExit(e)} while the window was opening${why ? `: ${why}` : ""}`);
        }
      }
      if (Date.now() >= deadline) throw new QvmError("INTERNAL", `${role} was not ready within ${this.timings.readyMs} ms`);
      await sleep(this.timings.pollMs);
    }
  }

  /** Sets the output's size; the VNC stream follows. */
  resize(width: number, height: number): Promise<void> {
    return this.serialize(async () => {
      if (this.state !== "alive" || this.ending) throw new QvmError("FAILED_PRECONDITION", `window ${this.id} has ended`);
      const r = await this.system.run(resizeLaunch(this.user, this.paths, width, height), this.timings.commandMs);
      if (r.code !== 0) throw new QvmError("INTERNAL", `resizing window ${this.id} failed: ${clip(r.output) || `swaymsg exited with ${r.code}`}`);
      this.width = width;
      this.height = height;
    });
  }

  /**
   * The compositor's selection as text (clipboard.ts). Not serialized with resizes and the
   * close: a stalled transfer must not hold those up.
   */
  async readClipboard(maxBytes: number): Promise<ClipboardContent> {
    const { user, paths, display, containment } = this.clipboardTarget();
    const r = await this.system.capture(pasteLaunch(user, paths, display), containment, { maxBytes, timeoutMs: this.timings.clipboardMs });
    this.clipboardTarget();
    return pasteResult(this.id, r, maxBytes, this.timings.clipboardMs);
  }

  /** Replaces the compositor's selection with `data` (no data: clears it); resolves once it is offered. */
  async writeClipboard(data: Uint8Array): Promise<void> {
    const { user, paths, display, containment } = this.clipboardTarget();
    const r = await this.system.feed(copyLaunch(user, paths, display, data.length === 0), containment, data, this.timings.clipboardMs);
    this.clipboardTarget();
    copyResult(this.id, r, this.timings.clipboardMs);
  }

  /** What the clipboard's clients run with; NOT_FOUND once the window has ended (also checked after a client ran: the end killed it). */
  private clipboardTarget(): { user: GuestUser; paths: WindowPaths; display: string; containment: Containment } {
    if (this.state !== "alive" || this.ending || !this.display || !this.containment) throw new QvmError("NOT_FOUND", `window ${this.id} has ended`);
    return { user: this.user, paths: this.paths, display: this.display, containment: this.containment };
  }

  /** A close request to the program, a grace period, then the end of every process. */
  close(): Promise<void> {
    return this.serialize(async () => {
      if (this.state !== "alive" || this.ending) return this.ending;
      this.closing = true;
      const program = this.procs.get("program");
      // A failed close request (no view left, say) still ends the window below.
      await this.system.run(closeRequestLaunch(this.user, this.paths), this.timings.commandMs);
      if (program && !program.hasExited()) await Promise.race([program.exited, sleep(this.timings.closeGraceMs)]);
      await this.end(program?.hasExited() ? "closed" : `closed (the program did not exit within ${this.timings.closeGraceMs} ms of its close request)`);
    });
  }

  /** Ends the window at once (the agent is stopping): SIGKILL to everything, nothing awaited. */
  killNow(): void {
    this.containment?.killAll(this.liveGroups());
  }

  private serialize<T>(f: () => Promise<T>): Promise<T> {
    const run = this.queue.then(f, f);
    this.queue = run.catch(() => {});
    return run;
  }

  private end(reason: string): Promise<void> {
    this.ending ??= this.teardown(reason, true);
    return this.ending;
  }

  private liveGroups(): number[] {
    return [...this.procs.values()].filter((p) => !p.hasExited() && p.pid !== undefined).map((p) => p.pid!);
  }

  /** Kills and reaps every process, removes the runtime directory and the containment. */
  private async teardown(reason: string, report: boolean): Promise<void> {
    this.endReason = reason;
    const c = this.containment;
    const deadline = Date.now() + this.timings.killWaitMs;
    if (c) {
      for (;;) {
        c.killAll(this.liveGroups());
        const reaped = [...this.procs.values()].every((p) => p.hasExited());
        if ((reaped && c.empty()) || Date.now() >= deadline) break;
        await sleep(this.timings.pollMs);
      }
      if (!c.empty() || [...this.procs.values()].some((p) => !p.hasExited())) this.log(`window ${this.id}: processes still left after SIGKILL (${c.describe})`);
      c.release();
    }
    await this.system.removeRuntimeDir(this.paths.runtimeDir);
    this.state = "ended";
    if (report) {
      this.log(`window ${this.id} ended: ${reason}`);
      this.onEnded(this);
    }
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
