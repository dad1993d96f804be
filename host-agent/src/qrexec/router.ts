// The qrexec router: the only door between domains (docs/qrexec-protocol.md).
//
// Each running domain gets its own Unix socket, `<vsock uds>_50`, where vhost-device-vsock
// delivers the domain's connections to the host's vsock port 50. Which socket a call arrives on
// is who is calling; nothing in the request can say otherwise. A call is: one REQUEST frame
// (bounded, validated), a policy decision (maybe a question to a person), then either a bare
// "refused" or "connected" followed by the service's data both ways and its exit code. A call
// qvmd arranged itself (a USB attach's qubes.USB) is allowed instead by its one-shot grant
// (grants.ts: in memory, exactly that call, once), which is looked up before the policy.
//
// Everything from the domain is hostile: requests are size-checked before they are buffered,
// the first frame must arrive within requestTimeoutMs, a domain holds at most maxCallsPerDomain
// calls at once (more are closed at once, so a flood costs only the flooder) and has at most
// maxAsksPerDomain questions waiting for a person. The target must have a target's shape before
// anything about the call is logged; other guest text in a log line is JSON-quoted (quote.ts).
// Dropped and denied calls are logged, and denials published, at most once a second per domain,
// with a count of what was held back (throttle.ts).
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
import { QrexecGrants } from "./grants.js";
import { escapeForLog, isRequestTarget, quoteGuest } from "./quote.js";
import type { ServiceInvocation } from "./service-command.js";
import { PerDomainThrottle } from "./throttle.js";

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
  /**
   * The rules of DATA/policy.d; throws (naming file:line) when the policy has an error. Called
   * for every call: qvmd's adapter keeps the parsed rules and re-reads only changed files.
   */
  loadPolicy(): PolicyRule[];
  /** Starts the service in `target`: a domain name, "dom0" (the admin domain) or "@dispvm:TEMPLATE". */
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
  /** Questions one domain may have waiting for a person at once; its further asks are denied at once (default 2). */
  maxAsksPerDomain?: number;
}

export const DEFAULT_ROUTER_LIMITS: Required<RouterLimits> = { maxCallsPerDomain: 16, requestTimeoutMs: 5000, maxAsksPerDomain: 2 };
const MAX_TARGET_LENGTH = 64;

class Dropped extends Error {}

/** A denied call as the throttle reports it: its log line (null when notify=no) and its event's fields. */
interface Denial {
  line: string | null;
  fields: Record<string, string>;
}

export class QrexecRouter {
  private readonly inflight = new Map<string, number>();
  private readonly asking = new Map<string, number>();
  private readonly servers = new Map<string, { server: net.Server; path: string }>();
  private readonly drops: PerDomainThrottle<string>;
  private readonly denials: PerDomainThrottle<Denial>;
  private readonly maxAsks: number;

  constructor(
    private readonly host: QrexecHost,
    private readonly limits: RouterLimits = DEFAULT_ROUTER_LIMITS,
    /** One-shot grants qvmd arranged (a USB attach's qubes.USB call): checked before the policy. */
    readonly grants: QrexecGrants = new QrexecGrants(),
  ) {
    this.maxAsks = limits.maxAsksPerDomain ?? DEFAULT_ROUTER_LIMITS.maxAsksPerDomain;
    this.drops = new PerDomainThrottle<string>((source, why, held) => {
      const more = held ? `${held.count} more dropped in the last second` : "";
      if (why === undefined) host.log(`qrexec: ${source}: ${more}, the last: ${held!.last}`);
      else host.log(`qrexec: ${source}: dropped a call: ${why}${more ? ` (${more})` : ""}`);
    });
    this.denials = new PerDomainThrottle<Denial>((source, d, held) => {
      const more = held ? `${held.count} more denied in the last second, not logged one by one` : "";
      if (d === undefined) {
        // The second is over: one line and one event for everything held back.
        host.log(`qrexec: ${source}: ${more}; the last: ${held!.last.line ?? "(notify=no)"}`);
        host.called(source, { ...held!.last.fields, held: String(held!.count) });
        return;
      }
      if (d.line !== null) host.log(more ? `${d.line} (and ${more})` : d.line);
      host.called(source, held ? { ...d.fields, held: String(held.count) } : d.fields);
    });
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
    this.drops.forget(domain);
    this.denials.forget(domain);
  }

  detachAll(): void {
    for (const d of [...this.servers.keys()]) this.detach(d);
  }

  callsInFlight(domain: string): number {
    return this.inflight.get(domain) ?? 0;
  }

  /** Questions of `domain`'s calls waiting for a person. */
  asksInFlight(domain: string): number {
    return this.asking.get(domain) ?? 0;
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
      else this.host.log(`qrexec: ${source}: call failed: ${escapeForLog((err as Error).message)}`);
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
    // Nothing the caller chose is logged before it has been checked: each of these drops names
    // the offending string JSON-quoted, and the checked words appear bare in the lines below.
    if (!isValidServiceName(service)) throw new Dropped(`invalid service name ${quoteGuest(service)}`);
    if (request.argument.length > MAX_ARGUMENT_LENGTH) throw new Dropped(`argument longer than ${MAX_ARGUMENT_LENGTH} characters`);
    if (request.target.length > MAX_TARGET_LENGTH) throw new Dropped(`target longer than ${MAX_TARGET_LENGTH} characters`);
    if (!isRequestTarget(request.target)) throw new Dropped(`invalid target ${quoteGuest(request.target)}: not @default, @adminvm, dom0, @dispvm[:NAME] or a domain name`);
    const q: CallQuery = { service, argument: sanitizeArgument(request.argument), source, target: request.target };
    const what = `${source} -> ${q.target || "@default"} ${q.argument ? `${service}+${q.argument}` : service}`;

    // A call qvmd arranged itself is allowed by its grant, once, exactly as granted (the raw
    // argument, the target by name); everything else goes to the policy.
    const granted = this.grants.take({ source, target: request.target, service, argument: request.argument });
    const decision: Decision = granted
      ? { action: "allow", target: granted.target, user: granted.user, autostart: false, notify: true, intended: granted.target }
      : await this.decide(q, sock);
    if (decision.action !== "allow") {
      const reason = decision.action === "deny" ? decision.reason : "not allowed";
      const rule = decision.rule ? ` (${decision.rule.file}:${decision.rule.line})` : "";
      const notify = decision.action !== "deny" || decision.notify;
      this.refuse(source, notify ? `qrexec: ${what}: denied: ${reason}${rule}` : null, { service, argument: q.argument, target: q.target, action: "deny", reason });
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
      this.refuse(source, `qrexec: ${what}: allowed to ${decision.target}, but it cannot run there: ${escapeForLog((err as Error).message)}`, {
        service,
        argument: q.argument,
        target: decision.target,
        action: "deny",
        reason: "the target could not run it",
      });
      sock.end(encodeFrame(FrameType.RESULT, Buffer.from([0])));
      return;
    }
    const where = opened.domain;
    if (granted) this.host.log(`qrexec: ${what}: allowed by a one-shot grant (${granted.why}), running in ${where} as ${granted.user}`);
    else if (decision.notify) this.host.log(`qrexec: ${what}: allowed, running in ${where}`);
    this.host.called(source, granted ? { service, argument: q.argument, target: where, action: "allow", reason: "a one-shot grant" } : { service, argument: q.argument, target: where, action: "allow" });
    try {
      sock.write(encodeFrame(FrameType.RESULT, Buffer.from([1])));
      const code = await relay(sock, opened.proc, rest);
      if (code !== null) sock.end(encodeExit(code));
    } finally {
      await opened.release();
    }
  }

  /** Logs (unless `line` is null) and publishes a refusal, at most once a second per domain. */
  private refuse(source: string, line: string | null, fields: Record<string, string>): void {
    this.denials.note(source, { line, fields });
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
    // One domain cannot fill the prompt: past its few waiting questions, its asks are denied.
    const asking = this.asking.get(q.source) ?? 0;
    if (asking >= this.maxAsks) {
      const reason = `not asked: ${asking} questions of ${q.source}'s are already waiting for an answer (at most ${this.maxAsks})`;
      return { action: "deny", reason, rule: d.rule, intended: d.intended, notify: true };
    }
    this.asking.set(q.source, asking + 1);
    let answer: string | null;
    try {
      // The caller may give up while a person decides; its socket stays paused meanwhile. The
      // question still counts against its domain until it is answered or expires.
      answer = await this.host.ask({
        source: q.source,
        service: q.service,
        argument: q.argument,
        requestedTarget: d.intended,
        targets: d.targets,
        defaultTarget: d.defaultTarget,
      });
    } finally {
      const left = (this.asking.get(q.source) ?? 1) - 1;
      if (left) this.asking.set(q.source, left);
      else this.asking.delete(q.source);
    }
    if (sock.destroyed) return { action: "deny", reason: "the caller went away while asked", rule: d.rule, intended: d.intended, notify: false };
    if (answer === null) return { action: "deny", reason: "refused at the prompt, or no answer in time", rule: d.rule, intended: d.intended, notify: true };
    return decideAnswer(d, answer, q, this.host.facts());
  }
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
        return done(new Dropped(`garbled request: ${escapeForLog((err as Error).message)}`));
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
