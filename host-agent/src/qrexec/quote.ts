// Guest-chosen text in qvmd's log lines and events. A domain picks its request's bytes, so
// anything it chose that reaches a log line is either checked against a strict pattern first
// (request targets, service names) or quoted by the contract's one rule (guest-text.ts).
import { DOMAIN_NAME_PATTERN, escapeGuestText, quoteGuestText } from "@qvm/protocol/contracts";

/** Guest text in a log line: the contract's quoting, clipped to 80 code points. */
export const quoteGuest = (s: string, max = 80): string => quoteGuestText(s, max);

/** Text qvmd wrote that may carry a guest's words (an error message), escaped but unquoted. */
export const escapeForLog = escapeGuestText;

const NAME = DOMAIN_NAME_PATTERN.source.replace(/^\^/, "").replace(/\$$/, "");
/** What a REQUEST's target may be: Qubes' keywords or a domain name (docs/qrexec-protocol.md). */
export const REQUEST_TARGET_PATTERN = new RegExp(`^(?:@default|@adminvm|dom0|@dispvm(?::${NAME})?|${NAME})$`);

/** Whether a REQUEST's target has an acceptable shape ("" is @default, as the protocol allows). */
export function isRequestTarget(target: string): boolean {
  return target === "" || REQUEST_TARGET_PATTERN.test(target);
}
