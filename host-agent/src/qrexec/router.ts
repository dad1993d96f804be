// The qrexec router: the only door between domains (docs/qrexec-protocol.md).
//
// Each running domain gets its own Unix socket, `<vsock uds>_50`, where vhost-device-vsock
// delivers the domain's connections to the host's vsock port 50. Which socket a call arrives on
// is who is calling; nothing in the request can say otherwise. A call is: one REQUEST frame
// (bounded, validated), a policy decision (maybe a question to a person), then either a bare
// "refused" or "connected" followed by the service's data both ways and its exit code.
//
// Everything from the domain is hostile: requests are size-checked before they are buffered,
// the first frame must arrive within requestTimeoutMs, a domain holds at most maxCallsPerDomain
// calls at once (more are closed at once, so a flood costs only the flooder), and every dropped
// request is logged, at most once a second per domain.
import { rmSync, chmodSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import type { Readable, Writable } from "node:stream";
import {
  EXIT_REFUSED,
  FRAME_HEADER_BYTES,
  FrameDecoder,
  FrameType,
  MAX_REQUEST_BYTES,
  encodeData,
  encodeExit,
  encodeFrame,
  qrexecV1,
  type Frame,
} from "@qvm/protocol";
import { MAX_ARGUMENT_LENGTH, isValidServiceName, sanitizeArgument } from "@qvm/protocol/contracts";
import { decideAnswer, evaluate, type CallQuery, type Decision, type SystemFacts } from "./policy/evaluate.js";
import type { PolicyRule } from "./policy/parser.js";
import type { ServiceInvocation } from "./service-command.js";

/** A running service, wherever it runs. */
export interface ServiceProcess {
  stdin: Writable;
  stdout: Readable;
  stderr: Readable;
  exit: Promise<{ code: number | null; signal: string | null }>;
  cancel(): void;
}

export interface OpenedService {
  proc: ServiceProcess;
  /** Where it runs (a disposable's name for "@dispvm:T"). */
  domain: string;
  /** Called once when the call ends (destroys a disposable). */
  release(): Promise<void>;
}

export interface AskQuestionInput {
  source: string;
  service: string;
  argument: string;
  requestedTarget: string;
  targets: string[];
  defaultTarget?: string;
}

/** What the router needs from qvmd; tests give it fakes. */
export interface QrexecHost {
  facts(): SystemFacts;
  /** The rules of DATA/policy.d; throws (naming file:line) when the policy has an error. */
  loadPolicy(): PolicyRule[];
  /** Starts the service in `target`: a domain name, "@adminvm" or "@dispvm:TEMPLATE". */
  open(target: string, opts: { user?: string; autostart: boolean; inv: ServiceInvocation }): Promise<OpenedService>;
  /** Asks a person; the chosen target or null. */
  ask(q: AskQuestionInput): Promise<string | null>;
  log(msg: string): void;
  /** Publishes a `qrexec-call` event. */
  called(source: string, fields: Record<string, string>): void;
}

export interface RouterLimits {
  maxCallsPerDomain: number;
  requestTimeoutMs: number;
}

export const DEFAULT_ROUTER_LIMITS: RouterLimits = { maxCallsPerDomain: 16, requestTimeoutMs: 5000 };
const MAX_TARGET_LENGTH = 64;

class Dropped extends Error {}

/** Logs at most one line per second per domain, counting what it held back. */
class DropLog {
  private readonly last = new Map<string, { at: number; held: number }>();
  constructor(private readonly log: (m: string) => void) {}
  note(source: string, why: string): void {
    const now = Date.now();
    const s = this.last.get(source);
    if (s && now - s.at < 1000) {
      s.held++;
      return;
    }
    const held = s?.held ? ` (${s.held} more dropped in the last second)` : "";
    this.last.set(source, { at: now, held: 0 });
    this.log(`qrexec: ${source}: dropped a call: ${why}${held}`);
  }
}

export class QrexecRouter {
  private readonly inflight = new Map<string, number>();
  private readonly servers = new Map<string, { server: net.Server; path: string }>();
  private readonly drops: DropLog;

  constructor(
    private readonly host: QrexecHost,
    private readonly limits: RouterLimits = DEFAULT_ROUTER_LIMITS,
  ) {
    this.drops = new DropLog(host.log);
  }

  /** Listens for `domain`'s calls on `socketPath` (replacing a stale socket file). */
  async attach(domain: string, socketPath: string): Promise<void> {
    this.detach(domain);
    rmSync(socketPath, { force: true });
    // Half-open: a caller that shuts down its sending side (socat at stdin EOF) still gets the reply.
    const server = net.createServer({ allowHalfOpen: true }, (sock) => void this.handle(domain, sock));
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(socketPath, () => resolve());
    });
    server.on("error", (err) => this.host.log(`qrexec: ${domain}: listener error: ${err.message}`));
    chmodSync(socketPath, 0o600);
    this.servers.set(domain, { server, path: socketPath });
  }

  detach(domain: string): void {
    const s = this.servers.get(domain);
    if (!s) return;
    this.servers.delete(domain);
    s.server.close();
    rmSync(s.path, { force: true });
  }

  detachAll(): void {
    for (const d of [...this.servers.keys()]) this.detach(d);
  }

  callsInFlight(domain: string): number {
    return this.inflight.get(domain) ?? 0;
  }

  /** Serves one connection from `source`. Public so tests can hand it a socket pair. */
  async handle(source: string, sock: net.Socket): Promise<void> {
    sock.on("error", () => {});
    const n = this.inflight.get(source) ?? 0;
    if (n >= this.limits.maxCallsPerDomain) {
      this.drops.note(source, `more than ${this.limits.maxCallsPerDomain} calls at once`);
      sock.destroy();
      return;
    }
    this.inflight.set(source, n + 1);
    try {
      await this.serve(source, sock);
    } catch (err) {
      if (err instanceof Dropped) this.drops.note(source, err.message);
      else this.host.log(`qrexec: ${source}: call failed: ${(err as Error).message}`);
      sock.destroy();
    } finally {
      const left = (this.inflight.get(source) ?? 1) - 1;
      if (left) this.inflight.set(source, left);
      else this.inflight.delete(source);
    }
  }

  private async serve(source: string, sock: net.Socket): Promise<void> {
    const { request, rest } = await readRequest(sock, this.limits.requestTimeoutMs);
    const service = request.service;
    if (!isValidServiceName(service)) throw new Dropped(`invalid service name ${clip(service)}`);
    if (request.argument.length > MAX_ARGUMENT_LENGTH) throw new Dropped(`argument longer than ${MAX_ARGUMENT_LENGTH} characters`);
    if (request.target.length > MAX_TARGET_LENGTH) throw new Dropped(`target longer than ${MAX_TARGET_LENGTH} characters`);
    const q: CallQuery = { service, argument: sanitizeArgument(request.argument), source, target: request.target };
    const what = `${source} -> ${q.target || "@default"} ${q.argument ? `${service}+${q.argument}` : service}`;

    const decision = await this.decide(q, sock);
    if (decision.action !== "allow") {
      const reason = decision.action === "deny" ? decision.reason : "not allowed";
      const rule = decision.rule ? ` (${decision.rule.file}:${decision.rule.line})` : "";
      if (decision.action !== "deny" || decision.notify) this.host.log(`qrexec: ${what}: denied: ${reason}${rule}`);
      this.host.called(source, { service, argument: q.argument, target: q.target, action: "deny", reason });
      sock.end(encodeFrame(FrameType.RESULT, Buffer.from([0])));
      return;
    }
    let opened: OpenedService;
    try {
      opened = await this.host.open(decision.target, {
        user: decision.user,
        autostart: decision.autostart,
        inv: { service, argument: q.argument, source, requestedTarget: decision.intended },
      });
    } catch (err) {
      this.host.log(`qrexec: ${what}: allowed to ${decision.target}, but it cannot run there: ${(err as Error).message}`);
      this.host.called(source, { service, argument: q.argument, target: decision.target, action: "deny", reason: "the target could not run it" });
      sock.end(encodeFrame(FrameType.RESULT, Buffer.from([0])));
      return;
    }
    const where = opened.domain;
    if (decision.notify) this.host.log(`qrexec: ${what}: allowed, running in ${where}`);
    this.host.called(source, { service, argument: q.argument, target: where, action: "allow" });
    try {
      sock.write(encodeFrame(FrameType.RESULT, Buffer.from([1])));
      const code = await relay(sock, opened.proc, rest);
      if (code !== null) sock.end(encodeExit(code));
    } finally {
      await opened.release();
    }
  }

  private async decide(q: CallQuery, sock: net.Socket): Promise<Decision> {
    let rules: PolicyRule[];
    try {
      rules = this.host.loadPolicy();
    } catch (err) {
      const reason = `the policy has an error, so every call is refused until it is fixed: ${(err as Error).message}`;
      return { action: "deny", reason, intended: q.target, notify: true };
    }
    const facts = this.host.facts();
    const d = evaluate(rules, q, facts);
    if (d.action !== "ask") return d;
    // The caller may give up while a person decides; its socket stays paused meanwhile.
    const answer = await this.host.ask({
      source: q.source,
      service: q.service,
      argument: q.argument,
      requestedTarget: d.intended,
      targets: d.targets,
      defaultTarget: d.defaultTarget,
    });
    if (sock.destroyed) return { action: "deny", reason: "the caller went away while asked", rule: d.rule, intended: d.intended, notify: false };
    if (answer === null) return { action: "deny", reason: "refused at the prompt, or no answer in time", rule: d.rule, intended: d.intended, notify: true };
    return decideAnswer(d, answer, q, this.host.facts());
  }
}

function clip(s: string): string {
  return JSON.stringify(s.length > 80 ? `${s.slice(0, 80)}…` : s);
}

/**
 * Reads the REQUEST frame. Its header is checked before its payload is waited for, so a huge
 * length costs nothing; bytes after it (early stdin) are returned undecoded.
 */
function readRequest(sock: net.Socket, timeoutMs: number): Promise<{ request: qrexecV1.CallRequest; rest: Buffer }> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const done = (err: Error | null, value?: { request: qrexecV1.CallRequest; rest: Buffer }) => {
      clearTimeout(timer);
      sock.off("data", onData);
      sock.off("end", onEnd);
      sock.off("close", onEnd);
      sock.pause();
      if (err) reject(err);
      else resolve(value!);
    };
    const timer = setTimeout(() => done(new Dropped(`no request within ${timeoutMs} ms`)), timeoutMs);
    const onEnd = () => done(new Dropped("closed before a whole request arrived"));
    const onData = (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      if (buf.length < FRAME_HEADER_BYTES) return;
      const type = buf.readUInt8(0);
      const len = buf.readUInt32BE(1);
      if (type !== FrameType.REQUEST) return done(new Dropped(`garbled: the first frame is of type 0x${type.toString(16)}, not a request`));
      if (len > MAX_REQUEST_BYTES) return done(new Dropped(`oversized request (${len} bytes, at most ${MAX_REQUEST_BYTES})`));
      if (buf.length < FRAME_HEADER_BYTES + len) return;
      let request: qrexecV1.CallRequest;
      try {
        request = qrexecV1.CallRequest.decode(buf.subarray(FRAME_HEADER_BYTES, FRAME_HEADER_BYTES + len));
      } catch (err) {
        return done(new Dropped(`garbled request: ${(err as Error).message}`));
      }
      done(null, { request, rest: buf.subarray(FRAME_HEADER_BYTES + len) });
    };
    sock.on("data", onData);
    sock.on("end", onEnd);
    sock.on("close", onEnd);
    sock.resume();
  });
}

/**
 * Carries one call's data: STDIN frames from the caller to the service, its stdout and stderr
 * back as frames, with back-pressure both ways. Resolves with the exit code to report, or null
 * when the caller went away (the service is then cancelled).
 */
function relay(sock: net.Socket, proc: ServiceProcess, early: Buffer): Promise<number | null> {
  return new Promise((resolve) => {
    const decoder = new FrameDecoder();
    let stdinEnded = false;
    let closed = false;
    const abort = () => {
      if (closed) return;
      closed = true;
      proc.cancel();
      proc.stdout.resume();
      proc.stderr.resume();
      sock.destroy();
    };
    const onFrames = (frames: Frame[]) => {
      for (const f of frames) {
        if (f.type !== FrameType.STDIN || stdinEnded) return abort();
        if (f.payload.length === 0) {
          stdinEnded = true;
          proc.stdin.end();
        } else if (!proc.stdin.write(f.payload)) {
          sock.pause();
          proc.stdin.once("drain", () => sock.resume());
        }
      }
    };
    const feed = (chunk: Buffer) => {
      try {
        onFrames(decoder.push(chunk));
      } catch {
        abort();
      }
    };
    proc.stdin.on("error", () => {});
    sock.on("data", feed);
    sock.on("end", () => {
      if (!stdinEnded) {
        stdinEnded = true;
        proc.stdin.end();
      }
    });
    sock.on("close", abort);
    if (early.length) feed(early);
    sock.resume();

    const pump = (src: Readable, type: typeof FrameType.STDOUT | typeof FrameType.STDERR) =>
      new Promise<void>((done) => {
        src.on("data", (chunk: Buffer) => {
          if (closed) return;
          let more = true;
          for (const frame of encodeData(type, chunk)) more = sock.write(frame);
          if (!more) {
            src.pause();
            sock.once("drain", () => src.resume());
          }
        });
        src.once("end", () => {
          if (!closed) sock.write(encodeFrame(type));
          done();
        });
      });
    void Promise.all([proc.exit, pump(proc.stdout, FrameType.STDOUT), pump(proc.stderr, FrameType.STDERR)]).then(
      ([exit]) => {
        sock.off("close", abort);
        resolve(closed ? null : exitCode(exit));
      },
      () => {
        abort();
        resolve(null);
      },
    );
  });
}

/** A shell's view of how a process ended: its code, or 128 + the signal number. */
function exitCode(exit: { code: number | null; signal: string | null }): number {
  if (exit.signal) return 128 + (os.constants.signals[exit.signal as keyof typeof os.constants.signals] ?? 0);
  return exit.code ?? EXIT_REFUSED;
}
