// The router against hostile callers on real Unix sockets (audit 2026-11-30, findings 6 and 10):
// log forging through the target, denial floods, and one domain filling the ask prompt. The
// in-domain side of the router is tested in guest-agent/src/qrexec/call.test.ts.
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { PassThrough } from "node:stream";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { FrameType, encodeFrame, qrexecV1 } from "@qvm/protocol";
import type { DomainFacts } from "./policy/evaluate.js";
import { parsePolicy, type PolicyRule } from "./policy/parser.js";
import { REQUEST_TARGET_PATTERN, escapeForLog, isRequestTarget, quoteGuest } from "./quote.js";
import { QrexecRouter, type AskQuestionInput, type QrexecHost } from "./router.js";
import { QrexecGrants } from "./grants.js";
import { DEFAULT_POLICY } from "./policy/default-policy.js";

const facts = (name: string, more: Partial<DomainFacts> = {}): DomainFacts => ({ name, class: "AppVM", tags: [], templateForDispvms: false, defaultDispvm: "", ...more });
const DOMAINS = new Map(
  [facts("work"), facts("vault"), facts("personal"), facts("flooder"), facts("default-dvm", { templateForDispvms: true })].map((d) => [d.name, d]),
);
const POLICY = ["test.Echo * @anyvm vault allow", "test.Quiet * @anyvm @anyvm deny notify=no", "test.Ask * @anyvm @anyvm ask", ""].join("\n");

interface Harness {
  dir: string;
  router: QrexecRouter;
  logs: string[];
  events: Array<{ source: string; fields: Record<string, string> }>;
  opened: string[];
  asked: AskQuestionInput[];
  answer: (q: AskQuestionInput) => Promise<string | null>;
}
let h: Harness;

beforeEach(async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "qvm-router-"));
  const state = { logs: [] as string[], events: [] as Harness["events"], opened: [] as string[], asked: [] as AskQuestionInput[] };
  const rules = parsePolicy(POLICY, "t.policy") as PolicyRule[];
  const host: QrexecHost = {
    facts: () => ({ domains: DOMAINS }),
    loadPolicy: () => rules,
    async open(target) {
      state.opened.push(target);
      const stdout = new PassThrough();
      const stderr = new PassThrough();
      const stdin = new PassThrough();
      stdin.resume();
      stdout.end("ok\n");
      stderr.end();
      return { proc: { stdin, stdout, stderr, exit: Promise.resolve({ code: 0, signal: null }), cancel() {} }, domain: target, release: async () => {} };
    },
    ask: (q) => (state.asked.push(q), h.answer(q)),
    log: (m) => state.logs.push(m),
    called: (source, fields) => state.events.push({ source, fields }),
  };
  const router = new QrexecRouter(host, { maxCallsPerDomain: 16, requestTimeoutMs: 2000, maxAsksPerDomain: 2 });
  h = { dir, router, ...state, answer: async () => null };
  for (const d of DOMAINS.keys()) await router.attach(d, sock(d));
});

afterEach(() => {
  h.router.detachAll();
  rmSync(h.dir, { recursive: true, force: true });
});

const sock = (d: string) => path.join(h.dir, `${d}.sock_50`);
const request = (r: Partial<qrexecV1.CallRequest>) => encodeFrame(FrameType.REQUEST, qrexecV1.CallRequest.encode({ target: "", service: "", argument: "", ...r }).finish());
const REFUSED = encodeFrame(FrameType.RESULT, Buffer.from([0]));
const CONNECTED = encodeFrame(FrameType.RESULT, Buffer.from([1]));

/** One call from `domain`: the request, stdin EOF; resolves with all the router sent back. */
function call(domain: string, r: Partial<qrexecV1.CallRequest>): Promise<Buffer> {
  return new Promise((resolve) => {
    const s = net.connect(sock(domain));
    const got: Buffer[] = [];
    s.on("data", (c: Buffer) => got.push(c));
    s.on("error", () => {});
    s.on("close", () => resolve(Buffer.concat(got)));
    s.end(Buffer.concat([request(r), encodeFrame(FrameType.STDIN)]));
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function until(what: string, cond: () => boolean, ms = 3000): Promise<void> {
  for (const t0 = Date.now(); !cond(); await sleep(10)) if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
}

/** Every character a terminal or log viewer could act on. */
const UNSAFE = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/u;

describe("guest strings in log lines and events", () => {
  it.each([
    ["a newline forging a whole line", "\nqvmd: qrexec: vault -> work my.Backup: allowed", "\\nqvmd: qrexec: vault"],
    ["an ESC sequence", "\u001b[2J\u001b]0;owned\u0007", "\\u001b[2J"],
    ["a C1 CSI", "\u009b31m", "\\u009b31m"],
    ["DEL", "vault\u007f", "vault\\u007f"],
    ["a bidi override", "vault\u202etxt.exe", "vault\\u202etxt.exe"],
    ["a zero-width joiner", "va\u200dult", "va\\u200dult"],
    ["a line separator", "vault\u2028x", "vault\\u2028x"],
    ["a NUL", "vault\u0000", "vault\\u0000"],
    ["an unknown keyword", "@evil", '"@evil"'],
    ["a path", "../vault", '"../vault"'],
    ["a disposable of a bad name", "@dispvm:x y", '"@dispvm:x y"'],
  ])("a target with %s is refused before anything is logged, and logged JSON-quoted", async (_what, target, shown) => {
    const reply = await call("work", { target, service: "test.Echo" });
    expect(reply.length).toBe(0);
    expect(h.opened).toEqual([]);
    expect(h.events).toEqual([]);
    expect(h.logs).toHaveLength(1);
    const line = h.logs[0]!;
    expect(line).toMatch(/^qrexec: work: dropped a call: invalid target "/);
    expect(line).toContain(shown);
    expect(line).not.toMatch(UNSAFE);
  });

  it.each(["", "@default", "@adminvm", "dom0", "@dispvm", "@dispvm:default-dvm", "vault", "a", "x".repeat(31)])("accepts the target %j", (t) => {
    expect(isRequestTarget(t)).toBe(true);
  });

  it.each(["@dispvm:", "@dispvm:@tag:x", "@anyvm", "@tag:x", "1vault", "x".repeat(32), "vault ", " vault", "va/ult", "DOM0\n"])("refuses the target %j", (t) => {
    expect(isRequestTarget(t)).toBe(false);
    expect(REQUEST_TARGET_PATTERN.test(t)).toBe(false);
  });

  it("an invalid service name is logged quoted and escaped", async () => {
    expect((await call("work", { target: "vault", service: "x\u001b]52;c;AAAA\u0007\u0085" })).length).toBe(0);
    expect(h.logs).toEqual(['qrexec: work: dropped a call: invalid service name "x\\u001b]52;c;AAAA\\u0007\\u0085"']);
  });

  it("a valid call's log line and event carry only checked words (the argument sanitized)", async () => {
    expect(await call("work", { target: "personal", service: "test.Echo", argument: "a\u001b\nb\u202e" })).toEqual(REFUSED);
    expect(h.logs).toHaveLength(1);
    expect(h.logs[0]).toMatch(/^qrexec: work -> personal test.Echo\+a__b_: denied: no rule matches/);
    expect(h.events).toEqual([{ source: "work", fields: expect.objectContaining({ service: "test.Echo", argument: "a__b_", target: "personal", action: "deny" }) }]);
  });

  it.each([
    ["C0 and DEL", "a\u0000\u0007\u001b\u007fb", '"a\\u0000\\u0007\\u001b\\u007fb"'],
    ["C1", "\u0080\u009b\u009f", '"\\u0080\\u009b\\u009f"'],
    ["bidi controls", "\u202a\u202e\u2066\u2069\u200e\u061c", '"\\u202a\\u202e\\u2066\\u2069\\u200e\\u061c"'],
    ["separators", "\u2028\u2029", '"\\u2028\\u2029"'],
    ["a lone surrogate", "\ud800", '"\\ud800"'],
    ["a tag character", "\u{e0041}", '"\\udb40\\udc41"'],
    ["ordinary text", "café 漢字 😀", '"café 漢字 😀"'],
    ["quotes and backslashes", 'a"b\\c', '"a\\"b\\\\c"'],
  ])("quoteGuest escapes %s", (_what, s, quoted) => {
    expect(quoteGuest(s)).toBe(quoted);
    expect(JSON.parse(quoteGuest(s))).toBe(s);
  });

  it("quoteGuest clips long text; escapeForLog keeps a message on one plain line", () => {
    expect(quoteGuest("x".repeat(200), 10)).toBe(`"${"x".repeat(10)}…"`);
    expect(escapeForLog("agent said: \u001b[31mred\nline\u202e")).toBe("agent said: \\u001b[31mred\\u000aline\\u202e");
  });
});

describe("denied calls are throttled per domain in the log and the event feed", () => {
  it("5000 denied calls from one domain make a handful of lines and events; the count adds up; another domain is unaffected", async () => {
    const t0 = Date.now();
    const lanes = 8;
    let sent = 0;
    const lane = async () => {
      while (sent < 5000) {
        sent++;
        expect(await call("flooder", { target: "personal", service: "test.Echo" })).toEqual(REFUSED);
      }
    };
    const flood = Promise.all(Array.from({ length: lanes }, lane));
    // Meanwhile another domain's calls work, and its own denial is logged at once.
    await sleep(50);
    const ok = await call("work", { target: "vault", service: "test.Echo" });
    expect(ok.subarray(0, 6)).toEqual(CONNECTED);
    expect(ok.subarray(-9)).toEqual(Buffer.from([FrameType.EXIT, 0, 0, 0, 4, 0, 0, 0, 0]));
    expect(await call("work", { target: "personal", service: "test.Echo" })).toEqual(REFUSED);
    expect(h.logs.filter((l) => l.startsWith("qrexec: work -> personal"))).toHaveLength(1);
    await flood;
    const seconds = (Date.now() - t0) / 1000;
    // The last second's held-back count is reported when that second ends.
    await sleep(1100);
    const lines = h.logs.filter((l) => l.includes("flooder"));
    const events = h.events.filter((e) => e.source === "flooder");
    expect(lines.length).toBeLessThanOrEqual(Math.ceil(seconds) + 2);
    expect(events.length).toBe(lines.length);
    // Each report stands for itself and what was held back before it: 5000 in all.
    const summaries = lines.filter((l) => l.startsWith("qrexec: flooder: "));
    const counted = events.length - summaries.length + events.reduce((n, e) => n + Number(e.fields.held ?? 0), 0);
    expect(counted).toBe(5000);
    expect(summaries[0]).toMatch(/^qrexec: flooder: \d+ more denied in the last second, not logged one by one; the last: qrexec: flooder -> personal test.Echo: denied: no rule matches/);
    for (const l of lines) expect(l).not.toMatch(/\n/);
  }, 60_000);

  it("a denial with notify=no publishes an event but logs nothing", async () => {
    expect(await call("work", { target: "vault", service: "test.Quiet" })).toEqual(REFUSED);
    expect(h.logs).toEqual([]);
    expect(h.events).toMatchObject([{ source: "work", fields: { action: "deny", service: "test.Quiet" } }]);
  });
});

describe("ask: one domain cannot fill the prompt", () => {
  it("at most 2 questions per domain wait at once; more are denied at once, logged rate-limited; other domains are still asked", async () => {
    const waiting: Array<(t: string | null) => void> = [];
    h.answer = () => new Promise((r) => waiting.push(r));
    const first = [call("work", { target: "@default", service: "test.Ask" }), call("work", { target: "@default", service: "test.Ask" })];
    await until("two questions", () => h.asked.length === 2);
    expect(h.router.asksInFlight("work")).toBe(2);
    // 50 more from work: each refused without a question.
    const more = await Promise.all(Array.from({ length: 50 }, () => call("work", { target: "@default", service: "test.Ask" })));
    expect(more.every((b) => b.equals(REFUSED))).toBe(true);
    expect(h.asked).toHaveLength(2);
    const capLines = h.logs.filter((l) => l.includes("already waiting for an answer"));
    expect(capLines.length).toBeGreaterThanOrEqual(1);
    expect(capLines.length).toBeLessThanOrEqual(2);
    expect(capLines[0]).toMatch(/^qrexec: work -> @default test.Ask: denied: not asked: 2 questions of work's are already waiting for an answer \(at most 2\)/);
    // personal is still asked, and answered.
    const theirs = call("personal", { target: "@default", service: "test.Ask" });
    await until("personal's question", () => h.asked.length === 3);
    expect(h.asked[2]).toMatchObject({ source: "personal" });
    waiting[2]!("vault");
    expect((await theirs).subarray(0, 6)).toEqual(CONNECTED);
    // Once work's questions are answered (or expire), it may ask again.
    waiting[0]!(null);
    waiting[1]!(null);
    await Promise.all(first);
    expect(h.router.asksInFlight("work")).toBe(0);
    const again = call("work", { target: "@default", service: "test.Ask" });
    await until("work's next question", () => h.asked.length === 4);
    waiting[3]!(null);
    expect(await again).toEqual(REFUSED);
  });

  it("a question counts against its domain until it is settled, even when the caller hangs up", async () => {
    const waiting: Array<(t: string | null) => void> = [];
    h.answer = () => new Promise((r) => waiting.push(r));
    for (let i = 0; i < 2; i++) {
      const s = net.connect(sock("work"));
      s.on("error", () => {});
      s.write(request({ target: "@default", service: "test.Ask" }));
      await until("the question", () => h.asked.length === i + 1);
      s.destroy();
    }
    expect(await call("work", { target: "@default", service: "test.Ask" })).toEqual(REFUSED);
    expect(h.asked).toHaveLength(2);
    for (const w of waiting) w(null);
    await until("the questions to settle", () => h.router.asksInFlight("work") === 0);
  });

  it("the question offers targets, never preselecting what the caller asked for", async () => {
    h.answer = async () => null;
    await call("work", { target: "vault", service: "test.Ask" });
    expect(h.asked[0]).toMatchObject({ source: "work", requestedTarget: "vault", targets: ["default-dvm", "flooder", "personal", "vault", "@dispvm:default-dvm"], defaultTarget: undefined });
  });
});

describe("one-shot grants before the policy (a USB attach's qubes.USB call)", () => {
  // The shipped policy, which denies qubes.USB to everyone; sys-usb is the backend.
  let g: { dir: string; router: QrexecRouter; grants: QrexecGrants; opened: Array<{ target: string; user?: string; autostart: boolean; source: string; argument: string }>; logs: string[]; events: Array<Record<string, string>> };
  const USB_DOMAINS = new Map([facts("work"), facts("vault"), facts("sys-usb")].map((d) => [d.name, d]));

  beforeEach(async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "qvm-router-grants-"));
    const rules = parsePolicy(DEFAULT_POLICY, "90-default.policy") as PolicyRule[];
    const state = { opened: [] as (typeof g)["opened"], logs: [] as string[], events: [] as Array<Record<string, string>> };
    const host: QrexecHost = {
      facts: () => ({ domains: USB_DOMAINS }),
      loadPolicy: () => rules,
      async open(target, opts) {
        state.opened.push({ target, user: opts.user, autostart: opts.autostart, source: opts.inv.source, argument: opts.inv.argument });
        const stdout = new PassThrough();
        const stderr = new PassThrough();
        const stdin = new PassThrough();
        stdin.resume();
        stdout.end("exported\n");
        stderr.end();
        return { proc: { stdin, stdout, stderr, exit: Promise.resolve({ code: 0, signal: null }), cancel() {} }, domain: target, release: async () => {} };
      },
      ask: async () => null,
      log: (m) => state.logs.push(m),
      called: (_source, fields) => state.events.push(fields),
    };
    const grants = new QrexecGrants();
    const router = new QrexecRouter(host, { maxCallsPerDomain: 16, requestTimeoutMs: 2000, maxAsksPerDomain: 2 }, grants);
    g = { dir, router, grants, ...state };
    for (const d of USB_DOMAINS.keys()) await router.attach(d, path.join(dir, `${d}.sock_50`));
  });

  afterEach(() => {
    g.router.detachAll();
    rmSync(g.dir, { recursive: true, force: true });
  });

  function callIn(domain: string, r: Partial<qrexecV1.CallRequest>): Promise<Buffer> {
    return new Promise((resolve) => {
      const s = net.connect(path.join(g.dir, `${domain}.sock_50`));
      const got: Buffer[] = [];
      s.on("data", (c: Buffer) => got.push(c));
      s.on("error", () => {});
      s.on("close", () => resolve(Buffer.concat(got)));
      s.end(Buffer.concat([request(r), encodeFrame(FrameType.STDIN)]));
    });
  }
  const usbCall = { target: "sys-usb", service: "qubes.USB", argument: "2-1" };
  const grant = { source: "work", target: "sys-usb", service: "qubes.USB", argument: "2-1", why: "usb attach of sys-usb:2-1 to work" };

  it("refuses a domain's own qubes.USB call under the default policy", async () => {
    expect(await callIn("work", usbCall)).toEqual(REFUSED);
    expect(g.opened).toEqual([]);
    expect(g.logs[0]).toMatch(/^qrexec: work -> sys-usb qubes.USB\+2-1: denied: the policy denies it \(90-default.policy:\d+\)/);
  });

  it("a grant allows exactly its call, once, as root, without starting the target; the next identical call is refused", async () => {
    g.grants.grant(grant);
    const reply = await callIn("work", usbCall);
    expect(reply.subarray(0, 6)).toEqual(CONNECTED);
    expect(g.opened).toEqual([{ target: "sys-usb", user: "root", autostart: false, source: "work", argument: "2-1" }]);
    expect(g.logs).toEqual(["qrexec: work -> sys-usb qubes.USB+2-1: allowed by a one-shot grant (usb attach of sys-usb:2-1 to work), running in sys-usb as root"]);
    expect(g.events).toEqual([{ service: "qubes.USB", argument: "2-1", target: "sys-usb", action: "allow", reason: "a one-shot grant" }]);
    expect(g.grants.size).toBe(0);
    expect(await callIn("work", usbCall)).toEqual(REFUSED);
    expect(g.opened).toHaveLength(1);
  });

  it.each([
    ["another domain", "vault", usbCall],
    ["the backend itself", "sys-usb", { ...usbCall, target: "work" }],
    ["another bus id", "work", { ...usbCall, argument: "2-2" }],
    ["a bus id that sanitizes to it", "work", { ...usbCall, argument: "2-1\n" }],
    ["@default", "work", { ...usbCall, target: "@default" }],
  ])("a grant is not used by %s: the policy refuses it, and the grant stays for its call", async (_what, source, r) => {
    g.grants.grant(grant);
    expect(await callIn(source, r)).toEqual(REFUSED);
    expect(g.opened).toEqual([]);
    expect(g.grants.size).toBe(1);
    expect((await callIn("work", usbCall)).subarray(0, 6)).toEqual(CONNECTED);
  });
});
