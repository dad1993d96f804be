// Process sessions: a program running in a domain (Exec) and a domain's serial console, as core
// objects any transport can pump. The gRPC handlers only move bytes between these and their
// streams; what a session means (its domain, its disposable, when it is over) lives here.
import net from "node:net";
import type { Duplex, Readable, Writable } from "node:stream";
import { QvmError } from "@qvm/protocol";
import type { ExecExit } from "../agent/exec-process.js";
import type { ExecSignal } from "@qvm/protocol/contracts";
import type { Launched } from "../domain/launcher.js";
import type { RunningVm } from "../domain/vm-factory.js";

export class ExecSession {
  /** The guest's bytes: untrusted, passed on as opaque data. */
  readonly guestStdout: Readable;
  readonly guestStderr: Readable;
  readonly stdin: Writable;
  /**
   * How the program ended. Settles after the disposable made for it (if any) is destroyed, so a
   * caller told the exit status never finds it still there.
   */
  readonly exit: Promise<ExecExit>;
  private ended = false;

  constructor(
    private readonly launched: Launched,
    readonly pid: number,
  ) {
    this.guestStdout = launched.proc.stdout;
    this.guestStderr = launched.proc.stderr;
    this.stdin = launched.proc.stdin;
    this.exit = launched.proc.exit.finally(() => this.end());
  }

  get domain(): string {
    return this.launched.domain;
  }

  resize(rows: number, cols: number): void {
    this.launched.proc.resize(rows, cols);
  }

  signal(name: ExecSignal): Promise<void> {
    return this.launched.signal(name);
  }

  /** The caller went away: stop the program and release what the launch owns. */
  cancel(): void {
    this.launched.proc.cancel();
    void this.end();
  }

  private async end(): Promise<void> {
    if (this.ended) return;
    this.ended = true;
    await this.launched.release();
  }
}

export class ConsoleSession {
  private constructor(
    /** The serial console: guest bytes out (untrusted, opaque), keystrokes in. */
    readonly stream: Duplex,
  ) {}

  static async open(vm: RunningVm): Promise<ConsoleSession> {
    const { consoleSocket } = await vm.info();
    const sock = net.connect(consoleSocket);
    await new Promise<void>((resolve, reject) => {
      sock.once("connect", resolve);
      sock.once("error", (err) => reject(new QvmError("VMM_FAILED", `cannot open the console of ${vm.name}: ${err.message}`)));
    });
    // The console ends with the VM.
    void vm.exited.then(() => sock.destroy());
    return new ConsoleSession(sock);
  }

  close(): void {
    this.stream.destroy();
  }
}
