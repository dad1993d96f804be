import { describe, expect, it } from "vitest";
import { MAX_ARGUMENT_LENGTH, isValidServiceCall, isValidServiceName, sanitizeArgument, splitServiceName } from "./services.js";

describe("qrexec service names", () => {
  it.each(["qubes.Filecopy", "my-service_2", "a", "x".repeat(64)])("accepts %s", (s) => expect(isValidServiceName(s)).toBe(true));
  it.each(["", "x".repeat(65), "a+b", "a/b", "a b", "../x", "ä"])("refuses %j", (s) => expect(isValidServiceName(s)).toBe(false));

  it("splits SERVICE+ARG at the first +, as Qubes does", () => {
    expect(splitServiceName("qubes.Filecopy")).toEqual({ service: "qubes.Filecopy", argument: "" });
    expect(splitServiceName("my.Service+arg")).toEqual({ service: "my.Service", argument: "arg" });
    expect(splitServiceName("s+a+b")).toEqual({ service: "s", argument: "a+b" });
    expect(splitServiceName("s+")).toEqual({ service: "s", argument: "" });
  });

  it("sanitizes an argument as qrexec-daemon does", () => {
    expect(sanitizeArgument("ok.arg+1_-")).toBe("ok.arg+1_-");
    expect(sanitizeArgument("a b/c;$(x)")).toBe("a_b_c___x_");
  });

  it("accepts a call a person may write and refuses what would need sanitizing", () => {
    expect(isValidServiceCall("my.Service+arg.1")).toBe(true);
    expect(isValidServiceCall("my.Service")).toBe(true);
    expect(isValidServiceCall("my.Service+a b")).toBe(false);
    expect(isValidServiceCall("bad name")).toBe(false);
    expect(isValidServiceCall(`s+${"a".repeat(MAX_ARGUMENT_LENGTH)}`)).toBe(true);
    expect(isValidServiceCall(`s+${"a".repeat(MAX_ARGUMENT_LENGTH + 1)}`)).toBe(false);
  });
});
