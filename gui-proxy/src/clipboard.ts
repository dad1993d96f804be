// The clipboard seam (docs/web-shell.md, "Clipboard"): what the web shell needs from qvmd's one
// global clipboard (Qubes' secure copy and paste). Ctrl-Shift-C in a domain's window or terminal
// copies that domain's clipboard into it, Ctrl-Shift-V pastes it into the focused domain if the
// qubes.ClipboardPaste policy allows, and wipes it; the user's desktop clipboard goes in and out
// only through explicit page controls. qvmd holds the content, checks the policy and the size,
// and says who copied; the shell passes requests on and shows the state (never the content).
//
// `qvm shell` uses adminClipboard (admin-clipboard.ts); a server started without one has
// `noClipboard`; tests use `memoryClipboard`, which keeps qvmd's rules in memory.
import { MAX_CLIPBOARD_BYTES, QvmError, pasteDeniedMessage } from "@qvm/protocol/contracts";

/** Who the clipboard's content came from ("" when empty; "dom0": the user's desktop), its size, and when. */
export interface ClipboardState {
  source: string;
  size: number;
  copiedAtMs: number;
}

/** Where a copy takes its text: a window's selection (read by qvmd), or a terminal's (the page sent it). */
export type ClipboardFrom = { window: number } | { text: Buffer };
/** Where a paste puts it: a window's selection (written by qvmd), or back to the shell for a terminal. */
export type ClipboardInto = { window: number } | "terminal";

export interface ClipboardBackend {
  /** The clipboard's state, never its content. */
  state(): Promise<ClipboardState>;
  /** Calls `onChange` whenever the state may have changed (a copy, a paste, qvmd back after a restart); returns the unsubscribe. */
  watch(onChange: () => void): () => void;
  /** `domain`'s clipboard (from a window or a terminal of that domain) into the global one. */
  copy(domain: string, from: ClipboardFrom): Promise<ClipboardState>;
  /** The global clipboard into `domain`, if the policy allows; it is wiped. `data` only for a terminal. */
  paste(domain: string, into: ClipboardInto): Promise<{ data: Buffer; source: string }>;
  /** The user's desktop clipboard into the global one (source "dom0"). */
  set(data: Buffer): Promise<ClipboardState>;
  /** The global clipboard out to the user's desktop; it is wiped. */
  take(): Promise<{ data: Buffer; source: string }>;
}

export const EMPTY_CLIPBOARD: ClipboardState = { source: "", size: 0, copiedAtMs: 0 };

/** No clipboard: empty, and every action refused. */
export function noClipboard(): ClipboardBackend {
  const none = async (): Promise<never> => {
    throw new QvmError("FAILED_PRECONDITION", "this shell has no clipboard");
  };
  return { state: async () => EMPTY_CLIPBOARD, watch: () => () => {}, copy: none, paste: none, set: none, take: none };
}

/**
 * Text from the clipboard as a terminal gets it: UTF-8 decoded (a bad sequence becomes U+FFFD),
 * without control characters but tab and newlines. A paste goes to the target domain's terminal as
 * typed input: an ESC in it could end xterm's bracketed paste (`ESC [201~`) and have the rest run
 * as typed commands, and other controls are keys (^C, ^D, DEL) nobody meant to press.
 */
export function terminalPasteText(data: Buffer): string {
  return data.toString("utf8").replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]/g, "");
}

/** A clipboard held in memory with qvmd's rules (tests): a window's selection is `selections`' entry. */
export interface MemoryClipboard extends ClipboardBackend {
  /** Windows' selections, by "domain/window": what a window copy reads and a window paste writes. */
  selections: Map<string, Buffer>;
  /** Every request, in order: what the shell asked on whose behalf. */
  calls: { op: "copy" | "paste" | "set" | "take"; domain?: string; from?: string; into?: string }[];
}

/**
 * `allowed(source, target)` is the qubes.ClipboardPaste policy (ask counts as allow); a paste back
 * into the source is refused whatever it says, as in Qubes.
 */
export function memoryClipboard(allowed: (source: string, target: string) => boolean = () => true, now: () => number = Date.now): MemoryClipboard {
  let data: Buffer = Buffer.alloc(0);
  let st: ClipboardState = EMPTY_CLIPBOARD;
  const watchers = new Set<() => void>();
  const put = (next: Buffer, source: string) => {
    data = next;
    st = next.length ? { source, size: next.length, copiedAtMs: now() } : EMPTY_CLIPBOARD;
    for (const fn of [...watchers]) fn();
    return st;
  };
  const wipe = () => put(Buffer.alloc(0), "");
  const self: MemoryClipboard = {
    selections: new Map(),
    calls: [],
    state: async () => st,
    watch: (fn) => {
      watchers.add(fn);
      return () => watchers.delete(fn);
    },
    copy: async (domain, from) => {
      self.calls.push({ op: "copy", domain, from: "window" in from ? `window ${from.window}` : "terminal" });
      const got = "window" in from ? (self.selections.get(`${domain}/${from.window}`) ?? Buffer.alloc(0)) : from.text;
      if (got.length > MAX_CLIPBOARD_BYTES) {
        wipe();
        throw new QvmError("RESOURCE_EXHAUSTED", `${domain}'s clipboard holds ${got.length} bytes, more than ${MAX_CLIPBOARD_BYTES}: the global clipboard was cleared`);
      }
      if (!got.length) throw new QvmError("FAILED_PRECONDITION", `${domain}'s clipboard is empty`);
      return put(Buffer.from(got), domain);
    },
    paste: async (domain, into) => {
      self.calls.push({ op: "paste", domain, into: into === "terminal" ? "terminal" : `window ${into.window}` });
      if (!data.length) throw new QvmError("FAILED_PRECONDITION", "the global clipboard is empty");
      const source = st.source;
      if (source === domain || !allowed(source, domain)) throw new QvmError("PERMISSION_DENIED", pasteDeniedMessage(source, domain));
      const out = data;
      if (into !== "terminal") self.selections.set(`${domain}/${into.window}`, out);
      wipe();
      return { data: into === "terminal" ? out : Buffer.alloc(0), source };
    },
    set: async (text) => {
      self.calls.push({ op: "set" });
      if (text.length > MAX_CLIPBOARD_BYTES) throw new QvmError("RESOURCE_EXHAUSTED", `more than ${MAX_CLIPBOARD_BYTES} bytes`);
      return put(Buffer.from(text), "dom0");
    },
    take: async () => {
      self.calls.push({ op: "take" });
      if (!data.length) throw new QvmError("FAILED_PRECONDITION", "the global clipboard is empty");
      const out = { data, source: st.source };
      wipe();
      return out;
    },
  };
  return self;
}
