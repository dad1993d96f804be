// Guest-chosen text in qvmd's log lines and events. A domain picks its request's bytes, so
// anything it chose that reaches a log line is either checked against a strict pattern first
// (request targets, service names) or JSON-quoted with every character a terminal or a log
// viewer could act on escaped: C0 and C1 controls, DEL, line and paragraph separators, and
// format characters (bidi overrides and isolates, zero-width characters). JSON.stringify alone
// leaves C1 (U+0080-009F, e.g. CSI) and the bidi controls through.
import { DOMAIN_NAME_PATTERN } from "@qvm/protocol/contracts";

/** Controls, format characters (bidi, zero width), separators, lone surrogates, private use and unassigned code points. */
const UNSAFE = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Cs}\p{Co}\p{Cn}]/gu;

function escapeUnits(ch: string): string {
  let out = "";
  for (let i = 0; i < ch.length; i++) out += `\\u${ch.charCodeAt(i).toString(16).padStart(4, "0")}`;
  return out;
}

/** `s` as a JSON string literal with nothing a terminal would act on, clipped to `max` code points. */
export function quoteGuest(s: string, max = 80): string {
  const points = [...s];
  const clipped = points.length > max ? `${points.slice(0, max).join("")}…` : s;
  return JSON.stringify(clipped).replace(UNSAFE, escapeUnits);
}

/**
 * Text qvmd wrote that may carry a guest's words (an error message): left unquoted, but every
 * control, separator and format character becomes a \uXXXX escape, so it stays one plain line.
 */
export function escapeForLog(s: string): string {
  return s.replace(UNSAFE, escapeUnits);
}

const NAME = DOMAIN_NAME_PATTERN.source.replace(/^\^/, "").replace(/\$$/, "");
/** What a REQUEST's target may be: Qubes' keywords or a domain name (docs/qrexec-protocol.md). */
export const REQUEST_TARGET_PATTERN = new RegExp(`^(?:@default|@adminvm|dom0|@dispvm(?::${NAME})?|${NAME})$`);

/** Whether a REQUEST's target has an acceptable shape ("" is @default, as the protocol allows). */
export function isRequestTarget(target: string): boolean {
  return target === "" || REQUEST_TARGET_PATTERN.test(target);
}
