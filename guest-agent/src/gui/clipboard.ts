// A window's clipboard: the selection of its own compositor, read with wl-paste and replaced with
// wl-copy (wlr-data-control: no focus needed), both run as the user the window runs as, on that
// window's display, inside the window's containment. The host's global clipboard
// (GetWindowClipboard / SetWindowClipboard) is built on these two.
//
// What a selection holds comes from whichever program in the domain owns it, so the read is
// bounded: at most max_bytes + 1 bytes are read (more answers `oversized`, never a truncated
// text) and wl-paste's process group is killed after CLIPBOARD_TIMEOUT_MS, as the owner can stall
// the transfer forever. wl-copy serves the text from a process it forks once the selection is
// set; that process lives in the window's containment (its cgroup, so the window's end kills
// it; in the process-group fallback it exits when its compositor does) and is replaced by the
// next selection. Its stdout and stderr are /dev/null: nothing waits on its pipes.
import { MAX_CLIPBOARD_BYTES, QvmError } from "@qvm/protocol/contracts";
import type { GuestUser } from "../users.js";
import { clientLaunch, type Launch, type WindowPaths } from "./commands.js";
import type { CaptureResult, FeedResult, ProcessExit } from "./system.js";

/** What the clipboard RPCs need in the domain (Debian's wl-clipboard, in debian-12-gui). */
export const CLIPBOARD_PROGRAMS = ["wl-paste", "wl-copy"];
/** How long a read or a write of a selection may take before its processes are killed. */
export const CLIPBOARD_TIMEOUT_MS = 5000;
/** The type wl-copy offers (with text/plain, TEXT, STRING and UTF8_STRING, which wl-copy adds). */
export const CLIPBOARD_TYPE = "text/plain;charset=utf-8";

export interface ClipboardContent {
  data: Buffer;
  /** The selection is larger than max_bytes: data is empty. */
  oversized: boolean;
}

/**
 * wl-paste's own words when there is nothing textual to paste, which is an empty selection, not
 * a failure: no selection (2.1: "No selection", 2.2: "Nothing is copied") or one with no text
 * type ("No suitable type of content copied").
 */
const NOTHING_COPIED = /\b(No selection|Nothing is copied|No suitable type of content copied)\b/;

/**
 * Prints the selection as text: `--type text` asks for text/plain;charset=utf-8, then
 * text/plain, then any text/* the owner offers; `--no-newline` adds nothing to it.
 */
export function pasteLaunch(user: GuestUser, paths: WindowPaths, display: string): Launch {
  return clientLaunch(user, paths, display, ["wl-paste", "--no-newline", "--type", "text"]);
}

/** Offers stdin as the selection; no data clears the selection instead (nothing is copied). */
export function copyLaunch(user: GuestUser, paths: WindowPaths, display: string, clear: boolean): Launch {
  return clientLaunch(user, paths, display, clear ? ["wl-copy", "--clear"] : ["wl-copy", "--type", CLIPBOARD_TYPE]);
}

export function checkMaxBytes(maxBytes: number): void {
  if (!Number.isInteger(maxBytes) || maxBytes < 1 || maxBytes > MAX_CLIPBOARD_BYTES) {
    throw new QvmError("INVALID_ARGUMENT", `max_bytes must be 1..${MAX_CLIPBOARD_BYTES}, not ${maxBytes}`);
  }
}

export function checkClipboardData(data: Uint8Array): void {
  if (data.length > MAX_CLIPBOARD_BYTES) {
    throw new QvmError("INVALID_ARGUMENT", `clipboard data is ${data.length} bytes, more than ${MAX_CLIPBOARD_BYTES}`);
  }
}

const describeExit = (e: ProcessExit) => (e.signal ? `was killed by ${e.signal}` : `exited with code ${e.code}`);
const clip = (t: string) => t.trim().split("\n").slice(-3).join(" | ").slice(-400);

/** What wl-paste's run means: the text, oversized, empty, or an error. */
export function pasteResult(windowId: number, r: CaptureResult, maxBytes: number, timeoutMs: number): ClipboardContent {
  if (r.overflow || r.stdout.length > maxBytes) return { data: Buffer.alloc(0), oversized: true };
  // A time-out is an error, not an empty answer: the host must not take a stalled transfer for
  // "nothing is copied" (and replace its clipboard with nothing); DEADLINE_EXCEEDED says why.
  if (r.timedOut) {
    throw new QvmError("AGENT_TIMEOUT", `window ${windowId}'s selection was not transferred within ${timeoutMs} ms (the program that owns it did not finish sending it)`);
  }
  const exit = r.exit ?? { code: null, signal: "SIGKILL" };
  if (exit.code === 0) return { data: r.stdout, oversized: false };
  if (exit.code !== null && NOTHING_COPIED.test(r.stderr)) return { data: Buffer.alloc(0), oversized: false };
  const why = clip(r.stderr);
  throw new QvmError("INTERNAL", `reading window ${windowId}'s clipboard failed: wl-paste ${describeExit(exit)}${why ? `: ${why}` : ""}`);
}

/** What wl-copy's run means: nothing (the selection is offered), or an error. */
export function copyResult(windowId: number, r: FeedResult, timeoutMs: number): void {
  if (r.timedOut) throw new QvmError("AGENT_TIMEOUT", `window ${windowId}'s compositor did not take the selection within ${timeoutMs} ms`);
  const exit = r.exit ?? { code: null, signal: "SIGKILL" };
  // Its stderr is /dev/null (the process it forks keeps it): the exit is all there is to say.
  if (exit.code !== 0) throw new QvmError("INTERNAL", `setting window ${windowId}'s clipboard failed: wl-copy ${describeExit(exit)}`);
}
