// Reidentify: the request's bounds, the steps in order over a fake system, the real system's
// writes on temporary files, and one round trip from the host's AgentClient to the real service.
// Nothing here touches /dev/urandom, /proc/sys/kernel/hostname or the clock of this machine.
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { agentV1 } from "@qvm/protocol";
import { QvmError } from "@qvm/protocol/contracts";
import { AgentClient } from "@qvm/host-agent";
import { serveLocalAgent, type LocalAgent } from "@qvm/host-agent/testing";
import type { CommandRunner } from "./net/commands.js";
import {
  CLOCK_TOLERANCE_MS,
  MAX_ENTROPY_BYTES,
  MAX_UNIX_TIME_MS,
  MIN_ENTROPY_BYTES,
  MIN_UNIX_TIME_MS,
  dateArgument,
  reidentify,
  systemIdentity,
  validateReidentify,
  type IdentitySystem,
} from "./reidentify.js";
import { createGuestAgentService } from "./service.js";

type Step = "entropy" | "hostname" | "clock";

/** A domain in memory: what was asked of it, a clock `offsetMs` off this machine's, a step that fails. */
function fakeSystem(opts: { offsetMs?: number; fail?: Step } = {}) {
  const calls: { step: Step; value: unknown }[] = [];
  let offset = opts.offsetMs ?? 0;
  const act = async (step: Step, value: unknown) => {
    await Promise.resolve();
    if (opts.fail === step) throw new Error(`${step} refused by the fake`);
    calls.push({ step, value });
  };
  const system: IdentitySystem = {
    addEntropy: (bytes) => act("entropy", Buffer.from(bytes)),
    setHostname: (name) => act("hostname", name),
    now: () => Date.now() + offset,
    async setClock(ms) {
      await act("clock", ms);
      offset = ms - Date.now();
    },
  };
  return { system, calls };
}

const good = (over: Partial<agentV1.ReidentifyRequest> = {}): agentV1.ReidentifyRequest => ({
  hostname: "disp1234",
  entropy: Buffer.alloc(64, 7),
  unixTimeMs: Date.now(),
  ...over,
});

const hostnameBefore = os.hostname();
afterAll(() => {
  // The guard of this file's promise: the machine running the tests kept its name.
  expect(os.hostname()).toBe(hostnameBefore);
});

describe("validateReidentify", () => {
  it.each(["work", "disp1234", "a", "Work-VM", "0day", "a".repeat(63), "work.dev", "my_vm", "sys-net"])("accepts the hostname %j", (hostname) => {
    expect(validateReidentify(good({ hostname })).hostname).toBe(hostname);
  });

  it.each<[string, string, RegExp]>([
    ["empty", "", /a hostname is required/],
    ["a path", "a/../b", /invalid hostname "a\/..\/b"/],
    ["300 characters", "a".repeat(300), /longer than 63 characters/],
    ["64 characters", "a".repeat(64), /longer than 63/],
    ["a newline", "a\nb", /invalid hostname "a\\nb"/],
    ["a NUL", "a\0b", /invalid hostname "a\\u0000b"/],
    ["an escape sequence", "a\x1b[31m", /invalid hostname "a\\u001b\[31m"/],
    ["a C1 control", "a\u009bb", /invalid hostname "a\\u009bb"/],
    ["a space", "a b", /invalid hostname/],
    ["a leading hyphen", "-a", /invalid hostname/],
    ["a digit first and a trailing hyphen", "1-", /invalid hostname/],
    ["a dot first", ".a", /invalid hostname/],
    ["non-ASCII", "wörk", /invalid hostname/],
  ])("refuses a hostname with %s", (_what, hostname, message) => {
    const err = (() => {
      try {
        validateReidentify(good({ hostname }));
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(QvmError);
    expect(err).toMatchObject({ code: "INVALID_ARGUMENT", message: expect.stringMatching(message) });
    // Whatever the name holds, the message holds no control character.
    expect((err as Error).message).not.toMatch(/[\0-\x1f\x7f-\x9f]/);
  });

  it("takes entropy of 32..512 bytes only", () => {
    for (const n of [MIN_ENTROPY_BYTES, 64, MAX_ENTROPY_BYTES]) expect(() => validateReidentify(good({ entropy: Buffer.alloc(n) }))).not.toThrow();
    for (const n of [0, MIN_ENTROPY_BYTES - 1, MAX_ENTROPY_BYTES + 1, 64 * 1024]) {
      expect(() => validateReidentify(good({ entropy: Buffer.alloc(n) }))).toThrow(new RegExp(`entropy must be 32..512 bytes, not ${n}`));
    }
  });

  it("takes a time within 2000-01-01..2200-01-01 only", () => {
    for (const t of [MIN_UNIX_TIME_MS, Date.now(), MAX_UNIX_TIME_MS - 1]) expect(() => validateReidentify(good({ unixTimeMs: t }))).not.toThrow();
    expect(() => validateReidentify(good({ unixTimeMs: 0 }))).toThrow(/positive integer/);
    expect(() => validateReidentify(good({ unixTimeMs: -1 }))).toThrow(/positive integer/);
    expect(() => validateReidentify(good({ unixTimeMs: 1.5 }))).toThrow(/positive integer/);
    expect(() => validateReidentify(good({ unixTimeMs: Number.NaN }))).toThrow(/positive integer/);
    expect(() => validateReidentify(good({ unixTimeMs: Date.UTC(1970, 0, 2) }))).toThrow(/outside 2000-01-01..2200-01-01/);
    expect(() => validateReidentify(good({ unixTimeMs: MIN_UNIX_TIME_MS - 1 }))).toThrow(/outside/);
    expect(() => validateReidentify(good({ unixTimeMs: MAX_UNIX_TIME_MS }))).toThrow(/outside/);
  });
});

describe("reidentify", () => {
  it("mixes in the entropy, then sets the hostname; leaves a clock within 1 s alone", async () => {
    const { system, calls } = fakeSystem({ offsetMs: CLOCK_TOLERANCE_MS / 2 });
    const entropy = Buffer.alloc(64, 9);
    expect(await reidentify(good({ hostname: "disp7", entropy }), system)).toEqual({ clockSet: false });
    expect(calls).toEqual([
      { step: "entropy", value: entropy },
      { step: "hostname", value: "disp7" },
    ]);
  });

  it.each([
    ["stood still for an hour", -3_600_000],
    ["ran 5 s ahead", 5000],
  ])("steps a clock that %s to the host's", async (_what, offsetMs) => {
    const { system, calls } = fakeSystem({ offsetMs });
    const sent = Date.now();
    expect(await reidentify(good({ unixTimeMs: sent }), system)).toEqual({ clockSet: true });
    expect(calls.map((c) => c.step)).toEqual(["entropy", "hostname", "clock"]);
    const set = calls[2]!.value as number;
    // The host's time, aged by the time the steps before took.
    expect(set).toBeGreaterThanOrEqual(sent);
    expect(set - Date.now()).toBeLessThan(100);
  });

  it.each<[Step, RegExp]>([
    ["entropy", /^Reidentify: mixing entropy into the kernel's random pool failed: entropy refused by the fake$/],
    ["hostname", /^Reidentify: setting the hostname to "disp1234" failed: hostname refused/],
    ["clock", /^Reidentify: setting the clock to 20\d\d-.*Z failed: clock refused/],
  ])("names the step that failed (%s) and runs none after it", async (fail, message) => {
    const { system, calls } = fakeSystem({ offsetMs: -60_000, fail });
    await expect(reidentify(good(), system)).rejects.toMatchObject({ code: "INTERNAL", message: expect.stringMatching(message) });
    const order: Step[] = ["entropy", "hostname", "clock"];
    expect(calls.map((c) => c.step)).toEqual(order.slice(0, order.indexOf(fail)));
  });

  it("touches nothing for a request out of bounds", async () => {
    const { system, calls } = fakeSystem({ offsetMs: -60_000 });
    await expect(reidentify(good({ entropy: Buffer.alloc(MAX_ENTROPY_BYTES + 1) }), system)).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
    await expect(reidentify(good({ unixTimeMs: 1000 }), system)).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
    expect(calls).toEqual([]);
  });
});

describe("systemIdentity", () => {
  let dir = "";
  beforeAll(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), "qvm-reidentify-"));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("writes the entropy and the hostname to the files it is given, and sets the clock with date -u -s", async () => {
    const urandom = path.join(dir, "urandom");
    const hostname = path.join(dir, "hostname");
    writeFileSync(urandom, "");
    writeFileSync(hostname, "old");
    const commands: string[][] = [];
    const run: CommandRunner = async (command, args) => {
      commands.push([command, ...args]);
      return { code: 0, stdout: "", stderr: "" };
    };
    const system = systemIdentity({ urandom, hostname }, run);
    await system.addEntropy(Buffer.from("0123456789"));
    await system.setHostname("disp9");
    await system.setClock(Date.UTC(2030, 0, 1) + 42);
    expect(readFileSync(urandom, "utf8")).toBe("0123456789");
    expect(readFileSync(hostname, "utf8")).toBe("disp9");
    expect(commands).toEqual([["date", "-u", "-s", `@${Date.UTC(2030, 0, 1) / 1000}.042`]]);
  });

  it("creates no file that is missing, and reports a date that failed", async () => {
    const missing = path.join(dir, "no-such-device");
    const run: CommandRunner = async () => ({ code: 1, stdout: "", stderr: "date: cannot set date: Operation not permitted\n" });
    const system = systemIdentity({ urandom: missing, hostname: missing }, run);
    await expect(system.addEntropy(Buffer.alloc(32))).rejects.toMatchObject({ code: "ENOENT" });
    await expect(system.setHostname("x")).rejects.toMatchObject({ code: "ENOENT" });
    expect(existsSync(missing)).toBe(false);
    await expect(system.setClock(Date.UTC(2030, 0, 1))).rejects.toThrow(/date -u -s @1893456000\.000 failed: date: cannot set date/);
  });

  it("writes the milliseconds as a three-digit fraction", () => {
    expect(dateArgument(1_700_000_000_000)).toBe("@1700000000.000");
    expect(dateArgument(1_700_000_000_007)).toBe("@1700000000.007");
    expect(dateArgument(1_700_000_000_999)).toBe("@1700000000.999");
  });
});

describe("Reidentify between the host's AgentClient and the guest agent service", () => {
  let local: LocalAgent;
  let fake: ReturnType<typeof fakeSystem>;
  let fail: Step | undefined;

  beforeAll(async () => {
    fake = fakeSystem({ offsetMs: -3_600_000 });
    // A system whose failing step the tests choose, over the recording fake.
    const system: IdentitySystem = {
      ...fake.system,
      addEntropy: (b) => (fail === "entropy" ? Promise.reject(new Error("EACCES: /dev/urandom")) : fake.system.addEntropy(b)),
    };
    local = await serveLocalAgent(createGuestAgentService({ shutdown() {} }, undefined, undefined, system));
  });
  afterAll(() => local?.close());

  it("sends the hostname, 64 fresh random bytes and the host's clock; the guest applies all three", async () => {
    const before = Date.now();
    await local.client.reidentify("disp42");
    const after = Date.now();
    await local.client.reidentify("disp42");
    const [entropy, hostname, clock, entropy2] = fake.calls;
    expect(hostname).toEqual({ step: "hostname", value: "disp42" });
    expect(entropy!.step).toBe("entropy");
    expect((entropy!.value as Buffer).length).toBe(64);
    // Fresh bytes each time.
    expect(entropy2!.step).toBe("entropy");
    expect((entropy2!.value as Buffer).equals(entropy!.value as Buffer)).toBe(false);
    // The guest's clock was an hour behind: stepped to the host's.
    expect(clock!.step).toBe("clock");
    expect(clock!.value as number).toBeGreaterThanOrEqual(before);
    expect(clock!.value as number).toBeLessThanOrEqual(after);
    // The second time the clock was right: not stepped again.
    expect(fake.calls.map((c) => c.step)).toEqual(["entropy", "hostname", "clock", "entropy", "hostname"]);
  });

  it.each([
    ["an empty hostname", "", /guest agent refused Reidentify: "Reidentify: a hostname is required"/],
    ["a path as hostname", "a/../b", /refused Reidentify: .*invalid hostname/],
    ["a 300-character hostname", "x".repeat(300), /longer than 63 characters/],
    ["control characters", "ab\x1b]0;pwned\x07", /invalid hostname/],
  ])("refuses %s with INVALID_ARGUMENT and changes nothing", async (_what, hostname, message) => {
    const n = fake.calls.length;
    const err = await local.client.reidentify(hostname).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QvmError);
    expect(err).toMatchObject({ code: "INVALID_ARGUMENT", message: expect.stringMatching(message) });
    expect((err as Error).message).not.toMatch(/[\0-\x1f\x7f-\x9f]/);
    expect(fake.calls.length).toBe(n);
  });

  it("reports a step that failed in the guest", async () => {
    fail = "entropy";
    try {
      await expect(local.client.reidentify("disp42")).rejects.toMatchObject({
        code: "AGENT_PROTOCOL",
        message: expect.stringMatching(/Reidentify: mixing entropy into the kernel's random pool failed: EACCES: \/dev\/urandom/),
      });
    } finally {
      fail = undefined;
    }
    // The agent goes on answering.
    await expect(local.client.reidentify("disp43")).resolves.toBeUndefined();
  });

  it("times out with AGENT_TIMEOUT when no agent answers, and refuses on a closed client", async () => {
    const nowhere = new AgentClient(path.join(os.tmpdir(), `qvm-no-agent-${process.pid}.sock`), 300);
    try {
      await expect(nowhere.reidentify("disp42")).rejects.toMatchObject({ code: "AGENT_TIMEOUT", message: expect.stringMatching(/Reidentify/) });
    } finally {
      nowhere.close();
    }
    await expect(nowhere.reidentify("disp42")).rejects.toMatchObject({ code: "AGENT_UNAVAILABLE" });
  });
});
