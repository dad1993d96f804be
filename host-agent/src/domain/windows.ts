// Domains' windows (docs/gui.md): a program shown by its own compositor in the domain, whose
// remote-framebuffer stream the domain offers on a vsock port. qvmd keeps, per running domain,
// which windows exist and what program each shows; the program name comes from the request that
// opened it (kept in RUNTIME/windows/NAME.json across a qvmd restart), never from the
// guest, so the frame the web shell draws cannot be named by the domain. The guest says only
// which windows are alive, their size and their port, validated (agent/replies.ts).
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import type net from "node:net";
import { QvmError } from "@qvm/protocol";
import { MAX_WINDOWS_PER_DOMAIN, windowSizeProblem } from "@qvm/protocol/contracts";
import type { Disposable } from "../base/disposables.js";
import type { EventBus } from "../base/events.js";
import type { GuestWindow } from "../agent/replies.js";
import { dialHybridVsock } from "../vsock/hybrid-dial.js";
import type { Attacher } from "./attachments.js";
import type { DispVms } from "./dispvms.js";
import type { DomainPaths } from "./paths.js";
import type { DomainRegistry } from "./registry.js";
import type { DomainRunner } from "./runner.js";

export const DEFAULT_WINDOW_SIZE = { width: 1024, height: 768 } as const;
const MAX_ARGV = 256;
const MAX_ARGV_BYTES = 64 * 1024;

export interface WindowView {
  domain: string;
  windowId: number;
  /** argv[0]'s base name from the request that opened it. */
  program: string;
  width: number;
  height: number;
}

interface Known {
  /** Being closed by request: its end is that, not "the program ended". */
  closing?: boolean;
  program: string;
  port: number;
  width: number;
  height: number;
}

export interface DomainWindowsDeps {
  registry: DomainRegistry;
  runner: Pick<DomainRunner, "ensureRunning" | "running">;
  paths: DomainPaths;
  events: EventBus;
  /** Disposables for `qvm run --gui --dispvm`: made for the window, destroyed with its last one. */
  dispvms: Pick<DispVms, "create" | "destroy">;
  log: (msg: string) => void;
}

/** Where a window opens: a domain, or a new disposable from a template for disposables ("" or "@default": default_dispvm). */
export type WindowTarget = { domain: string } | { dispvm: string };

export class DomainWindows {
  private readonly byDomain = new Map<string, Map<number, Known>>();
  /** OpenWindow calls in flight per domain: the guest may list their window before they return. */
  private readonly opening = new Map<string, number>();
  /**
   * Disposables made for a window: each is destroyed when its last window closes or its program
   * ends (Qubes destroys a DispVM when its program exits). Held in memory only: a qvmd restart
   * destroys every disposable an earlier qvmd left (core/boot.ts), windows and all.
   */
  private readonly disposables = new Set<string>();

  constructor(private readonly deps: DomainWindowsDeps) {
    // A domain that stops closes its windows, with a notice (the page shows the reason).
    // A domain that starts has no windows yet: a record left by a qvmd that died while the
    // domain stopped must not name the new domain's windows.
    deps.events.subscribe((ev) => {
      if (ev.type === "domain-pre-start") this.dropRecord(ev.domain);
      if (ev.type !== "domain-shutdown") return;
      for (const id of [...(this.byDomain.get(ev.domain)?.keys() ?? [])]) this.forget(ev.domain, id, "the domain stopped");
      this.byDomain.delete(ev.domain);
      this.dropRecord(ev.domain);
    });
  }

  /** Starts `argv` in a window of a domain (started first unless noAutostart) or of a new disposable. */
  async open(target: WindowTarget, argv: string[], size: { width: number; height: number }, noAutostart: boolean): Promise<WindowView> {
    if ("domain" in target) return this.openIn(target.domain, argv, size, noAutostart);
    checkRequest(argv, size);
    const name = await this.deps.dispvms.create(target.dispvm, "dom0");
    this.disposables.add(name);
    try {
      return await this.openIn(name, argv, size, false);
    } catch (err) {
      await this.destroy(name);
      throw err;
    }
  }

  private async openIn(domain: string, argv: string[], size: { width: number; height: number }, noAutostart: boolean): Promise<WindowView> {
    const rec = this.deps.registry.get(domain);
    checkRequest(argv, size);
    const vm = await this.deps.runner.ensureRunning(domain, noAutostart);
    const known = this.table(domain);
    if ([...known.values()].length >= MAX_WINDOWS_PER_DOMAIN) {
      throw new QvmError("RESOURCE_EXHAUSTED", `${domain} has ${MAX_WINDOWS_PER_DOMAIN} windows open, the most a domain may have; close one first`);
    }
    const user = String(this.deps.registry.resolve(rec, "default_user"));
    this.opening.set(domain, (this.opening.get(domain) ?? 0) + 1);
    let reply;
    try {
      reply = await vm.agent.openWindow({ argv, width: size.width, height: size.height, user });
    } finally {
      this.opening.set(domain, this.opening.get(domain)! - 1);
    }
    const program = path.basename(argv[0]!).slice(0, 64);
    known.set(reply.windowId, { program, port: reply.vsockPort, ...size });
    this.save(domain);
    this.deps.events.publish("window-open", domain, { window: String(reply.windowId), program, width: String(size.width), height: String(size.height) });
    return { domain, windowId: reply.windowId, program, ...size };
  }

  list(domain?: string): WindowView[] {
    const names = domain ? [domain] : [...this.byDomain.keys()];
    if (domain) this.deps.registry.get(domain);
    return names.flatMap((d) => [...(this.byDomain.get(d) ?? new Map<number, Known>())].map(([windowId, k]) => ({ domain: d, windowId, program: k.program, width: k.width, height: k.height })));
  }

  async resize(domain: string, windowId: number, width: number, height: number): Promise<void> {
    const k = this.known(domain, windowId);
    const problem = windowSizeProblem(width, height);
    if (problem) throw new QvmError("INVALID_ARGUMENT", problem);
    await this.deps.runner.running(domain).agent.resizeWindow({ windowId, width, height });
    k.width = width;
    k.height = height;
  }

  async close(domain: string, windowId: number): Promise<void> {
    const k = this.known(domain, windowId);
    k.closing = true;
    try {
      await this.deps.runner.running(domain).agent.closeWindow(windowId);
    } finally {
      this.forget(domain, windowId, "closed");
    }
  }

  /** The window's stream: a connection to its port in the domain, bytes both ways, unparsed. */
  async stream(domain: string, windowId: number): Promise<net.Socket> {
    const k = this.known(domain, windowId);
    const { vsockPath } = await this.deps.runner.running(domain).info();
    return dialHybridVsock(vsockPath, k.port);
  }

  /**
   * Follows each running domain's window list: windows that ended are forgotten (and closed in
   * the guest), windows qvmd did not know (after a restart) are taken back with the program
   * name it recorded; when the domain stops, its windows close with a notice.
   */
  attacher(): Attacher {
    return {
      name: "window watcher",
      holder: "qvmd",
      attach: async (ctx): Promise<Disposable> => {
        const { name } = ctx;
        const vm = this.deps.runner.running(name);
        const stop = vm.agent.watchWindows(
          (windows) => this.follow(name, windows),
          (err) => {
            if (err) this.deps.log(`${name}: window list: ${err.message}`);
          },
        );
        // Released at the VM's end and at qvmd's exit; the windows themselves close on
        // domain-shutdown (above), since at a qvmd exit the VM and its windows run on.
        return { dispose: () => stop() };
      },
    };
  }

  private follow(domain: string, windows: GuestWindow[]): void {
    const known = this.table(domain);
    let recorded: Record<number, string> | undefined;
    for (const w of windows) {
      const k = known.get(w.windowId);
      if (k?.closing) continue;
      if (!w.alive) {
        if (k) this.forget(domain, w.windowId, "the program ended");
        void this.deps.runner
          .running(domain)
          .agent.closeWindow(w.windowId)
          .catch(() => {});
        continue;
      }
      if (k) {
        k.width = w.width;
        k.height = w.height;
        k.port = w.vsockPort;
      } else if ((recorded ??= this.saved(domain))[w.windowId]) {
        const program = recorded[w.windowId]!;
        known.set(w.windowId, { program, port: w.vsockPort, width: w.width, height: w.height });
        // Taken back after a qvmd restart: said, so that shells list it again.
        this.deps.events.publish("window-open", domain, { window: String(w.windowId), program, width: String(w.width), height: String(w.height) });
      } else if (!this.opening.get(domain)) {
        // A window no request of qvmd's opened (one whose OpenWindow was cancelled or timed
        // out): nothing can name its frame, so it is closed.
        void this.deps.runner
          .running(domain)
          .agent.closeWindow(w.windowId)
          .catch(() => {});
      }
    }
    for (const [id, k] of [...known]) if (!k.closing && !windows.some((w) => w.windowId === id)) this.forget(domain, id, "the program ended");
  }

  private forget(domain: string, windowId: number, reason: string): void {
    const known = this.byDomain.get(domain);
    if (!known?.delete(windowId)) return;
    this.save(domain);
    this.deps.events.publish("window-close", domain, { window: String(windowId), reason });
    if (known.size === 0 && this.disposables.has(domain)) void this.destroy(domain);
  }

  private async destroy(disposable: string): Promise<void> {
    this.disposables.delete(disposable);
    await this.deps.dispvms.destroy(disposable).catch((err: Error) => this.deps.log(`${disposable}: cannot destroy: ${err.message}`));
  }

  private known(domain: string, windowId: number): Known {
    this.deps.registry.get(domain);
    const k = this.byDomain.get(domain)?.get(windowId);
    if (!k) throw new QvmError("NOT_FOUND", `${domain} has no window ${windowId}; see \`qvm run --gui\` and the web shell`);
    return k;
  }

  private table(domain: string): Map<number, Known> {
    let t = this.byDomain.get(domain);
    if (!t) this.byDomain.set(domain, (t = new Map()));
    return t;
  }

  /** The program names qvmd recorded (its own file: only names that are strings are taken). */
  private saved(domain: string): Record<number, string> {
    try {
      const v = JSON.parse(readFileSync(this.deps.paths.windowsRecordOf(domain), "utf8")) as unknown;
      if (typeof v !== "object" || v === null) return {};
      return Object.fromEntries(Object.entries(v).filter(([, name]) => typeof name === "string" && name.length > 0 && name.length <= 64));
    } catch {
      return {};
    }
  }

  /** Written whole and renamed into place, so a crash leaves the old record or the new one. */
  private save(domain: string): void {
    const file = this.deps.paths.windowsRecordOf(domain);
    const names = Object.fromEntries([...(this.byDomain.get(domain) ?? [])].map(([id, k]) => [id, k.program]));
    mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    writeFileSync(`${file}.tmp`, JSON.stringify(names), { mode: 0o600 });
    renameSync(`${file}.tmp`, file);
  }

  private dropRecord(domain: string): void {
    rmSync(this.deps.paths.windowsRecordOf(domain), { force: true });
  }
}

function checkRequest(argv: string[], size: { width: number; height: number }): void {
  if (!argv.length || !argv[0]) throw new QvmError("INVALID_ARGUMENT", "a window needs a program to run");
  if (argv.length > MAX_ARGV || argv.reduce((n, a) => n + Buffer.byteLength(a), 0) > MAX_ARGV_BYTES || argv.some((a) => a.includes("\0"))) {
    throw new QvmError("INVALID_ARGUMENT", `the program's arguments are too many or too long (at most ${MAX_ARGV}, ${MAX_ARGV_BYTES} bytes, no NUL)`);
  }
  const problem = windowSizeProblem(size.width, size.height);
  if (problem) throw new QvmError("INVALID_ARGUMENT", problem);
}
