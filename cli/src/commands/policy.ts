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

  qvm policy ask [--timeout-answer TARGET|deny]
      Registers this terminal as the prompt for "ask" rules: each question shows the caller,
      the service and the targets the policy would allow; type one (Enter takes the default)
      or "deny". Unanswered questions are denied after qvmd's ask timeout (60 s). Runs until
      Ctrl-C or Ctrl-D; the newest registered prompt gets the questions. Lines can also come
      from a pipe, one answer per question.`;
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
    const queue: adminV1.AskQuestion[] = [];
    let current: adminV1.AskQuestion | undefined;
    const next = () => {
      if (current || !queue.length) return;
      current = queue.shift()!;
      const q = current;
      const what = q.argument ? `${q.service}+${q.argument}` : q.service;
      process.stderr.write(
        `\n${q.source} asks to call ${what} (requested target: ${q.requestedTarget}).\n` +
          `Allowed targets: ${q.targets.join(", ")}\n` +
          `Target${q.defaultTarget ? ` [${q.defaultTarget}]` : ""} (or "deny"; ${q.timeoutSeconds} s): `,
      );
    };
    lines.on("line", (line) => {
      const q = current;
      if (!q) return;
      const text = line.trim() || q.defaultTarget;
      if (text && text !== "deny" && !q.targets.includes(text)) {
        process.stderr.write(`${JSON.stringify(text)} is not one of: ${q.targets.join(", ")}\nTarget (or "deny"): `);
        return;
      }
      const target = text === "deny" ? "" : text;
      call.write({ id: q.id, target });
      process.stderr.write(target ? `-> ${target}\n` : "-> denied\n");
      current = undefined;
      next();
    });
    call.on("data", (q: adminV1.AskQuestion) => {
      queue.push(q);
      next();
    });
    process.stderr.write("qvm: answering qrexec ask questions here; Ctrl-C to stop\n");
    await new Promise<void>((resolve, reject) => {
      const stop = () => {
        call.end();
        resolve();
      };
      process.once("SIGINT", stop);
      process.once("SIGTERM", stop);
      // No more answers can come (Ctrl-D, or the end of piped answers): stop being the prompt.
      lines.once("close", stop);
      // Once stop() has resolved, the error of the stream's cancellation changes nothing.
      call.on("error", (err) => reject(admin.errorOf(err)));
      call.on("end", () => resolve());
    });
  }
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
