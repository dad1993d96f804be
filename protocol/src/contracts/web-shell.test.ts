import { describe, expect, it } from "vitest";
import { MAX_SHELL_PASSPHRASE, MAX_SHELL_TEXT, MAX_WINDOW_PROGRAM, clipShellText, pageMessageSchema, serverMessageSchema, utf8Length } from "./web-shell.js";
import { MAX_CLIPBOARD_BYTES, WINDOW_MAX_WIDTH, WINDOW_MIN_HEIGHT } from "./windows.js";

describe("web shell messages from the page", () => {
  it.each([
    { t: "list" },
    { t: "start", domain: "work" },
    { t: "start", domain: "vault", passphrase: "correct horse battery staple" },
    { t: "start", domain: "vault", passphrase: "x" },
    { t: "start", domain: "vault", passphrase: "é".repeat(MAX_SHELL_PASSPHRASE) },
    { t: "kill", domain: "sys-net" },
    { t: "open", id: 1, domain: "work", kind: "shell", rows: 24, cols: 80 },
    { t: "resize", id: 7, rows: 50, cols: 200 },
    { t: "close", id: 7 },
    { t: "window-ticket", domain: "work", window: 1 },
    { t: "window-resize", domain: "work", window: 1, width: 800, height: 600 },
    { t: "window-close", domain: "work", window: 1 },
    { t: "clipboard-copy", domain: "work", window: 1 },
    { t: "clipboard-paste", domain: "vault", window: 2 },
    { t: "terminal-copy", id: 3, text: "ls -l\n" },
    { t: "terminal-copy", id: 3, text: "x".repeat(MAX_CLIPBOARD_BYTES) },
    { t: "terminal-copy", id: 3, text: "é".repeat(MAX_CLIPBOARD_BYTES / 2) },
    { t: "terminal-paste", id: 3 },
    { t: "clipboard-set", text: "from the desktop" },
    { t: "clipboard-take" },
  ])("accepts %j", (m) => expect(pageMessageSchema.parse(m)).toEqual(m));

  it.each([
    ["not an object", "list"],
    ["an unknown type", { t: "reboot", domain: "work" }],
    ["a missing type", { domain: "work" }],
    ["an extra field", { t: "list", admin: true }],
    ["a bad domain name", { t: "start", domain: "../etc" }],
    ["an oversized domain name", { t: "start", domain: "x".repeat(100_000) }],
    ["a passphrase over the bound", { t: "start", domain: "vault", passphrase: "x".repeat(MAX_SHELL_PASSPHRASE + 1) }],
    ["an empty passphrase", { t: "start", domain: "vault", passphrase: "" }],
    ["a passphrase that is not text", { t: "start", domain: "vault", passphrase: 1234 }],
    ["a passphrase on another lifecycle request", { t: "shutdown", domain: "vault", passphrase: "x" }],
    ["a passphrase-needed sent by the page", { t: "passphrase-needed", domain: "vault", reason: "required" }],
    ["a window too large", { t: "open", id: 1, domain: "work", kind: "shell", rows: 24, cols: 100_000 }],
    ["a window too small", { t: "resize", id: 1, rows: 1, cols: 80 }],
    ["an unknown terminal kind", { t: "open", id: 1, domain: "work", kind: "x11", rows: 24, cols: 80 }],
    ["terminal id 0", { t: "close", id: 0 }],
    ["a fractional terminal id", { t: "close", id: 1.5 }],
    ["a terminal id beyond 32 bits", { t: "close", id: 2 ** 33 }],
    ["a window ticket without a window", { t: "window-ticket", domain: "work" }],
    ["a window ticket for a bad domain name", { t: "window-ticket", domain: "dom0]", window: 1 }],
    ["window id 0", { t: "window-close", domain: "work", window: 0 }],
    ["a window wider than the bound", { t: "window-resize", domain: "work", window: 1, width: WINDOW_MAX_WIDTH + 1, height: 600 }],
    ["a window smaller than the bound", { t: "window-resize", domain: "work", window: 1, width: 800, height: WINDOW_MIN_HEIGHT - 1 }],
    ["a fractional window size", { t: "window-resize", domain: "work", window: 1, width: 800.5, height: 600 }],
    ["a window copy without a window", { t: "clipboard-copy", domain: "work" }],
    ["a window paste into a bad domain name", { t: "clipboard-paste", domain: "dom0]", window: 1 }],
    // The server attributes a terminal's text to the terminal's domain: the page cannot name one.
    ["a terminal copy naming a domain", { t: "terminal-copy", id: 3, text: "x", domain: "vault" }],
    ["a terminal copy without a terminal", { t: "terminal-copy", text: "x" }],
    ["an empty terminal copy", { t: "terminal-copy", id: 3, text: "" }],
    ["a terminal copy over the bound", { t: "terminal-copy", id: 3, text: "x".repeat(MAX_CLIPBOARD_BYTES + 1) }],
    ["a terminal copy over the bound in UTF-8 only", { t: "terminal-copy", id: 3, text: "é".repeat(MAX_CLIPBOARD_BYTES / 2 + 1) }],
    ["a terminal copy that is not text", { t: "terminal-copy", id: 3, text: [104, 105] }],
    ["a terminal paste naming a domain", { t: "terminal-paste", id: 3, domain: "vault" }],
    ["a desktop set over the bound in UTF-8", { t: "clipboard-set", text: "€".repeat(Math.floor(MAX_CLIPBOARD_BYTES / 3) + 1) }],
    ["a desktop set naming a source", { t: "clipboard-set", text: "x", source: "work" }],
    ["a take with a target", { t: "clipboard-take", domain: "work" }],
  ])("refuses %s", (_why, m) => expect(pageMessageSchema.safeParse(m).success).toBe(false));

  it("counts UTF-8 bytes as TextEncoder writes them", () => {
    for (const s of ["", "abc", "é", "€", "😀", "a😀b", "\ud800", "x\udc00y", "\ud800\ud800\udc00"]) expect(utf8Length(s), JSON.stringify(s)).toBe(new TextEncoder().encode(s).length);
  });
});

describe("web shell messages from the server", () => {
  it.each([
    { t: "domains", domains: [{ name: "work", class: "AppVM", state: "Running", label: "blue" }] },
    { t: "domains", domains: [{ name: "work", class: "unknown", state: "unknown", label: "" }] },
    { t: "event", type: "domain-start", domain: "work" },
    { t: "event", type: "global-property-set", domain: "" },
    { t: "opened", id: 3, domain: "work", kind: "console" },
    { t: "closed", id: 3, reason: "work stopped" },
    { t: "error", code: "NOT_FOUND", message: "no such domain" },
    { t: "error", code: "RESOURCE_EXHAUSTED", message: "at most 32 terminals at once", id: 33 },
    { t: "windows", windows: [] },
    { t: "windows", windows: [{ domain: "work", id: 1, program: "foot", width: 640, height: 400 }] },
    { t: "window-ticket", domain: "work", window: 1, ticket: "a".repeat(43) },
    { t: "window-ended", domain: "work", window: 1, reason: "work stopped" },
    { t: "window-ticket", domain: "work", window: 1, ticket: "a".repeat(43), reconnect: true },
    { t: "clipboard", source: "", size: 0, copiedAtMs: 0 },
    { t: "clipboard", source: "work", size: 12, copiedAtMs: 1764500000000 },
    { t: "clipboard", source: "dom0", size: MAX_CLIPBOARD_BYTES, copiedAtMs: 1 },
    { t: "clipboard-copied", source: "work", size: 12 },
    { t: "clipboard-pasted", source: "work", target: "vault" },
    { t: "terminal-paste-text", id: 3, text: "ls\n", source: "work" },
    { t: "terminal-paste-text", id: 3, text: "", source: "work" },
    { t: "clipboard-taken", text: "x".repeat(MAX_CLIPBOARD_BYTES), source: "dom0" },
    { t: "passphrase-needed", domain: "vault", reason: "required" },
    { t: "passphrase-needed", domain: "vault", reason: "wrong" },
  ])("accepts %j", (m) => expect(serverMessageSchema.parse(m)).toEqual(m));

  it.each([
    ["the code's klass field", { t: "domains", domains: [{ name: "work", klass: "AppVM", state: "Running", label: "blue" }] }],
    ["an enum number for a state", { t: "domains", domains: [{ name: "work", class: "AppVM", state: 3, label: "blue" }] }],
    ["a state that is not Qubes'", { t: "domains", domains: [{ name: "work", class: "AppVM", state: "running", label: "blue" }] }],
    ["an error without a code", { t: "error", message: "x" }],
    ["an error code outside the table", { t: "error", code: "EPERM", message: "x" }],
    ["oversized text", { t: "closed", id: 1, reason: "x".repeat(MAX_SHELL_TEXT + 1) }],
    ["an unknown event", { t: "event", type: "domain-exploded", domain: "work" }],
    ["a window with the RFB desktop name", { t: "windows", windows: [{ domain: "work", id: 1, program: "foot", width: 640, height: 400, name: "[dom0]" }] }],
    ["a window without a program", { t: "windows", windows: [{ domain: "work", id: 1, program: "", width: 640, height: 400 }] }],
    ["an oversized program name", { t: "windows", windows: [{ domain: "work", id: 1, program: "p".repeat(MAX_WINDOW_PROGRAM + 1), width: 640, height: 400 }] }],
    ["a malformed ticket", { t: "window-ticket", domain: "work", window: 1, ticket: "short" }],
    ["a reconnect flag that is not true", { t: "window-ticket", domain: "work", window: 1, ticket: "a".repeat(43), reconnect: "yes" }],
    ["clipboard state with its content", { t: "clipboard", source: "work", size: 2, copiedAtMs: 1, data: "hi" }],
    ["clipboard state over the bound", { t: "clipboard", source: "work", size: MAX_CLIPBOARD_BYTES + 1, copiedAtMs: 1 }],
    ["clipboard state from a bad name", { t: "clipboard", source: "[dom0]", size: 1, copiedAtMs: 1 }],
    ["a negative time", { t: "clipboard", source: "work", size: 1, copiedAtMs: -1 }],
    ["a copy from nowhere", { t: "clipboard-copied", source: "", size: 1 }],
    ["a paste into nowhere", { t: "clipboard-pasted", source: "work", target: "" }],
    ["terminal paste text over the bound", { t: "terminal-paste-text", id: 3, text: "x".repeat(MAX_CLIPBOARD_BYTES + 1), source: "work" }],
    ["terminal paste text without its terminal", { t: "terminal-paste-text", text: "x", source: "work" }],
    ["taken text over the bound", { t: "clipboard-taken", text: "x".repeat(MAX_CLIPBOARD_BYTES + 1), source: "work" }],
    ["passphrase-needed with an unknown reason", { t: "passphrase-needed", domain: "vault", reason: "expired" }],
    ["passphrase-needed without a domain", { t: "passphrase-needed", reason: "required" }],
    ["passphrase-needed echoing the passphrase", { t: "passphrase-needed", domain: "vault", reason: "wrong", passphrase: "x" }],
  ])("refuses %s", (_why, m) => expect(serverMessageSchema.safeParse(m).success).toBe(false));

  it("clips long text to what a message may carry", () => {
    expect(clipShellText("short")).toBe("short");
    const clipped = clipShellText("y".repeat(MAX_SHELL_TEXT * 3));
    expect(clipped).toHaveLength(MAX_SHELL_TEXT);
    expect(serverMessageSchema.safeParse({ t: "closed", id: 1, reason: clipped }).success).toBe(true);
  });
});
