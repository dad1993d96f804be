import { Args, Flags } from "@oclif/core";
import { readFileSync, statSync } from "node:fs";
import { QvmError, isQvmError } from "@qvm/protocol/contracts";
import { QvmCommand, example } from "../base.js";
import { SilentExit } from "../lib/errors.js";

export default class Apply extends QvmCommand {
  static override summary = "Create or update the domains and policy files a YAML or JSON file declares.";
  static override description = `Reads FILE, checks all of it (every problem is reported as FILE:LINE:COL: FIELD: what is wrong), compares it with what qvmd has, and makes what differs: creates domains, sets or resets properties, sets or removes features, adds or removes tags, replaces firewalls, writes policy files. Applying the same file again does nothing.

  version: 1
  domains: {work: {label: blue, template: debian-12, memory: 800}}
  policy: {30-user.policy: "qubes.Filecopy * work vault ask\\n"}

A domain's fields: class (AppVM, the default; TemplateVM, StandaloneVM or DispVM), label (required), template, netvm ("" for none), memory, vcpus, properties (the other properties \`qvm prefs\` sets, e.g. autostart: true), features (NAME: "VALUE"), tags (a list) and firewall (a list of rules as \`qvm firewall VM add\` takes them, e.g. "accept example.com tcp 443"). A misspelled field is an error.

Domains come before the domains that need them (templates before their users, netvms before their clients). One line per change: "+" adds, "~" changes, "-" removes, "*" is apply's bookkeeping (the feature qvm-apply.declared, which marks a domain as declared and records what the file set on it, so that what leaves the file is reset or removed and nothing set by other means is touched).

Nothing is ever deleted: a domain that is not in the file is listed and left alone ("no longer declared" when apply made or managed it: remove it yourself with \`qvm remove\`), and so is a policy file. A firewall is replaced when the file declares one and left as it is otherwise. A domain's class cannot change; its template can (on an AppVM or DispVM, as with \`qvm prefs\`).

Each change is one admin call. On a failure apply stops, prints what was applied and what was not, and exits non-zero; applying again picks up from there. Policy files are written by qvm itself into qvmd's DATA/policy.d (atomically; qvmd must read the whole policy without an error, or the file gets its previous text back), so a file with a policy section needs root. Full format: docs/cli.md, "qvm apply".`;
  static override examples = [
    example("domains.yaml", "Create or update what domains.yaml declares."),
    example("--dry-run domains.yaml", "Only print what would change."),
    example("--json domains.json", "The plan and what was done, as JSON."),
  ];
  static override args = {
    file: Args.string({ description: "The declared file (YAML or JSON).", required: true }),
  };
  static override flags = {
    "dry-run": Flags.boolean({ char: "n", description: "Print the changes without making them." }),
    json: Flags.boolean({ description: "Print the plan and each change's status (planned, applied, failed, not-applied) as JSON." }),
  };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(Apply);
    const apply = await import("../lib/apply/index.js");
    const file = this.problemsByLine(() => apply.parseDeclaredFile(readDeclaredFile(args.file, apply.MAX_DECLARED_FILE_BYTES), args.file));
    const admin = await this.admin();
    const dryRun = Boolean(flags["dry-run"]);
    const { plan, outcome } = await this.problemsByLine(() =>
      apply.applyDeclared(admin, file, { dryRun }, (action) => {
        if (!flags.json) this.print(`${apply.describeAction(action)}\n`);
      }),
    );
    const total = plan.actions.length;
    const changes = (n: number) => `${n} change${n === 1 ? "" : "s"}`;
    for (const w of outcome.warnings) this.note(w);
    if (flags.json) {
      this.printJson({
        file: args.file,
        dryRun,
        actions: outcome.actions.map(({ action, status }) => ({ ...action, line: apply.describeAction(action), status })),
        notDeclared: plan.notDeclared,
        noLongerDeclared: plan.noLongerDeclared,
        undeclaredPolicyFiles: plan.undeclaredPolicyFiles,
        warnings: outcome.warnings,
        ...(outcome.error ? { error: { code: outcome.error.code, message: outcome.error.message } } : {}),
      });
    }
    const lines: string[] = [];
    if (total === 0) lines.push("= nothing to do");
    else if (dryRun) lines.push(...plan.actions.map(apply.describeAction));
    if (!outcome.error) {
      lines.push(...apply.describeLeftAlone(plan));
      if (total && dryRun) lines.push(`(dry run: ${changes(total)} planned, none made)`);
      else if (total) lines.push(`applied ${changes(total)}`);
      if (!flags.json) this.print(lines.map((l) => `${l}\n`).join(""));
      return;
    }
    const done = outcome.actions.filter((e) => e.status === "applied").length;
    const failed = outcome.actions.find((e) => e.status === "failed")!;
    const notApplied = apply.describeNotApplied(outcome);
    if (!flags.json) {
      lines.push("failed:", `  ${apply.describeAction(failed.action)}`);
      if (notApplied.length) lines.push("not applied:", ...notApplied.map((l) => `  ${l}`));
      this.print(lines.map((l) => `${l}\n`).join(""));
    }
    throw new QvmError(outcome.error.code, `${apply.describeAction(failed.action)}: ${outcome.error.message} (${done} of ${changes(total)} applied, ${notApplied.length} not; fix it and apply again)`);
  }

  /** `fn`'s result; an error listing several problems (one a line) is printed one line each, in the form of every qvm error. */
  private problemsByLine<T>(fn: () => T): T {
    const byLine = (err: unknown): never => {
      if (!isQvmError(err) || !err.message.includes("\n")) throw err;
      for (const line of err.message.split("\n")) this.note(line);
      throw new SilentExit(err.exitCode);
    };
    try {
      const result = fn();
      return (result instanceof Promise ? result.catch(byLine) : result) as T;
    } catch (err) {
      return byLine(err);
    }
  }
}

/** The file's text; refuses what is not a readable regular file of a sane size. */
function readDeclaredFile(file: string, maxBytes: number): string {
  try {
    const st = statSync(file);
    if (!st.isFile()) throw new QvmError("INVALID_ARGUMENT", `${file} is not a file`);
    if (st.size > maxBytes) throw new QvmError("INVALID_ARGUMENT", `${file} is larger than ${maxBytes} bytes`);
    return readFileSync(file, "utf8");
  } catch (err) {
    if (isQvmError(err)) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") throw new QvmError("NOT_FOUND", `${file}: no such file`);
    throw new QvmError(code === "EACCES" ? "PERMISSION_DENIED" : "INTERNAL", `cannot read ${file}: ${code ?? (err as Error).message}`);
  }
}
