// The qrexec router (host side) and the in-domain caller (this package) against each other over
// real Unix sockets, with services run as local processes behind the router's QrexecHost
// interface. The VM path (vsock, agents, policy files) is covered end to end in tests/e2e.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { PassThrough, Readable } from "node:stream";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { QrexecRouter, parsePolicy, type DomainFacts, type QrexecHost, type ServiceProcess } from "@qvm/host-agent";
import { FrameType, MAX_REQUEST_BYTES, encodeFrame, qrexecV1 } from "@qvm/protocol";
import { callService, type CallOutcome } from "./client.js";

const facts = (name: string, more: Partial<DomainFacts> = {}): DomainFacts => ({ name, class: "AppVM", tags: [], templateForDispvms: false, defaultDispvm: "", ...more });
const DOMAINS = new Map(["work", "vault", "personal"].map((n) => [n, facts(n)]));

function localService(script: string, env: Record<string, string>): ServiceProcess {
  const child = spawn("sh", ["-c", script], { env: { ...process.env, ...env }, stdio: "pipe" });
  return {
    stdin: child.stdin,
    stdout: child.stdout,
    stderr: child.stderr,
    exit: new Promise((r) => child.once("close", (code, signal) => r({ code, signal }))),
    cancel: () => child.kill("SIGKILL"),
  };
}

interface Harness {
  dir: string;
  router: QrexecRouter;
  logs: string[];
  opened: Array<{ target: string; env: Record<string, string> }>;
  released: number;
  cancelled: number;
  policy: string;
  answer: (q: unknown) => Promise<string | null>;
  socket(domain: string): string;
}

let h: Harness;

beforeEach(async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "qvm-qrexec-"));
  const state = { logs: [] as string[], opened: [] as Harness["opened"], released: 0, cancelled: 0 };
  const host: QrexecHost = {
    facts: () => ({ domains: DOMAINS }),
    loadPolicy: () => {
      const entries = parsePolicy(h.policy, "test.policy");
      return entries.filter((e) => e.kind === "rule") as never;
    },
    async open(target, opts) {
      if (target === "nosuch-runtime") throw new Error("cannot start");
      const env = { QREXEC_REMOTE_DOMAIN: opts.inv.source, SERVICE: opts.inv.service, ARG: opts.inv.argument, REQ: opts.inv.requestedTarget };
      state.opened.push({ target, env });
      const scripts: Record<string, string> = {
        "test.Echo": "cat",
        "test.Whoami": 'echo "$QREXEC_REMOTE_DOMAIN $SERVICE+$ARG $REQ"; echo oops >&2; exit 3',
        "test.Sleep": "while :; do echo tick; sleep 0.1; done",
      };
      const script = scripts[opts.inv.service] ?? "exit 0";
      const proc = localService(script, env);
      const cancel = proc.cancel;
      proc.cancel = () => {
        state.cancelled++;
        cancel();
      };
      return { proc, domain: target, release: async () => void state.released++ };
    },
    ask: (q) => h.answer(q),
    log: (m) => state.logs.push(m),
    called: () => {},
  };
  const router = new QrexecRouter(host, { maxCallsPerDomain: 3, requestTimeoutMs: 500 });
  h = {
    dir,
    router,
    ...state,
    get logs() {
      return state.logs;
    },
    get opened() {
      return state.opened;
    },
    get released() {
      return state.released;
    },
    get cancelled() {
      return state.cancelled;
    },
    policy: "test.Echo * work vault allow\ntest.Whoami * @anyvm @default allow target=vault\ntest.Whoami * @anyvm @anyvm allow\ntest.Sleep * @anyvm vault allow\ntest.Ask * work @anyvm ask\n",
    answer: async () => null,
    socket: (d) => path.join(dir, `${d}.sock_50`),
  } as Harness;
  for (const d of DOMAINS.keys()) await router.attach(d, h.socket(d));
});

afterEach(() => {
  h.router.detachAll();
  rmSync(h.dir, { recursive: true, force: true });
});

async function call(domain: string, target: string, service: string, opts: { argument?: string; stdin?: string } = {}) {
  const conn = net.connect(h.socket(domain));
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  stdout.on("data", (c: Buffer) => out.push(c));
  stderr.on("data", (c: Buffer) => err.push(c));
  const outcome: CallOutcome = await callService(conn, { target, service, argument: opts.argument ?? "" }, { stdin: opts.stdin === undefined ? null : Readable.from([Buffer.from(opts.stdin)]), stdout, stderr });
  return { ...outcome, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() };
}

/** Sends raw bytes on a domain's socket; resolves with everything the router sent back. */
function raw(domain: string, bytes: Buffer, endAfter = true): Promise<Buffer> {
  return new Promise((resolve) => {
    const s = net.connect(h.socket(domain));
    const got: Buffer[] = [];
    s.on("data", (c: Buffer) => got.push(c));
    s.on("error", () => {});
    s.on("close", () => resolve(Buffer.concat(got)));
    s.write(bytes);
    if (endAfter) s.end();
  });
}

const request = (r: Partial<qrexecV1.CallRequest>) => encodeFrame(FrameType.REQUEST, qrexecV1.CallRequest.encode({ target: "", service: "", argument: "", ...r }).finish());

describe("qrexec calls through the router", () => {
  it("carries data both ways and reports the service's exit code", async () => {
    const big = "x".repeat(300_000);
    const r = await call("work", "vault", "test.Echo", { stdin: big });
    expect(r).toMatchObject({ accepted: true, code: 0 });
    expect(r.stdout).toBe(big);
    expect(h.released).toBe(1);
  });

  it("tells the service who called from the socket, with the argument sanitized and the requested target", async () => {
    const r = await call("personal", "@default", "test.Whoami", { argument: "a b/c" });
    expect(r.code).toBe(3);
    expect(r.stdout).toBe("personal test.Whoami+a_b_c @default\n");
    expect(r.stderr).toBe("oops\n");
  });

  it("ignores a source claimed in the request body: identity is the socket", async () => {
    // Field 4 ("source") is reserved in CallRequest: a forged one is skipped by the decoder.
    const forged = Buffer.concat([qrexecV1.CallRequest.encode({ target: "vault", service: "test.Whoami", argument: "" }).finish(), Buffer.from([0x22, 5, ...Buffer.from("vault")])]);
    const reply = await raw("personal", Buffer.concat([encodeFrame(FrameType.REQUEST, forged), encodeFrame(FrameType.STDIN)]), false);
    expect(reply.subarray(0, 6)).toEqual(encodeFrame(FrameType.RESULT, Buffer.from([1])));
    expect(reply.toString()).toContain("personal test.Whoami+ vault");
    expect(h.opened.at(-1)?.env.QREXEC_REMOTE_DOMAIN).toBe("personal");
  });

  it("answers a caller that half-closes its side after sending its input (socat at EOF)", async () => {
    const reply = await raw("work", Buffer.concat([request({ target: "vault", service: "test.Echo" }), encodeFrame(FrameType.STDIN, Buffer.from("half")), encodeFrame(FrameType.STDIN)]));
    expect(reply.subarray(0, 6)).toEqual(encodeFrame(FrameType.RESULT, Buffer.from([1])));
    expect(reply.toString()).toContain("half");
    expect(reply.subarray(-9)).toEqual(Buffer.from([FrameType.EXIT, 0, 0, 0, 4, 0, 0, 0, 0]));
  });

  it("refuses a denied call with nothing but 'refused', and runs nothing", async () => {
    const r = await call("personal", "vault", "test.Echo");
    expect(r).toEqual({ accepted: false, code: 126, stdout: "", stderr: "" });
    expect(h.opened).toEqual([]);
    expect(h.logs.join("\n")).toMatch(/personal -> vault test.Echo: denied: no rule matches/);
  });

  it("refuses every call while the policy has an error, naming the file and line in the log", async () => {
    h.policy = "test.Echo * work vault allow\ntest.Echo * work vault maybe\n";
    const r = await call("work", "vault", "test.Echo");
    expect(r.code).toBe(126);
    expect(h.logs.join("\n")).toMatch(/every call is refused until it is fixed: test.policy:2: action must be/);
  });

  it("a target that cannot run the service is a refusal to the caller", async () => {
    h.policy = "test.Echo * work @anyvm allow target=vault\n";
    const opened = h.opened.length;
    h.policy = "test.Echo * work vault allow target=personal\n";
    const r = await call("work", "vault", "test.Echo", { stdin: "hi" });
    expect(r).toMatchObject({ accepted: true, stdout: "hi" });
    expect(h.opened.length).toBe(opened + 1);
    expect(h.opened.at(-1)?.target).toBe("personal");
  });

  describe("ask", () => {
    it("runs the call in the target the person chose, among those offered", async () => {
      let asked: unknown;
      h.answer = async (q) => ((asked = q), "personal");
      const r = await call("work", "@default", "test.Ask");
      expect(asked).toMatchObject({ source: "work", service: "test.Ask", requestedTarget: "@default", targets: ["personal", "vault"] });
      expect(r.accepted).toBe(true);
      expect(h.opened.at(-1)?.target).toBe("personal");
    });

    it("denies when the person refuses, gives no answer in time, or answers with a target not offered", async () => {
      for (const answer of [null, "work", "nosuch"]) {
        h.answer = async () => answer;
        expect((await call("work", "@default", "test.Ask")).code).toBe(126);
      }
      expect(h.opened).toEqual([]);
    });
  });

  describe("hostile callers", () => {
    it.each([
      ["a first frame that is not a request", encodeFrame(FrameType.STDIN, Buffer.from("hi")), /not a request/],
      ["an oversized request (refused from its header)", Buffer.concat([Buffer.from([FrameType.REQUEST]), Buffer.from([0, 0x10, 0, 0])]), /oversized request/],
      ["an unknown frame type", Buffer.from([0x77, 0, 0, 0, 1, 0]), /not a request/],
      ["garbage in the request body", encodeFrame(FrameType.REQUEST, Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff])), /garbled request/],
      ["an invalid service name", request({ target: "vault", service: "../../bin/sh" }), /invalid service name/],
      ["an over-long argument", request({ target: "vault", service: "test.Echo", argument: "a".repeat(200) }), /argument longer/],
      ["an over-long target", request({ target: "v".repeat(100), service: "test.Echo" }), /target longer/],
      ["a half request", Buffer.from([FrameType.REQUEST, 0, 0, 0, 9, 1]), /closed before a whole request/],
    ])("drops %s with a log line and no reply", async (_what, bytes, msg) => {
      const reply = await raw("work", bytes);
      expect(reply.length).toBe(0);
      expect(h.logs.join("\n")).toMatch(msg);
      expect(h.opened).toEqual([]);
    });

    it("drops a caller that sends no request in time", async () => {
      const reply = await raw("work", Buffer.alloc(0), false);
      expect(reply.length).toBe(0);
      expect(h.logs.join("\n")).toMatch(/no request within 500 ms/);
    });

    it("keeps the request limit below the frame limit", () => {
      expect(MAX_REQUEST_BYTES).toBeLessThan(64 * 1024);
    });

    it("cancels the service and releases the target when the caller goes away mid-call (noticed at the next write)", async () => {
      const s = net.connect(h.socket("work"));
      s.on("error", () => {});
      s.write(request({ target: "vault", service: "test.Sleep" }));
      await new Promise<void>((r) => s.once("data", () => r()));
      s.destroy();
      for (let i = 0; i < 50 && h.released === 0; i++) await new Promise((r) => setTimeout(r, 20));
      expect(h.cancelled).toBe(1);
      expect(h.released).toBe(1);
      expect(h.router.callsInFlight("work")).toBe(0);
    });

    it("limits calls held at once per domain; a flood from one domain does not stop another", async () => {
      const held: net.Socket[] = [];
      for (let i = 0; i < 3; i++) {
        const s = net.connect(h.socket("work"));
        s.on("error", () => {});
        s.write(request({ target: "vault", service: "test.Sleep" }));
        await new Promise<void>((r) => s.once("data", () => r()));
        held.push(s);
      }
      expect(h.router.callsInFlight("work")).toBe(3);
      // 300 more connections from work: each is closed at once.
      const flood = await Promise.all(Array.from({ length: 300 }, () => raw("work", request({ target: "vault", service: "test.Echo" }))));
      expect(flood.every((b) => b.length === 0)).toBe(true);
      // personal is served normally meanwhile.
      expect(await call("personal", "vault", "test.Whoami")).toMatchObject({ accepted: true, code: 3 });
      const dropLines = h.logs.filter((l) => l.includes("more than 3 calls at once"));
      expect(dropLines.length).toBeGreaterThan(0);
      expect(dropLines.length).toBeLessThan(5); // rate-limited: one line a second per domain
      for (const s of held) s.destroy();
    });
  });
});
