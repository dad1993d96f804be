// Whether the global clipboard may be pasted from its source into a domain: the qrexec policy for
// qubes.ClipboardPaste, as Qubes' GUI daemon asks it (policy.EvalSimple with assume_yes_for_ask):
// allow pastes; ask pastes too, since the keystroke is the user's answer, but only into a target
// the ask would offer, and an ask never offers the source itself; deny, or no rule, refuses.
import { ADMIN_NAME, evaluate, type SystemFacts } from "../qrexec/policy/evaluate.js";
import type { PolicyRule } from "../qrexec/policy/parser.js";
import { offeredWithoutPrompt } from "../qrexec/policy/user-action.js";

export const CLIPBOARD_PASTE_SERVICE = "qubes.ClipboardPaste";
/** The clipboard's source when the user's own desktop put it there (Qubes' "dom0", @adminvm in policy). */
export const DESKTOP_SOURCE = ADMIN_NAME;

/** The policy's answer for one paste, in the terms the clipboard needs. */
export type PasteDecision = { action: "allow" } | { action: "ask"; targets: readonly string[] } | { action: "deny"; reason: string };

/** Decides a paste from `source` (a domain or "dom0") into `target` (a domain). Throws POLICY_INVALID on a broken policy. */
export type DecidePaste = (source: string, target: string) => PasteDecision;

/**
 * The paste decision from the loaded rules and the domains' facts (both read at each call, so a
 * policy change applies to the next paste).
 */
export function clipboardPastePolicy(rules: () => readonly PolicyRule[], facts: () => SystemFacts): DecidePaste {
  return (source, target) => {
    const system = facts();
    const d = evaluate(rules(), { service: CLIPBOARD_PASTE_SERVICE, argument: "", source, target }, system);
    switch (d.action) {
      case "allow":
        return { action: "allow" };
      case "ask":
        // The keystroke answers it: the targets the ask offers, a running disposable's window
        // (the common case) among them (qrexec/policy/user-action.ts).
        return { action: "ask", targets: offeredWithoutPrompt(d, { source, target }, system) };
      case "deny":
        // An explicit allow from a domain to itself: the evaluator refuses a call to oneself
        // (a qrexec call cannot go back to its caller), but a paste back into the source is
        // what such a rule says; Qubes' clipboard lets it through.
        if (d.rule?.action === "allow" && source === target) return { action: "allow" };
        return { action: "deny", reason: d.reason };
    }
  };
}

/** Whether a paste may go ahead under `d`: ask only into one of the targets it offers. */
export function pasteAllowed(d: PasteDecision, target: string): boolean {
  return d.action === "allow" || (d.action === "ask" && d.targets.includes(target));
}
