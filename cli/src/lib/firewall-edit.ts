// `qvm firewall`'s local edits, as Qubes' qvm-firewall makes them: the client gets the rules,
// changes the list here and sets the whole list back (qvmd checks it again, all or nothing).
// Pure functions over the rule model (@qvm/protocol/contracts), so they are tested without qvmd.
import { QvmError, formatRuleApi, listRows, type FirewallRule } from "@qvm/protocol/contracts";
import { formatTable } from "./table.js";

export type FirewallEdit =
  | { kind: "add"; rule: FirewallRule; before?: number }
  | { kind: "del"; ruleNo: number }
  | { kind: "del"; rule: FirewallRule }
  | { kind: "reset" };

/** Qubes' default, and what `reset` writes: one rule that accepts everything. */
export const RESET_RULES: readonly FirewallRule[] = [{ action: "accept" }];

/** The rules after `edit`; a rule number out of range or a rule not there is refused, naming what is. */
export function applyFirewallEdit(vm: string, rules: readonly FirewallRule[], edit: FirewallEdit): FirewallRule[] {
  const next = [...rules];
  const numbers = rules.length ? `${vm} has rules 0-${rules.length - 1} (\`qvm firewall ${vm} list\`)` : `${vm} has no rules`;
  switch (edit.kind) {
    case "reset":
      return [...RESET_RULES];
    case "add":
      if (edit.before === undefined) next.push(edit.rule);
      else if (edit.before > rules.length) throw new QvmError("INVALID_ARGUMENT", `--before ${edit.before}: ${numbers}; give 0-${rules.length} (${rules.length}: at the end)`);
      else next.splice(edit.before, 0, edit.rule);
      return next;
    case "del": {
      if ("ruleNo" in edit) {
        if (edit.ruleNo >= rules.length) throw new QvmError("INVALID_ARGUMENT", `--rule-no ${edit.ruleNo}: ${numbers}`);
        next.splice(edit.ruleNo, 1);
        return next;
      }
      const line = formatRuleApi(edit.rule);
      const at = rules.findIndex((r) => formatRuleApi(r) === line);
      if (at < 0) throw new QvmError("NOT_FOUND", `${vm} has no rule ${JSON.stringify(line)}: \`qvm firewall ${vm} list --raw\` shows its rules as they are written; or delete by number with --rule-no N`);
      next.splice(at, 1);
      return next;
    }
  }
}

/** The `qvm firewall VM list` table (Qubes' columns); `now` in UNIX seconds. */
export function formatFirewallList(rules: readonly FirewallRule[], now: number): string {
  return formatTable(listRows(rules, now));
}
