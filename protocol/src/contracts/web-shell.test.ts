import { describe, expect, it } from "vitest";
import { MAX_SHELL_TEXT, MAX_WINDOW_PROGRAM, clipShellText, pageMessageSchema, serverMessageSchema } from "./web-shell.js";
import { WINDOW_MAX_WIDTH, WINDOW_MIN_HEIGHT } from "./windows.js";

describe("web shell messages from the page", () => {
  it.each([
    { t: "list" },
    { t: "start", domain: "work" },
    { t: "kill", domain: "sys-net" },
    { t: "open", id: 1, domain: "work", kind: "shell", rows: 24, cols: 80 },
    { t: "resize", id: 7, rows: 50, cols: 200 },
    { t: "close", id: 7 },
    { t: "window-ticket", domain: "work", window: 1 },
    { t: "window-resize", domain: "work", window: 1, width: 800, height: 600 },
    { t: "window-close", domain: "work", window: 1 },
  ])("accepts %j", (m) => expect(pageMessageSchema.parse(m)).toEqual(m));

  it.each([
    ["not an object", "list"],
    ["an unknown type", { t: "reboot", domain: "work" }],
    ["a missing type", { domain: "work" }],
    ["an extra field", { t: "list", admin: true }],
    ["a bad domain name", { t: "start", domain: "../etc" }],
    ["an oversized domain name", { t: "start", domain: "x".repeat(100_000) }],
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
  ])("refuses %s", (_why, m) => expect(pageMessageSchema.safeParse(m).success).toBe(false));
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
  ])("refuses %s", (_why, m) => expect(serverMessageSchema.safeParse(m).success).toBe(false));

  it("clips long text to what a message may carry", () => {
    expect(clipShellText("short")).toBe("short");
    const clipped = clipShellText("y".repeat(MAX_SHELL_TEXT * 3));
    expect(clipped).toHaveLength(MAX_SHELL_TEXT);
    expect(serverMessageSchema.safeParse({ t: "closed", id: 1, reason: clipped }).success).toBe(true);
  });
});
