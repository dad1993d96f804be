// The base of every qvm command: the admin connection (opened on first use, with a short
// deadline so a missing or hung qvmd fails in seconds), output helpers, and one error path:
// errors propagate to main.ts, which prints one line and exits with the mapped code.
//
// @qvm/protocol (and with it grpc-js) is imported lazily, so `qvm --help` and `qvm daemon` never
// load it; nothing here may import a value from it statically. Its contracts
// (@qvm/protocol/contracts: QvmError and its codes) load no gRPC and are imported statically.
// Node's own modules, by contrast,
// are imported statically: the bundle runs from a V8 code cache (cli/src/loader.ts), where a
// dynamic import() of a node: module does not work.
import { Args, Command, Config, type Interfaces } from "@oclif/core";
import { accessSync, constants as fsConstants, existsSync } from "node:fs";
import type { AdminClient } from "@qvm/protocol";
import { ADMIN_GROUP, QvmError, isQvmError } from "@qvm/protocol/contracts";
import { SilentExit, outcomeOf } from "./lib/errors.js";

/** How long the first call may take to reach qvmd before the command gives up. */
export const CONNECT_TIMEOUT_MS = 3000;

export function loadProtocol(): Promise<typeof import("@qvm/protocol")> {
  return import("@qvm/protocol");
}

/** An oclif example, "qvm COMMAND ARGS" (oclif fills in the template), with its description. */
export function example(args: string, description?: string): string | { command: string; description: string } {
  const command = `<%= config.bin %> <%= command.id %> ${args}`.trimEnd();
  return description ? { command, description } : command;
}

export abstract class QvmCommand extends Command {
  /**
   * oclif's Command.run loads the configuration again even when oclif's runner hands it the one
   * it has just loaded; use that one. (Start-up time: every qvm invocation goes through here.)
   */
  static override async run<T extends Command>(
    this: new (argv: string[], config: Config) => T,
    argv: string[] = process.argv.slice(2),
    opts?: Interfaces.LoadOptions,
  ): Promise<ReturnType<T["run"]>> {
    if (!(opts instanceof Config)) return Command.run.call(this, argv, opts) as Promise<ReturnType<T["run"]>>;
    const cmd = new this(argv, opts) as unknown as QvmCommand;
    return cmd._run<ReturnType<T["run"]>>();
  }

  private client: AdminClient | undefined;
  private probe: Promise<void> | undefined;

  /**
   * The admin client. Its first use also sends GetDaemonInfo with a CONNECT_TIMEOUT_MS deadline,
   * concurrently (no extra round trip): if that fails, every call fails with its error, so a
   * missing, refused or hung qvmd is reported in one line within seconds. Streams (exec,
   * console) are opened only once qvmd has answered: use connected() for them.
   */
  protected async admin(): Promise<AdminClient> {
    if (this.client) return this.client;
    const p = await loadProtocol();
    const client = new p.AdminClient();
    const probe = client.getDaemonInfo({}, { timeoutMs: CONNECT_TIMEOUT_MS }).then(
      () => undefined,
      (err: unknown) => {
        // Any other answer, even an error (a qvmd without GetDaemonInfo), means qvmd is there.
        if (isQvmError(err, "DAEMON_UNAVAILABLE")) throw explainUnavailable(err, client.socketPath);
      },
    );
    probe.catch(() => {});
    this.probe = probe;
    this.client = new Proxy(client, {
      get(target, prop, receiver) {
        const v = Reflect.get(target, prop, receiver) as unknown;
        if (typeof v !== "function" || typeof prop !== "string" || !p.ADMIN_UNARY_CALLS.has(prop)) return v;
        return (...args: unknown[]) => afterProbe(probe, (v as (...a: unknown[]) => Promise<unknown>).apply(target, args));
      },
    });
    return this.client;
  }

  /** The admin client once qvmd has answered (for streams, which the probe cannot guard). */
  protected async connected(): Promise<AdminClient> {
    const client = await this.admin();
    await this.probe;
    return client;
  }

  override async catch(err: Error & { exitCode?: number }): Promise<unknown> {
    throw err;
  }

  override async finally(_: Error | undefined): Promise<unknown> {
    this.client?.close();
    return undefined;
  }

  protected print(text: string): void {
    process.stdout.write(text);
  }

  protected printJson(value: unknown): void {
    process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
  }

  /** A one-line message on stderr, in the same form as errors. */
  protected note(message: string): void {
    process.stderr.write(`qvm: ${message}\n`);
  }

  /**
   * Runs `fn` for each domain, in turn or (parallel) all at once. A failure is reported (one
   * line) and the rest still run; the command then exits with the first failure's code, as
   * Qubes' multi-VM tools do.
   */
  protected async forEachDomain(names: readonly string[], fn: (name: string) => Promise<unknown>, opts: { parallel?: boolean } = {}): Promise<void> {
    const results: PromiseSettledResult<unknown>[] = [];
    if (opts.parallel) results.push(...(await Promise.allSettled(names.map(fn))));
    else for (const name of names) results.push(await fn(name).then((value) => ({ status: "fulfilled", value }) as const, (reason: unknown) => ({ status: "rejected", reason }) as const));
    let failed = 0;
    for (const r of results) {
      if (r.status === "fulfilled") continue;
      const o = outcomeOf(r.reason);
      if (o.message) this.note(o.message);
      failed ||= o.exitCode || 1;
    }
    if (failed) throw new SilentExit(failed);
  }
}

/**
 * `call`'s result, unless the connection probe fails first (then the probe's error, which says
 * what is wrong with qvmd, e.g. that it did not answer in time, even while `call` still hangs).
 */
function afterProbe<T>(probe: Promise<void>, call: Promise<T>): Promise<T> {
  call.catch(() => {});
  return new Promise<T>((resolve, reject) => {
    probe.catch(reject);
    call.then(resolve, (err: unknown) => probe.then(() => reject(err), reject));
  });
}

/** DAEMON_UNAVAILABLE, unless the socket is there and this user may not open it: then that, in words. */
function explainUnavailable(err: QvmError, socketPath: string): QvmError {
  if (existsSync(socketPath)) {
    try {
      accessSync(socketPath, fsConstants.R_OK | fsConstants.W_OK);
    } catch {
      return new QvmError("PERMISSION_DENIED", `no permission to use ${socketPath}: join the ${ADMIN_GROUP} group (or run as root)`);
    }
  }
  return err;
}

/**
 * A command that applies one admin call to each domain named (kill, pause, unpause): the same
 * argument handling and per-domain failure reporting, only the words and the call differ.
 */
export function eachDomainCommand(spec: { summary: string; description: string; what: string; call: (admin: AdminClient, name: string) => Promise<unknown> }) {
  return class extends QvmCommand {
    static override summary = spec.summary;
    static override description = `${spec.description} Failures are reported one a line; qvm exits with the first one's code.`;
    static override examples = [example("work")];
    static override strict = false;
    static override args = { vm: Args.string({ description: spec.what, required: true }) };

    async run(): Promise<void> {
      const { argv } = await this.parse(this.constructor as typeof QvmCommand);
      const admin = await this.admin();
      await this.forEachDomain(argv as string[], (name) => spec.call(admin, name));
    }
  };
}
