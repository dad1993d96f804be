// Reidentify: the domain's own identity after it was started by restoring a memory snapshot of
// another, already-booted domain (docs/agent-protocol.md, "Reidentify"). A restored guest still
// has the snapshot's hostname, the snapshot's random pool and a clock that stood still while the
// snapshot sat on disk. The host sends the new name, fresh random bytes and its clock; the agent
// mixes the bytes into the kernel's pool, sets the hostname and steps the clock when it is off.
// What touches the system is one injectable interface, so tests never change the test machine.
import { writeFile } from "node:fs/promises";
import type { agentV1 } from "@qvm/protocol";
import { QvmError, isDomainNameShaped, quoteGuestText } from "@qvm/protocol/contracts";
import { runChecked, runCommand, type CommandRunner } from "./net/commands.js";
import { toGrpcError } from "./rpc-streams.js";

/** Longest hostname accepted: a DNS label (RFC 1123); the kernel's own limit is 64. */
export const MAX_HOSTNAME_LENGTH = 63;
/** A DNS label: letters, digits and inner hyphens (case-insensitive). */
export const HOSTNAME_LABEL_PATTERN = /^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$/i;
export const MIN_ENTROPY_BYTES = 32;
export const MAX_ENTROPY_BYTES = 512;
/** unix_time_ms must lie in [MIN_UNIX_TIME_MS, MAX_UNIX_TIME_MS): 2000-01-01 to 2200-01-01 UTC. */
export const MIN_UNIX_TIME_MS = Date.UTC(2000, 0, 1);
export const MAX_UNIX_TIME_MS = Date.UTC(2200, 0, 1);
/** The clock is stepped only when it is further than this from the host's. */
export const CLOCK_TOLERANCE_MS = 1000;

/** What Reidentify changes in the domain; systemIdentity() is the real one. */
export interface IdentitySystem {
  /** Mixes `bytes` into the kernel's random pool (they are mixed in, not credited as entropy). */
  addEntropy(bytes: Uint8Array): Promise<void>;
  setHostname(name: string): Promise<void>;
  /** The domain's wall clock, in ms since the epoch. */
  now(): number;
  /** Steps the wall clock to `unixTimeMs`. */
  setClock(unixTimeMs: number): Promise<void>;
}

export interface IdentityPaths {
  urandom: string;
  hostname: string;
}

const SYSTEM_PATHS: IdentityPaths = { urandom: "/dev/urandom", hostname: "/proc/sys/kernel/hostname" };

/** `date -s` takes seconds with a fraction: "@1700000000.042". */
export function dateArgument(unixTimeMs: number): string {
  return `@${Math.floor(unixTimeMs / 1000)}.${String(unixTimeMs % 1000).padStart(3, "0")}`;
}

/**
 * The domain itself: writes /dev/urandom and /proc/sys/kernel/hostname, runs `date -u -s`. Files
 * are opened for writing without O_CREAT ("r+"), so a missing one fails instead of being created.
 */
export function systemIdentity(paths: Partial<IdentityPaths> = {}, run: CommandRunner = runCommand): IdentitySystem {
  const p = { ...SYSTEM_PATHS, ...paths };
  return {
    addEntropy: (bytes) => writeFile(p.urandom, bytes, { flag: "r+" }),
    setHostname: (name) => writeFile(p.hostname, name, { flag: "r+" }),
    now: () => Date.now(),
    async setClock(unixTimeMs) {
      await runChecked(run, "date", ["-u", "-s", dateArgument(unixTimeMs)]);
    },
  };
}

function invalid(message: string): never {
  throw new QvmError("INVALID_ARGUMENT", `Reidentify: ${message}`);
}

/**
 * Whether `name` may become the hostname: a DNS label, or a domain name (contracts/names.ts).
 * The host names a domain's guest after the domain (domain-vm.ts: systemd.hostname=<name>), and
 * a domain name may also hold "_" and "." (at most 31 characters, a letter first). Neither shape
 * admits "/", whitespace or control characters.
 */
export function isValidHostname(name: string): boolean {
  return name.length >= 1 && name.length <= MAX_HOSTNAME_LENGTH && (HOSTNAME_LABEL_PATTERN.test(name) || isDomainNameShaped(name));
}

/** The request if every field is within bounds; otherwise throws QvmError INVALID_ARGUMENT saying which and why. */
export function validateReidentify(req: agentV1.ReidentifyRequest): agentV1.ReidentifyRequest {
  const { hostname, entropy, unixTimeMs } = req;
  if (typeof hostname !== "string" || hostname.length === 0) invalid("a hostname is required");
  if (hostname.length > MAX_HOSTNAME_LENGTH) invalid(`hostname ${quoteGuestText(hostname, 40)} is longer than ${MAX_HOSTNAME_LENGTH} characters`);
  if (!isValidHostname(hostname)) {
    invalid(
      `invalid hostname ${quoteGuestText(hostname, 70)}: it must be letters, digits and inner "-" (or a domain name: a letter first, then letters, digits, "_", "." and "-")`,
    );
  }
  if (!(entropy instanceof Uint8Array)) invalid("entropy is required");
  if (entropy.length < MIN_ENTROPY_BYTES || entropy.length > MAX_ENTROPY_BYTES) {
    invalid(`entropy must be ${MIN_ENTROPY_BYTES}..${MAX_ENTROPY_BYTES} bytes, not ${entropy.length}`);
  }
  if (!Number.isSafeInteger(unixTimeMs) || unixTimeMs <= 0) invalid(`unix_time_ms must be a positive integer, not ${String(unixTimeMs)}`);
  if (unixTimeMs < MIN_UNIX_TIME_MS || unixTimeMs >= MAX_UNIX_TIME_MS) {
    invalid(`unix_time_ms ${unixTimeMs} is outside 2000-01-01..2200-01-01`);
  }
  return req;
}

/** What reidentify() did besides the entropy and the hostname. */
export interface ReidentifyResult {
  /** The clock was more than CLOCK_TOLERANCE_MS off and was stepped. */
  clockSet: boolean;
}

async function step<T>(what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw new QvmError("INTERNAL", `Reidentify: ${what} failed: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
}

/**
 * Validates `req`, then mixes in the entropy, sets the hostname and steps the clock if it is
 * off, in that order. A failed step is QvmError INTERNAL naming it; the steps after it are not run.
 */
export async function reidentify(req: agentV1.ReidentifyRequest, system: IdentitySystem): Promise<ReidentifyResult> {
  const { hostname, entropy, unixTimeMs } = validateReidentify(req);
  // The host's time was taken when it sent the request: it ages with the guest's clock from here.
  const received = system.now();
  await step("mixing entropy into the kernel's random pool", () => system.addEntropy(entropy));
  await step(`setting the hostname to "${hostname}"`, () => system.setHostname(hostname));
  if (Math.abs(received - unixTimeMs) <= CLOCK_TOLERANCE_MS) return { clockSet: false };
  const target = unixTimeMs + (system.now() - received);
  await step(`setting the clock to ${new Date(target).toISOString()}`, () => system.setClock(target));
  return { clockSet: true };
}

/** The Reidentify RPC over `system`: one request at a time, a later one after those before it. */
export function reidentifyRpcs(system: IdentitySystem): Pick<agentV1.GuestAgentServer, "reidentify"> {
  let queue: Promise<unknown> = Promise.resolve();
  return {
    reidentify(call, cb) {
      const run = queue.then(() => reidentify(call.request, system));
      queue = run.catch(() => {});
      run.then(
        () => cb(null, {}),
        (err: unknown) => cb(toGrpcError(err)),
      );
    },
  };
}
