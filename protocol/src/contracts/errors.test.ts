import { status } from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { QVM_ERROR_CODES, QvmError, isQvmError, isQvmErrorCode, type QvmErrorCode } from "./errors.js";

describe("the QvmError code table", () => {
  it("gives exit 2 (usage) to INVALID_ARGUMENT alone and 1 to every other code", () => {
    for (const code of Object.keys(QVM_ERROR_CODES) as QvmErrorCode[]) {
      expect(new QvmError(code, "x").exitCode, code).toBe(code === "INVALID_ARGUMENT" ? 2 : 1);
    }
  });

  it("maps each code to the gRPC status grpc-js defines under the intended name", () => {
    const expected: Record<QvmErrorCode, keyof typeof status> = {
      INVALID_ARGUMENT: "INVALID_ARGUMENT",
      NOT_FOUND: "NOT_FOUND",
      ALREADY_EXISTS: "ALREADY_EXISTS",
      FAILED_PRECONDITION: "FAILED_PRECONDITION",
      PERMISSION_DENIED: "PERMISSION_DENIED",
      PASSPHRASE_REQUIRED: "UNAUTHENTICATED",
      RESOURCE_EXHAUSTED: "RESOURCE_EXHAUSTED",
      MISSING_DEPENDENCY: "FAILED_PRECONDITION",
      DAEMON_UNAVAILABLE: "UNAVAILABLE",
      VMM_FAILED: "INTERNAL",
      STORAGE_FAILED: "INTERNAL",
      AGENT_TIMEOUT: "DEADLINE_EXCEEDED",
      AGENT_PROTOCOL: "DATA_LOSS",
      AGENT_UNAVAILABLE: "UNAVAILABLE",
      POLICY_INVALID: "FAILED_PRECONDITION",
      CORRUPT_STATE: "DATA_LOSS",
      IMAGE_BUILD_FAILED: "INTERNAL",
      INTERNAL: "INTERNAL",
    };
    for (const [code, name] of Object.entries(expected)) expect(QVM_ERROR_CODES[code as QvmErrorCode].grpc, code).toBe(status[name]);
  });

  it("gives every code an HTTP error status", () => {
    for (const [code, row] of Object.entries(QVM_ERROR_CODES)) expect(row.http >= 400 && row.http < 600, code).toBe(true);
    expect(new QvmError("NOT_FOUND", "x").httpStatus).toBe(404);
  });

  it("a broken policy is a failure (1), not a usage error, and a full disk is RESOURCE_EXHAUSTED", () => {
    expect(new QvmError("POLICY_INVALID", "30-user.policy:3: ...").exitCode).toBe(1);
    expect(new QvmError("RESOURCE_EXHAUSTED", "the disk is full").grpcStatus).toBe(status.RESOURCE_EXHAUSTED);
  });
});

describe("isQvmError and isQvmErrorCode", () => {
  it("recognizes the type and, when asked, the code", () => {
    const e = new QvmError("NOT_FOUND", "no such domain", { cause: new Error("under") });
    expect(isQvmError(e)).toBe(true);
    expect(isQvmError(e, "NOT_FOUND")).toBe(true);
    expect(isQvmError(e, "INTERNAL")).toBe(false);
    expect(e.cause).toBeInstanceOf(Error);
    expect(isQvmError(Object.assign(new Error("look-alike"), { name: "QvmError", code: "NOT_FOUND" }))).toBe(false);
  });

  it("knows only the table's codes", () => {
    expect(isQvmErrorCode("POLICY_INVALID")).toBe(true);
    for (const bad of ["toString", "not_found", "", 3, undefined]) expect(isQvmErrorCode(bad)).toBe(false);
  });
});
