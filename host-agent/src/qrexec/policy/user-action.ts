// An ask answered by the person's own action, with no prompt: Qubes' "assume yes for ask"
// (policy.EvalSimple as the GUI daemon asks it for a paste; the input proxy for a keyboard, mouse
// or tablet). The paste keystroke, or the admin's attach command, is the person's answer, so an
// ask counts as allow, but only for a target the ask would offer, and an ask never offers the
// source itself. What allow and deny mean for each caller stays with the caller
// (clipboard/paste-policy.ts, usb/input-policy.ts).
import type { CallQuery, Decision, SystemFacts } from "./evaluate.js";

export type AskDecision = Extract<Decision, { action: "ask" }>;

/**
 * The targets `d` offers for `q` when no prompt is shown: the ask's own targets, and `q.target`
 * itself where it is a running disposable. qvm's ask prompts offer no running disposable by name
 * (a qrexec call picks a new one instead); Qubes' ask list has them, and the ask rule matched this
 * very target, so it is offered unless the rule sends the call elsewhere (target=) or the target
 * is the source.
 */
export function offeredWithoutPrompt(d: AskDecision, q: Pick<CallQuery, "source" | "target">, system: SystemFacts): readonly string[] {
  const dispvm = system.domains.get(q.target)?.class === "DispVM" && !d.rule?.params.target && q.target !== q.source;
  return dispvm && !d.targets.includes(q.target) ? [...d.targets, q.target] : d.targets;
}

/** Whether `d` lets the call go to `q.target` when the person's own action answers the ask. */
export function askAllowsWithoutPrompt(d: AskDecision, q: Pick<CallQuery, "source" | "target">, system: SystemFacts): boolean {
  return offeredWithoutPrompt(d, q, system).includes(q.target);
}
