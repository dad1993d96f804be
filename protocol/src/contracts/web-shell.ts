// The web shell's WebSocket protocol (docs/web-shell.md): JSON text frames between the page and
// its server, both directions, as zod schemas with the types inferred from them. The server
// parses what the page sends (the page may be driven by anything that got the token); the page
// parses what the server sends, so both are held to the same definition. Terminal bytes travel
// in binary frames (`u32 terminal id | bytes`), outside these schemas.
// The namespace import lets the bundler keep only the parts used: the page stays small.
import * as z from "zod";
import { QVM_ERROR_CODES, type QvmErrorCode } from "./errors.js";
import { DOMAIN_NAME_PATTERN } from "./names.js";
import { MAX_CLIPBOARD_BYTES, WINDOW_MAX_HEIGHT, WINDOW_MAX_WIDTH, WINDOW_MIN_HEIGHT, WINDOW_MIN_WIDTH } from "./windows.js";
import { DOMAIN_CLASSES, EVENT_TYPES, POWER_STATES, UNKNOWN_WORD } from "./words.js";

/** Longest free text (an error, a close reason) the server sends; it clips longer text. */
export const MAX_SHELL_TEXT = 2000;
/** Most domains one list may hold. */
export const MAX_SHELL_DOMAINS = 10_000;

const domain = z.string().regex(DOMAIN_NAME_PATTERN, "not a domain name");
const terminalId = z.number().int().min(1).max(2 ** 31);
const terminalSize = { rows: z.number().int().min(2).max(500), cols: z.number().int().min(2).max(1000) };
const terminalKind = z.enum(["shell", "console"]);
const text = z.string().max(MAX_SHELL_TEXT);
const errorCodes = Object.keys(QVM_ERROR_CODES) as [QvmErrorCode, ...QvmErrorCode[]];

// Windows of programs in domains (docs/gui.md): each is named by (domain, window id), ids given
// by qvmd. The page draws a window's frame, colour and `[domain] program` from these messages and
// the domain list only; the window's pixels reach a sandboxed frame through a one-shot ticket.
// A window's size (CSS pixels on the page, pixels of the domain's output) is within the agent's
// bounds (windows.ts).
/** Most windows one list may hold. */
export const MAX_SHELL_WINDOWS = 1000;
/** Longest program name a window's title shows. */
export const MAX_WINDOW_PROGRAM = 200;
/** A display ticket: 32 random bytes, base64url. */
export const DISPLAY_TICKET_PATTERN = /^[A-Za-z0-9_-]{43}$/;
const windowId = z.number().int().min(1).max(2 ** 31);
const windowSize = {
  width: z.number().int().min(WINDOW_MIN_WIDTH).max(WINDOW_MAX_WIDTH),
  height: z.number().int().min(WINDOW_MIN_HEIGHT).max(WINDOW_MAX_HEIGHT),
};
const windowRef = { domain, window: windowId };

// The global clipboard (docs/web-shell.md, "Clipboard"): one slot in qvmd, with the domain it came
// from ("dom0": the user's desktop). The page sends text it holds (a terminal's selection, what
// the user pasted into the page) as UTF-8 of at most MAX_CLIPBOARD_BYTES; the server sends text
// it decoded from at most that many bytes, so at most that many UTF-16 units. A terminal's
// clipboard text names only the terminal: the server attributes it to the domain it opened that
// terminal on, never to a domain the page names.
/** UTF-8 length of a string (a lone surrogate counts 3 bytes, as TextEncoder writes U+FFFD). */
export function utf8Length(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}
const clipboardTextIn = z
  .string()
  .min(1)
  .max(MAX_CLIPBOARD_BYTES)
  .refine((s) => utf8Length(s) <= MAX_CLIPBOARD_BYTES, `more than ${MAX_CLIPBOARD_BYTES} bytes of UTF-8`);
const clipboardTextOut = z.string().max(MAX_CLIPBOARD_BYTES);
/** Where clipboard content came from: a domain, "dom0" (the user's desktop), "" when empty. */
const clipboardSource = z.union([domain, z.literal("")]);
const clipboardSize = z.number().int().min(0).max(MAX_CLIPBOARD_BYTES);

// Encrypted domains (docs/web-shell.md, "Encrypted domains"): a start may carry the domain's
// passphrase, which the server passes to StartDomain and never logs or sends back. When qvmd
// wants one (PASSPHRASE_REQUIRED) or refuses the one given (PERMISSION_DENIED), the server says
// so with {t:"passphrase-needed"} and the page asks the user in a dialog of its own.
/** Longest passphrase a start may carry (characters), as `qvm start` bounds it. */
export const MAX_SHELL_PASSPHRASE = 1024;
const passphrase = z.string().min(1).max(MAX_SHELL_PASSPHRASE);

/** What the page asks of the server. */
export const pageMessageSchema = z.discriminatedUnion("t", [
  z.object({ t: z.literal("list") }).strict(),
  z.object({ t: z.literal("start"), domain, passphrase: passphrase.optional() }).strict(),
  z.object({ t: z.enum(["shutdown", "kill", "pause", "unpause"]), domain }).strict(),
  z.object({ t: z.literal("open"), id: terminalId, domain, kind: terminalKind, ...terminalSize }).strict(),
  z.object({ t: z.literal("resize"), id: terminalId, ...terminalSize }).strict(),
  z.object({ t: z.literal("close"), id: terminalId }).strict(),
  // A one-shot ticket for the window's display frame to open /display-ws with.
  z.object({ t: z.literal("window-ticket"), ...windowRef }).strict(),
  // The user resized the window's frame: the domain's output should follow (an agent call).
  z.object({ t: z.literal("window-resize"), ...windowRef, ...windowSize }).strict(),
  // The user closed the window: the program gets a close request.
  z.object({ t: z.literal("window-close"), ...windowRef }).strict(),
  // Ctrl-Shift-C / Ctrl-Shift-V on a focused program window: its domain's clipboard (the window's
  // selection) into the global clipboard, or the global clipboard into the window's selection.
  z.object({ t: z.literal("clipboard-copy"), ...windowRef }).strict(),
  z.object({ t: z.literal("clipboard-paste"), ...windowRef }).strict(),
  // The same chords on a terminal: its selection into the global clipboard, attributed by the
  // server to the terminal's domain; the paste comes back as {t:"terminal-paste-text"}.
  z.object({ t: z.literal("terminal-copy"), id: terminalId, text: clipboardTextIn }).strict(),
  z.object({ t: z.literal("terminal-paste"), id: terminalId }).strict(),
  // The user's own desktop clipboard, explicitly: text the user pasted into the page (source
  // dom0), and taking the global clipboard out (it is wiped) to write it to the desktop's.
  z.object({ t: z.literal("clipboard-set"), text: clipboardTextIn }).strict(),
  z.object({ t: z.literal("clipboard-take") }).strict(),
]);
export type PageMessage = z.infer<typeof pageMessageSchema>;
export type TerminalKind = z.infer<typeof terminalKind>;

/** A domain as the page draws it, in Qubes' words. */
export const domainSummarySchema = z
  .object({
    name: domain,
    class: z.enum([...DOMAIN_CLASSES, UNKNOWN_WORD]),
    state: z.enum([...POWER_STATES, UNKNOWN_WORD]),
    label: z.string().max(32),
  })
  .strict();
export type DomainSummary = z.infer<typeof domainSummarySchema>;

/** A window as qvmd lists it: which domain, which program, its size. */
export const windowSummarySchema = z
  .object({ domain, id: windowId, program: z.string().min(1).max(MAX_WINDOW_PROGRAM), ...windowSize })
  .strict();
export type WindowSummary = z.infer<typeof windowSummarySchema>;

/** What the server tells the page. */
export const serverMessageSchema = z.discriminatedUnion("t", [
  z.object({ t: z.literal("domains"), domains: z.array(domainSummarySchema).max(MAX_SHELL_DOMAINS) }).strict(),
  // "" for an event about no domain (a global property).
  z.object({ t: z.literal("event"), type: z.enum([...EVENT_TYPES, UNKNOWN_WORD]), domain: z.union([domain, z.literal("")]) }).strict(),
  z.object({ t: z.literal("opened"), id: terminalId, domain, kind: terminalKind }).strict(),
  z.object({ t: z.literal("closed"), id: terminalId, reason: text }).strict(),
  // A request failed; with `id`, the terminal it was about is gone.
  z.object({ t: z.literal("error"), code: z.enum(errorCodes), message: text, id: terminalId.optional() }).strict(),
  // Every window qvmd knows of, at connect and after every change.
  z.object({ t: z.literal("windows"), windows: z.array(windowSummarySchema).max(MAX_SHELL_WINDOWS) }).strict(),
  // The answer to a window-ticket: valid once, for a short time, for this window only.
  // With `reconnect`, unasked: the window's stream closed because qvmd stopped, and qvmd lists the
  // window again after its restart.
  z.object({ t: z.literal("window-ticket"), ...windowRef, ticket: z.string().regex(DISPLAY_TICKET_PATTERN), reconnect: z.literal(true).optional() }).strict(),
  // The window's stream ended (or could not start); the window may still be listed.
  z.object({ t: z.literal("window-ended"), ...windowRef, reason: text }).strict(),
  // The global clipboard's state (never its content): at connect and after every change.
  z.object({ t: z.literal("clipboard"), source: clipboardSource, size: clipboardSize, copiedAtMs: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER) }).strict(),
  // Answers to this page's requests (a refusal is an {t:"error"} with qvmd's message).
  z.object({ t: z.literal("clipboard-copied"), source: domain, size: clipboardSize }).strict(),
  z.object({ t: z.literal("clipboard-pasted"), source: domain, target: domain }).strict(),
  // The text to paste into terminal `id` (as typed by a paste: xterm's bracketed paste applies);
  // control characters but tab and newlines are already taken out.
  z.object({ t: z.literal("terminal-paste-text"), id: terminalId, text: clipboardTextOut, source: domain }).strict(),
  z.object({ t: z.literal("clipboard-taken"), text: clipboardTextOut, source: domain }).strict(),
  // A start of this page's failed for the passphrase: none was given ("required") or qvmd refused
  // the one given ("wrong"). Sent instead of an {t:"error"}; the passphrase itself never comes back.
  z.object({ t: z.literal("passphrase-needed"), domain, reason: z.enum(["required", "wrong"]) }).strict(),
]);
export type ServerMessage = z.infer<typeof serverMessageSchema>;

/** `message` shortened to what a server message may carry. */
export function clipShellText(message: string): string {
  return message.length > MAX_SHELL_TEXT ? `${message.slice(0, MAX_SHELL_TEXT - 1)}…` : message;
}
