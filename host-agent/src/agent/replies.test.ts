import { describe, expect, it } from "vitest";
import { parseGuestExecResponse, parseGuestInfo, parseGuestPing, quoteGuestText } from "./replies.js";

describe("validation of guest agent replies", () => {
  it("accepts a well-formed GetInfo", () => {
    const info = { kernelRelease: "6.1.0-56-amd64", uptimeSeconds: 3.2, agentVersion: "0.1.0", hostname: "work" };
    expect(parseGuestInfo(info)).toEqual(info);
  });

  it.each([
    ["an oversized kernel release", { kernelRelease: "x".repeat(10_000), uptimeSeconds: 1, agentVersion: "1", hostname: "h" }],
    ["control characters", { kernelRelease: "6.1\x1b[2J", uptimeSeconds: 1, agentVersion: "1", hostname: "h" }],
    ["a negative uptime", { kernelRelease: "6.1", uptimeSeconds: -1, agentVersion: "1", hostname: "h" }],
    ["a non-finite uptime", { kernelRelease: "6.1", uptimeSeconds: Infinity, agentVersion: "1", hostname: "h" }],
    ["an empty kernel release", { kernelRelease: "", uptimeSeconds: 1, agentVersion: "1", hostname: "h" }],
  ])("rejects GetInfo with %s", (_what, info) => {
    expect(() => parseGuestInfo(info)).toThrow(expect.objectContaining({ code: "AGENT_PROTOCOL" }));
  });

  it("rejects a Ping whose version is not printable", () => {
    expect(() => parseGuestPing({ agentVersion: "\u0000" })).toThrow(expect.objectContaining({ code: "AGENT_PROTOCOL" }));
  });

  it("accepts each Exec message kind", () => {
    expect(parseGuestExecResponse({ msg: { $case: "started", value: { execId: 1, pid: 42 } } })).toEqual({ kind: "started", execId: 1, pid: 42 });
    expect(parseGuestExecResponse({ msg: { $case: "stdout", value: Buffer.from("hi") } })).toEqual({ kind: "stdout", data: Buffer.from("hi") });
    expect(parseGuestExecResponse({ msg: { $case: "exit", value: { code: 3, signal: "" } } })).toEqual({ kind: "exit", code: 3, signal: null });
    expect(parseGuestExecResponse({ msg: { $case: "exit", value: { code: -1, signal: "SIGKILL" } } })).toEqual({ kind: "exit", code: null, signal: "SIGKILL" });
  });

  it.each([
    ["an empty message", { msg: undefined }],
    ["exec id 0", { msg: { $case: "started" as const, value: { execId: 0, pid: 1 } } }],
    ["an oversized output chunk", { msg: { $case: "stderr" as const, value: Buffer.alloc(1024 * 1024) } }],
    ["an exit code above 255", { msg: { $case: "exit" as const, value: { code: 300, signal: "" } } }],
    ["a negative exit code", { msg: { $case: "exit" as const, value: { code: -5, signal: "" } } }],
    ["an invented signal", { msg: { $case: "exit" as const, value: { code: 0, signal: "SIGEVIL; rm -rf /" } } }],
  ])("rejects an Exec message with %s", (_what, msg) => {
    expect(() => parseGuestExecResponse(msg as never)).toThrow(expect.objectContaining({ code: "AGENT_PROTOCOL" }));
  });

  it("clips and escapes guest text before it reaches an error message", () => {
    const q = quoteGuestText(`\x1b]0;evil\x07${"a".repeat(1000)}`);
    expect(q.length).toBeLessThan(230);
    expect(q).not.toContain("\x1b");
  });

  it.each([
    ["ESC and BEL (C0, as JSON does)", "\x1b]0;t\x07", '"\\u001b]0;t\\u0007"'],
    ["DEL", "a\x7fb", '"a\\u007fb"'],
    ["C1 CSI U+009B", "a\u009b31mb", '"a\\u009b31mb"'],
    ["C1 OSC U+009D ... ST U+009C", "\u009d52;c;eA==\u009c", '"\\u009d52;c;eA==\\u009c"'],
    ["C1 NEL U+0085", "a\u0085b", '"a\\u0085b"'],
    ["right-to-left override U+202E", "exit\u202E0 edoc", '"exit\\u202e0 edoc"'],
    ["isolates U+2066..U+2069", "\u2066a\u2069", '"\\u2066a\\u2069"'],
    ["zero-width space and joiner", "a\u200Bb\u200Dc", '"a\\u200bb\\u200dc"'],
    ["byte-order mark", "\uFEFFx", '"\\ufeffx"'],
    ["line and paragraph separators", "a\u2028b\u2029c", '"a\\u2028b\\u2029c"'],
    ["a tag character (two UTF-16 units)", "a\u{E0041}", '"a\\udb40\\udc41"'],
    ["plain and non-ASCII text, unchanged", "héllo 日本 😀 \u00a0", '"héllo 日本 😀 \u00a0"'],
  ])("escapes %s", (_what, text, want) => {
    const q = quoteGuestText(text);
    expect(q).toBe(want);
    expect(JSON.parse(q)).toBe(text); // still JSON, meaning the same text
  });
});
