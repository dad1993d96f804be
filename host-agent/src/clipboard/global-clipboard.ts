// The global inter-domain clipboard (docs/gui.md; Qubes' secure copy and paste, gui-daemon
// xside.c): one slot held by qvmd, with the domain its content came from. Copy (Ctrl-Shift-C)
// takes a domain's clipboard into it; paste (Ctrl-Shift-V) gives it to a domain if the
// qubes.ClipboardPaste policy from its source to that domain allows, and then wipes it.
//
// In memory only: nothing is written to disk, so a qvmd restart empties it. The content is
// never logged, never put in an event and never in an error message; only its size and source.
import { QvmError } from "@qvm/protocol";
import { MAX_CLIPBOARD_BYTES, pasteDeniedMessage } from "@qvm/protocol/contracts";
import type { Clock } from "../base/clock.js";
import type { EventBus } from "../base/events.js";
import type { AgentClient } from "../agent/agent-client.js";
import { DESKTOP_SOURCE, pasteAllowed, type DecidePaste } from "./paste-policy.js";

/** The agent calls the clipboard makes in a running domain. */
export type ClipboardAgent = Pick<AgentClient, "getWindowClipboard" | "setWindowClipboard">;

/** Where a copy takes its text: a window's selection (read through the agent), or text a trusted caller read from the domain's terminal. */
export type CopyFrom = { window: number } | { terminal: Buffer };
/** Where a paste puts it: a window's selection, or back to the caller to type into the domain's terminal. */
export type PasteInto = { window: number } | { terminal: true };

/** What the clipboard holds, without its content. */
export interface ClipboardState {
  /** The domain it came from, "dom0" for the user's desktop; "" when empty. */
  source: string;
  /** Bytes. */
  size: number;
  /** When it was filled (ms since the epoch); 0 when empty. */
  copiedAtMs: number;
}

export interface GlobalClipboardDeps {
  /**
   * The agent of a running domain: NOT_FOUND for no such domain, FAILED_PRECONDITION when it
   * does not run.
   */
  agentOf: (domain: string) => ClipboardAgent;
  /** The windows qvmd knows in a domain (DomainWindows.list). */
  windowsOf: (domain: string) => ReadonlyArray<{ windowId: number }>;
  /** The qubes.ClipboardPaste policy from a source to a target (clipboard/paste-policy.ts). */
  decide: DecidePaste;
  events: EventBus;
  clock: Clock;
  log: (msg: string) => void;
}

export const EMPTY_CLIPBOARD_MESSAGE = "the global clipboard is empty: copy with Ctrl-Shift-C first";

interface Content {
  data: Buffer;
  source: string;
  copiedAtMs: number;
}

/** What a "clipboard" event says happened; `clear`: a copy or set too large emptied it. */
export type ClipboardAction = "copy" | "paste" | "set" | "take" | "clear";

const EMPTY: Content = { data: Buffer.alloc(0), source: "", copiedAtMs: 0 };

export class GlobalClipboard {
  private content: Content = EMPTY;
  /** Bumped at every change of the content: a paste wipes only what it pasted. */
  private version = 0;
  /** Bumped when a copy or set begins: a copy whose read finishes after a later one began is dropped (Qubes drops requests older than the last operation). */
  private fills = 0;

  constructor(private readonly deps: GlobalClipboardDeps) {}

  state(): ClipboardState {
    const c = this.content;
    return { source: c.source, size: c.data.length, copiedAtMs: c.copiedAtMs };
  }

  /** Replaces the clipboard with `domain`'s selection: a window's (read through its agent, at most MAX_CLIPBOARD_BYTES) or its terminal's. */
  async copy(domain: string, from: CopyFrom): Promise<ClipboardState> {
    const agent = this.deps.agentOf(domain);
    if ("window" in from) this.knownWindow(domain, from.window);
    const fill = ++this.fills;
    let data: Buffer;
    if ("window" in from) {
      const reply = await agent.getWindowClipboard(from.window, MAX_CLIPBOARD_BYTES);
      // A later copy or set began meanwhile: it wins, and this one is dropped (as Qubes drops a request older than the last operation).
      if (fill !== this.fills) return this.state();
      if (reply.oversized) this.oversized(domain, `the selection in ${domain}'s window ${from.window}`);
      data = reply.data;
    } else {
      if (from.terminal.length > MAX_CLIPBOARD_BYTES) this.oversized(domain, `the text from ${domain}'s terminal (${from.terminal.length} bytes)`);
      data = Buffer.from(from.terminal);
    }
    if (!data.length) throw new QvmError("FAILED_PRECONDITION", `nothing is selected in ${"window" in from ? `${domain}'s window ${from.window}` : `${domain}'s terminal`}: select text there, then copy; the global clipboard is unchanged`);
    this.replace({ data, source: domain, copiedAtMs: this.deps.clock.now() });
    this.publish("copy", domain, domain, "", data.length);
    return this.state();
  }

  /**
   * Pastes into `domain` if the policy allows it from the clipboard's source, then wipes the
   * clipboard. Returns the data for a terminal paste (the caller types it), nothing for a window.
   */
  async paste(domain: string, into: PasteInto): Promise<{ data: Buffer; source: string }> {
    const agent = this.deps.agentOf(domain);
    if ("window" in into) this.knownWindow(domain, into.window);
    const pasted = this.content;
    const version = this.version;
    if (!pasted.data.length) throw new QvmError("FAILED_PRECONDITION", EMPTY_CLIPBOARD_MESSAGE);
    const decision = this.deps.decide(pasted.source, domain);
    if (!pasteAllowed(decision, domain)) {
      const why = decision.action === "deny" ? decision.reason : `${domain} is not among the targets the ask offers`;
      this.deps.log(`clipboard: a paste from ${pasted.source} into ${domain} was refused (${decision.action}: ${why})`);
      throw new QvmError("PERMISSION_DENIED", pasteDeniedMessage(pasted.source, domain));
    }
    if ("window" in into) await agent.setWindowClipboard(into.window, pasted.data);
    // Wiped after the paste, as Qubes does; unless something else filled it meanwhile.
    if (this.version === version) this.replace(EMPTY);
    this.publish("paste", domain, pasted.source, domain, pasted.data.length);
    return { data: "terminal" in into ? pasted.data : Buffer.alloc(0), source: pasted.source };
  }

  /** Puts text from the user's own desktop in (source "dom0"). */
  set(data: Buffer): ClipboardState {
    if (!data.length) throw new QvmError("INVALID_ARGUMENT", "no text to put on the global clipboard (it is unchanged); to empty it, take it: `qvm clipboard take >/dev/null`");
    ++this.fills;
    if (data.length > MAX_CLIPBOARD_BYTES) this.oversized(DESKTOP_SOURCE, `the text given (${data.length} bytes)`);
    this.replace({ data: Buffer.from(data), source: DESKTOP_SOURCE, copiedAtMs: this.deps.clock.now() });
    this.publish("set", "", DESKTOP_SOURCE, "", data.length);
    return this.state();
  }

  /** Hands the content to the user's desktop and wipes it. */
  take(): { data: Buffer; source: string } {
    const taken = this.content;
    if (!taken.data.length) throw new QvmError("FAILED_PRECONDITION", EMPTY_CLIPBOARD_MESSAGE);
    this.replace(EMPTY);
    this.publish("take", "", taken.source, DESKTOP_SOURCE, taken.data.length);
    return { data: taken.data, source: taken.source };
  }

  private replace(content: Content): void {
    this.content = content;
    this.version++;
  }

  /** Too large: the clipboard is emptied (so an old content is not pasted by mistake) and the copy fails. */
  private oversized(source: string, what: string): never {
    this.replace(EMPTY);
    this.publish("clear", source === DESKTOP_SOURCE ? "" : source, source, "", 0);
    throw new QvmError("RESOURCE_EXHAUSTED", `${what} is larger than the global clipboard's ${MAX_CLIPBOARD_BYTES} bytes: the clipboard was emptied; copy less`);
  }

  private knownWindow(domain: string, windowId: number): void {
    const ids = this.deps.windowsOf(domain).map((w) => w.windowId);
    if (!ids.includes(windowId)) {
      throw new QvmError("NOT_FOUND", `${domain} has no window ${windowId}; ${ids.length ? `its windows: ${ids.sort((a, b) => a - b).join(", ")}` : "it has none (open one with `qvm run --gui`)"}`);
    }
  }

  /**
   * The "clipboard" event: under the domain copied from or pasted into ("" for the user's
   * desktop), with the action, the source, the target and the size; never the content.
   */
  private publish(action: ClipboardAction, domain: string, source: string, target: string, size: number): void {
    this.deps.events.publish("clipboard", domain, { action, source, target, size: String(size) });
  }
}
