// Whether an input device (keyboard, mouse, tablet) may be attached from its backend to a domain:
// the qrexec policy for qubes.InputKeyboard / qubes.InputMouse / qubes.InputTablet (argument ""),
// from the backend to the domain, as Qubes' input proxy asks it. Decided as the clipboard decides
// a paste (qrexec/policy/user-action.ts): allow attaches; ask attaches too, since the admin's
// command is the person's answer, but only to a domain the ask would offer; a rule that sends
// the call elsewhere (target=), deny, or no rule refuses. Nothing travels: the call is never made.
import { evaluate, type SystemFacts } from "../qrexec/policy/evaluate.js";
import type { PolicyRule } from "../qrexec/policy/parser.js";
import { askAllowsWithoutPrompt } from "../qrexec/policy/user-action.js";

export type InputDecision = { allowed: true } | { allowed: false; reason: string; where: string };

/** `service` from `backend` to `target` under `rules`; throws nothing but what `rules()` throws (POLICY_INVALID). */
export function inputAllowed(rules: readonly PolicyRule[], system: SystemFacts, service: string, backend: string, target: string): InputDecision {
  const d = evaluate(rules, { service, argument: "", source: backend, target }, system);
  const where = d.rule ? `${d.rule.file}:${d.rule.line}` : "";
  switch (d.action) {
    case "allow":
      return d.target === target ? { allowed: true } : { allowed: false, reason: `the policy sends it to ${d.target}`, where };
    case "ask":
      return askAllowsWithoutPrompt(d, { source: backend, target }, system) ? { allowed: true } : { allowed: false, reason: `${target} is not among the targets the ask offers`, where };
    case "deny":
      return { allowed: false, reason: d.reason, where };
  }
}
