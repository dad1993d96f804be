// "Run this in that domain, maybe in a new disposable, and own its lifetime": the one way a
// process is started in a domain, for admin Exec (`qvm run`) and for qrexec services alike. The
// domain is started first unless the caller forbids it; the user defaults to the domain's
// default_user; a disposable made for the call is destroyed by `release`, once, however the
// call ends. A preloaded disposable not yet handed out is refused as a target by name.
import type { ExecOptions } from "../agent/agent-client.js";
import type { ExecProcess } from "../agent/exec-process.js";
import type { ExecSignal } from "@qvm/protocol/contracts";
import type { DispVms } from "./dispvms.js";
import type { DomainRegistry } from "./registry.js";
import type { DomainRunner } from "./runner.js";

export type LaunchTarget = { domain: string } | { dispvm: string };

/** The caller of an admin Exec, as disposables count their callers (Qubes' name of the admin domain). */
const ADMIN_CALLER = "dom0";

export interface LaunchRequest extends Omit<ExecOptions, "user"> {
  target: LaunchTarget;
  /** Who asks: the calling domain of a qrexec call; absent or "dom0" for the admin. */
  caller?: string;
  /** Fail instead of starting a halted domain (a new disposable is always started). */
  noAutostart?: boolean;
  /** "" or undefined: the domain's default_user. */
  user?: string;
}

export interface Launched {
  /** Where it runs: the domain, or the disposable made for it. */
  domain: string;
  proc: ExecProcess;
  /** Sends a signal to the process; a guest that refuses is logged, not thrown. */
  signal(name: ExecSignal): Promise<void>;
  /** Ends what the launch owns (the disposable); safe to call more than once. */
  release(): Promise<void>;
}

export interface LauncherDeps {
  registry: DomainRegistry;
  runner: DomainRunner;
  dispvms: DispVms;
  log: (msg: string) => void;
}

export class ProcessLauncher {
  constructor(private readonly deps: LauncherDeps) {}

  async launch(req: LaunchRequest): Promise<Launched> {
    const { registry, runner, dispvms, log } = this.deps;
    // A preloaded disposable waits untouched for the next caller of its template: never by name.
    if ("domain" in req.target) dispvms.checkUsable(req.target.domain);
    let disposable = "dispvm" in req.target ? await dispvms.create(req.target.dispvm, req.caller || ADMIN_CALLER) : "";
    const release = async (): Promise<void> => {
      const name = disposable;
      disposable = "";
      if (name) await dispvms.destroy(name).catch((err: Error) => log(`${name}: cannot destroy: ${err.message}`));
    };
    const domain = disposable || (req.target as { domain: string }).domain;
    try {
      const vm = await runner.ensureRunning(domain, Boolean(req.noAutostart) && !disposable);
      const proc = vm.agent.exec({
        command: req.command,
        env: req.env,
        cwd: req.cwd,
        pty: req.pty,
        user: req.user || String(registry.resolve(registry.get(domain), "default_user")),
      });
      // A process that ends before its stdin is written must not crash qvmd with EPIPE.
      proc.stdin.on("error", () => {});
      await proc.started;
      return {
        domain,
        proc,
        release,
        signal: async (name) => {
          const id = proc.id;
          if (id === undefined) return;
          await vm.agent.signal(id, name).catch((err: Error) => log(`${domain}: signal ${name} not delivered: ${err.message}`));
        },
      };
    } catch (err) {
      await release();
      throw err;
    }
  }
}
