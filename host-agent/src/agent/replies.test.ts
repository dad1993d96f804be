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
});
