// Host names in firewall rules are resolved by the netvm when the rules are applied, not per
// connection (as Qubes). A name that does not resolve, or resolves to no IPv4 address, fails its
// client closed: Qubes makes that client's whole ruleset drop-all.
import { isIPv4Address, type FirewallRule } from "@qvm/protocol/contracts";
import { hostNamesOf } from "./client-chain.js";

/** How long one host name may take (Qubes has no bound; a stuck resolver must not stall every client). */
export const RESOLVE_TIMEOUT_MS = 5000;

export interface Resolution {
  /** client ip → host name → IPv4 addresses, for clients whose names all resolved. */
  resolved: Map<string, Map<string, string[]>>;
  /** client ip → which name failed and why. */
  failures: Record<string, string>;
}

type Outcome = { addresses: string[] } | { error: string };

/** Rejects after `ms` unless `promise` settles first. */
export function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms / 1000} s`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Resolves every client's host names, each name once, all at the same time. */
export async function resolveHostNames(
  rulesByClient: ReadonlyMap<string, readonly FirewallRule[]>,
  resolve: (hostName: string) => Promise<string[]>,
  timeoutMs = RESOLVE_TIMEOUT_MS,
): Promise<Resolution> {
  const lookups = new Map<string, Promise<Outcome>>();
  const lookUp = (name: string): Promise<Outcome> => {
    let pending = lookups.get(name);
    if (!pending) {
      pending = withTimeout(Promise.resolve().then(() => resolve(name)), timeoutMs, `resolving ${name}`).then(
        (found): Outcome => {
          const addresses = [...new Set(found.filter((a) => isIPv4Address(a)))].sort();
          return addresses.length ? { addresses } : { error: "no IPv4 address" };
        },
        (err: unknown): Outcome => ({ error: err instanceof Error ? err.message : String(err) }),
      );
      lookups.set(name, pending);
    }
    return pending;
  };
  const result: Resolution = { resolved: new Map(), failures: {} };
  await Promise.all(
    [...rulesByClient].map(async ([ip, rules]) => {
      const hosts = new Map<string, string[]>();
      const names = hostNamesOf(rules);
      const outcomes = await Promise.all(names.map(lookUp));
      for (const [i, name] of names.entries()) {
        const outcome = outcomes[i] ?? { error: "not looked up" };
        if ("error" in outcome) {
          result.failures[ip] = `dsthost ${name} did not resolve: ${outcome.error}`;
          return;
        }
        hosts.set(name, outcome.addresses);
      }
      result.resolved.set(ip, hosts);
    }),
  );
  return result;
}
