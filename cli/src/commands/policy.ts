import { Args, Flags } from "@oclif/core";
import { createInterface } from "node:readline";
import type { adminV1 } from "@qvm/protocol";
import { QvmError, splitServiceName } from "@qvm/protocol/contracts";
import { QvmCommand, example, loadProtocol } from "../base.js";
import { SilentExit } from "../lib/errors.js";

export default class Policy extends QvmCommand {
  static override summary = "Check the qrexec policy, or answer its questions (ask).";
  static override description = `The qrexec policy decides every call from one domain to another (Qubes 4.2's language; README "qrexec policy"). It lives in DATA/policy.d/*.policy (default /var/lib/qvm/policy.d); 30-user.policy is yours, 90-default.policy is qvm's and rewritten at every qvmd start.

  qvm policy check SERVICE[+ARG] SOURCE TARGET
      What the policy decides for that call and which rule decided it. TARGET is a domain
      name, @default, @dispvm, @dispvm:NAME or @adminvm (dom0). Exit code 0 when the call
      would be allowed or asked, 1 when denied. A policy file with an error is reported with
      its file and line (exit 1): until it is fixed, every call is refused.

  qvm policy ask
      Registers this terminal as the prompt for "ask" rules: each question shows the caller,
      the service and the targets the policy would allow; type one, or "deny". Enter alone
      denies: a target is never chosen for you. A question expires when qvmd's ask timeout
      (60 s) passes and its call is denied; an answer typed after that is not sent. Questions
      from several domains are shown in turn, one domain after another. Runs until Ctrl-C or
      Ctrl-D; the newest registered prompt gets the questions. Lines can also come from a
      pipe, one answer per question.`;
  static override usage = ["check SERVICE[+ARG] SOURCE TARGET [--json]", "ask"];
  static override examples = [
    example("check qubes.Filecopy work @default", "Who may work copy files to?"),
    example("check my.Service+arg work vault --json"),
    example("ask", "Answer qvm-copy's \"where to?\" questions in this terminal."),
  ];
  static override strict = false;
  static override args = {
    action: Args.string({ description: "check or ask.", required: true, options: ["check", "ask"] }),
  };
  static override flags = {
    json: Flags.boolean({ description: "check: print the admin API's CheckPolicyResponse as JSON, its action in words (allow, deny, ask)." }),
  };

  async run(): Promise<void> {
    const { args, argv, flags } = await this.parse(Policy);
    const rest = (argv as string[]).slice(1);
    if (args.action === "check") return this.check(rest, flags.json);
    if (rest.length) throw new QvmError("INVALID_ARGUMENT", `qvm policy ask takes no arguments (got ${JSON.stringify(rest.join(" "))})`);
    return this.ask();
  }

  private async check(rest: string[], json: boolean): Promise<void> {
    if (rest.length !== 3) throw new QvmError("INVALID_ARGUMENT", "usage: qvm policy check SERVICE[+ARG] SOURCE TARGET");
    const [full, source, target] = rest as [string, string, string];
    const { service, argument } = splitServiceName(full);
    const admin = await this.admin();
    const p = await loadProtocol();
    const res = await admin.checkPolicy({ service, argument, source, target });
    // What people read: the policy's own words ("allow"), not the enum.
    const decision: PolicyDecision = { ...res, action: p.policyActionWord(res.action) };
    if (json) this.printJson(decision);
    else this.print(describe(decision));
    if (decision.action === "deny") throw new SilentExit(1);
  }

  private async ask(): Promise<void> {
    const admin = await this.connected();
    const call = admin.askPrompt();
    const lines = createInterface({ input: process.stdin, terminal: false });
    const session = new AskSession({ answer: (id, target) => call.write({ id, target }), say: (text) => process.stderr.write(text) });
    lines.on("line", (line) => session.line(line));
    call.on("data", (q: adminV1.AskQuestion) => session.question(q));
    process.stderr.write("qvm: answering qrexec ask questions here; Ctrl-C to stop\n");
    await new Promise<void>((resolve, reject) => {
      const stop = () => {
        session.close();
        call.end();
        resolve();
      };
      process.once("SIGINT", stop);
      process.once("SIGTERM", stop);
      // No more answers can come (Ctrl-D, or the end of piped answers): stop being the prompt.
      lines.once("close", stop);
      // Once stop() has resolved, the error of the stream's cancellation changes nothing.
      call.on("error", (err) => {
        session.close();
        reject(admin.errorOf(err));
      });
      call.on("end", () => {
        session.close();
        resolve();
      });
    });
  }
}

/** Where an AskSession's answers and text go. */
export interface AskSessionIo {
  /** Sends an answer to qvmd; "" refuses the call. */
  answer(id: number, target: string): void;
  /** Text for the person (stderr). */
  say(text: string): void;
}

interface Queued {
  q: adminV1.AskQuestion;
  timer?: NodeJS.Timeout;
}

/**
 * The `qvm policy ask` prompt (audit 2026-11-30, finding 10): one question at a time, chosen
 * round-robin by the calling domain (the domain served longest ago, or never, goes first) so that
 * one domain's questions cannot keep another's waiting;
 * Enter alone denies, and no target is ever taken by default; a question expires here a little
 * before qvmd's timer (which then denies it), and once the question on screen has expired, the
 * next line is taken as a late answer to it (reported, not sent) before another is shown, so an
 * answer meant for one question never lands on the next.
 */
export class AskSession {
  /** Questions waiting, by source, sources in the order their first question came. */
  private readonly waiting = new Map<string, Queued[]>();
  /** When each source last had a question shown (a counter); never shown counts as 0. */
  private readonly served = new Map<string, number>();
  private shownCount = 0;
  private current: Queued | undefined;
  /** The question on screen that expired; the next line is its late answer. */
  private late: adminV1.AskQuestion | undefined;
  private expiredUnseen = 0;
  private closed = false;

  constructor(private readonly io: AskSessionIo) {}

  /** A question from qvmd. */
  question(q: adminV1.AskQuestion): void {
    if (this.closed) return;
    const item: Queued = { q };
    const ms = localTimeoutMs(q.timeoutSeconds);
    if (ms !== undefined) {
      item.timer = setTimeout(() => this.expire(item), ms);
      item.timer.unref?.();
    }
    const list = this.waiting.get(q.source);
    if (list) list.push(item);
    else this.waiting.set(q.source, [item]);
    this.next();
  }

  /** A line the person typed. */
  line(raw: string): void {
    if (this.closed) return;
    const text = raw.trim();
    if (this.late) {
      const q = this.late;
      this.late = undefined;
      if (text) this.io.say(`Not sent: the question from ${q.source} (${what(q)}) had expired, and its call was denied.\n`);
      this.next();
      return;
    }
    const cur = this.current;
    if (!cur) {
      if (text) this.io.say("No question is waiting; that line was ignored.\n");
      return;
    }
    const q = cur.q;
    if (text && text !== "deny" && !q.targets.includes(text)) {
      this.io.say(`${JSON.stringify(text)} is not one of: ${q.targets.join(", ")}\nTarget (or "deny"; Enter alone denies): `);
      return;
    }
    const target = text === "deny" ? "" : text;
    this.settle(cur);
    this.io.answer(q.id, target);
    this.io.say(target ? `-> ${target}\n` : text ? "-> denied\n" : "-> denied (Enter alone denies)\n");
    this.next();
  }

  /** Stops every timer; nothing more is shown or sent. */
  close(): void {
    this.closed = true;
    if (this.current?.timer) clearTimeout(this.current.timer);
    for (const list of this.waiting.values()) for (const item of list) if (item.timer) clearTimeout(item.timer);
    this.waiting.clear();
    this.current = undefined;
  }

  /** Questions not yet answered or expired (the one on screen included). */
  get pending(): number {
    let n = this.current ? 1 : 0;
    for (const list of this.waiting.values()) n += list.length;
    return n;
  }

  private settle(item: Queued): void {
    if (item.timer) clearTimeout(item.timer);
    if (this.current === item) this.current = undefined;
  }

  private expire(item: Queued): void {
    if (this.current === item) {
      this.current = undefined;
      this.late = item.q;
      this.io.say(`\nThe question from ${item.q.source} expired after ${item.q.timeoutSeconds} s: its call was denied. Press Enter to go on.\n`);
      return;
    }
    const list = this.waiting.get(item.q.source);
    const i = list?.indexOf(item) ?? -1;
    if (!list || i < 0) return;
    list.splice(i, 1);
    if (!list.length) this.waiting.delete(item.q.source);
    this.expiredUnseen++;
  }

  /** Shows the next question: the first waiting one of the source served longest ago. */
  private next(): void {
    if (this.current || this.late || this.closed) return;
    let source: string | undefined;
    for (const s of this.waiting.keys()) if (source === undefined || (this.served.get(s) ?? 0) < (this.served.get(source) ?? 0)) source = s;
    if (source === undefined) return;
    const list = this.waiting.get(source)!;
    const item = list.shift()!;
    if (!list.length) this.waiting.delete(source);
    this.served.set(source, ++this.shownCount);
    this.current = item;
    const q = item.q;
    const expired = this.expiredUnseen ? `(${this.expiredUnseen} question${this.expiredUnseen > 1 ? "s" : ""} expired while waiting: denied.)\n` : "";
    this.expiredUnseen = 0;
    const suggested = q.defaultTarget && q.targets.includes(q.defaultTarget) ? `The policy suggests ${q.defaultTarget}; type it to choose it.\n` : "";
    this.io.say(
      `\n${expired}${q.source} asks to call ${what(q)} (requested target: ${q.requestedTarget}).\n` +
        `Allowed targets: ${q.targets.join(", ")}\n` +
        suggested +
        `Target (or "deny"; Enter alone denies; ${q.timeoutSeconds} s): `,
    );
  }
}

function what(q: adminV1.AskQuestion): string {
  return q.argument ? `${q.service}+${q.argument}` : q.service;
}

/**
 * How long a question stays answerable here: a little less than qvmd's timeout, which started
 * when it was sent, so that an answer the prompt accepts is never one qvmd has already denied.
 */
export function localTimeoutMs(timeoutSeconds: number): number | undefined {
  if (!timeoutSeconds) return undefined;
  return timeoutSeconds * 1000 - Math.min(1000, timeoutSeconds * 250);
}

/** A CheckPolicyResponse with its action in words, as `qvm policy check` prints it. */
type PolicyDecision = Omit<adminV1.CheckPolicyResponse, "action"> & { action: string };

function describe(r: PolicyDecision): string {
  const rule = r.ruleFile ? `${r.ruleFile}:${r.ruleLine}` : "no rule matched";
  const extras = [r.user && `user=${r.user}`, r.action !== "deny" && !r.autostart && "autostart=no", r.notify && "notify=yes"].filter(Boolean).join(" ");
  switch (r.action) {
    case "allow":
      return `allow: to ${r.target}${extras ? ` (${extras})` : ""}\nrule: ${rule}`;
    case "ask":
      return `ask: targets ${r.targets.join(", ")}${r.defaultTarget ? ` (default ${r.defaultTarget})` : ""}${extras ? ` (${extras})` : ""}\nrule: ${rule}`;
    default:
      return `deny: ${r.reason}\nrule: ${rule}`;
  }
}
