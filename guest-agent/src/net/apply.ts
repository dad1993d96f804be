// Applies a network configuration inside the domain: names the links, configures the domain's own
// link (to its netvm, or the uplink in sys-net), loads the ruleset, then connects the client
// links. Routed /32 point-to-point links, no bridge, no DHCP, as Qubes. Every step converges on
// the wanted state (replace, not add; stale addresses, routes and neighbours removed), so applying
// the same configuration twice changes nothing.
//
// Order matters for safety: client links come up and forwarding is switched on only after the
// ruleset that polices them is loaded; on the first apply of a boot, a ruleset in which every
// client is rejected is loaded before any link is touched (the real one needs DNS, which needs
// the domain's own link).
import { QvmError, type FirewallRule } from "@qvm/protocol/contracts";
import { parseClientRules } from "./client-chain.js";
import { runChecked, runCommand, type CommandRunner } from "./commands.js";
import { OWN_LINK, slotName, validateNetConfig, type ApplyResult, type ClientLink, type ClientNet, type GuestNetConfig, type UplinkNet } from "./config.js";
import { systemNetHost, type NetHost } from "./host.js";
import { planLinks } from "./links.js";
import { resolveHostNames, RESOLVE_TIMEOUT_MS } from "./resolve.js";
import { clientChains, renderFailClosed, renderRuleset } from "./ruleset.js";

export interface ApplyOptions {
  host?: NetHost;
  resolveTimeoutMs?: number;
}

// Qubes' interface groups: 1 = uplink, 2 = client links. The ruleset matches names (ruleset.ts);
// the groups are set for scripts written for Qubes.
const UPLINK_GROUP = "1";
const CLIENT_GROUP = "2";

let queue: Promise<unknown> = Promise.resolve();

/**
 * Applies `config`; one apply at a time (a second call waits for the first). Throws QvmError
 * INVALID_ARGUMENT for a malformed configuration, FAILED_PRECONDITION when the domain's own link is
 * missing, INTERNAL when a command fails (and, if no ruleset at all could be loaded, after taking
 * the client links down). Per-client problems do not throw: that client is failed closed and named
 * in the result.
 */
export function applyNetwork(config: GuestNetConfig, run: CommandRunner = runCommand, options: ApplyOptions = {}): Promise<ApplyResult> {
  const next = queue.then(() => applyNow(config, run, options.host ?? systemNetHost(), options.resolveTimeoutMs ?? RESOLVE_TIMEOUT_MS));
  queue = next.catch(() => {});
  return next;
}

async function applyNow(config: GuestNetConfig, run: CommandRunner, host: NetHost, resolveTimeoutMs: number): Promise<ApplyResult> {
  validateNetConfig(config);
  const netvm = config.netvm;
  const previous = await host.readState();
  const ip = (...args: string[]) => runChecked(run, "ip", args);

  // 1. Which link is which.
  const ownMac = (config.client?.mac ?? netvm?.uplink?.mac)?.toLowerCase();
  const wanted = new Map<string, string>();
  if (ownMac) wanted.set(ownMac, OWN_LINK);
  netvm?.slotMacs.forEach((m, i) => wanted.set(m.toLowerCase(), slotName(i)));
  const plan = planLinks(await host.listLinks(), wanted);
  if (ownMac && !plan.found.has(ownMac)) throw new QvmError("FAILED_PRECONDITION", `no network interface has MAC ${ownMac} (the domain's own link)`);

  if (!previous) await run("nft", ["-f", "-"], { input: renderFailClosed(config, "the rules are being applied") });
  for (const step of plan.steps) {
    await ip("link", "set", "dev", step.from, "down");
    await ip("link", "set", "dev", step.from, "name", step.to);
  }

  // 2. The domain's own link, so host names can be resolved through it.
  if (config.client) await configureClient(run, host, config.client);
  else if (netvm?.uplink) await configureUplink(run, host, netvm.uplink);

  // 3. Each client's rules, with their host names resolved.
  const failures: Record<string, string> = {};
  const rules = new Map<string, FirewallRule[]>();
  for (const link of netvm?.links ?? []) {
    if (!plan.found.has(link.slotMac.toLowerCase())) {
      failures[link.clientIp] = `no network interface has the client link's MAC ${link.slotMac}`;
      continue;
    }
    try {
      rules.set(link.clientIp, parseClientRules(link.firewall));
    } catch (err) {
      failures[link.clientIp] = err instanceof Error ? err.message : String(err);
    }
  }
  const { resolved, failures: unresolved } = await resolveHostNames(rules, (name) => host.resolve(name), resolveTimeoutMs);
  Object.assign(failures, unresolved);

  // 4. The ruleset, atomically; if nft refuses it, every client is rejected instead.
  const loaded = await run("nft", ["-f", "-"], { input: renderRuleset(config, resolved, failures) });
  if (loaded.code !== 0) {
    const why = `nft refused the ruleset: ${loaded.stderr.trim().split("\n")[0] || `exit code ${loaded.code}`}`;
    for (const link of netvm?.links ?? []) failures[link.clientIp] = why;
    const fallback = await run("nft", ["-f", "-"], { input: renderFailClosed(config, why) });
    if (fallback.code !== 0) {
      for (const name of plan.found.values()) if (name !== OWN_LINK) await run("ip", ["link", "set", "dev", name, "down"]);
      throw new QvmError("INTERNAL", `${why}; the fail-closed ruleset was refused too (${fallback.stderr.trim().split("\n")[0]}): client links are down`);
    }
  }

  // 5. Client links, then forwarding.
  if (netvm) {
    const bySlot = new Map(netvm.links.map((l) => [l.slotMac.toLowerCase(), l]));
    const present = [...netvm.slotMacs.entries()].filter(([, mac]) => plan.found.has(mac.toLowerCase()));
    await releaseSlots(run, present.filter(([, mac]) => !bySlot.has(mac.toLowerCase())).map(([i]) => slotName(i)));
    for (const [i, mac] of present) {
      const link = bySlot.get(mac.toLowerCase());
      if (link) await connectSlot(run, slotName(i), netvm.gateway, link);
    }
  }
  await host.setSysctl("net.ipv4.ip_forward", netvm ? "1" : "0");

  // 6. Flows a changed ruleset no longer covers.
  const applied = fingerprints(config, resolved, failures);
  await forgetFlows(run, previous?.clients, applied);
  await host.writeState({ clients: applied });
  return { failures };
}

/** What a client's traffic is checked against: its slot, its MAC and its chain. */
function fingerprints(config: GuestNetConfig, resolved: Map<string, Map<string, string[]>>, failures: Record<string, string>): Record<string, string> {
  const chains = clientChains(config, resolved, failures);
  const out: Record<string, string> = {};
  for (const link of config.netvm?.links ?? []) {
    const chain = chains.get(link.clientIp);
    if (chain) out[link.clientIp] = [link.slotMac.toLowerCase(), link.clientMac.toLowerCase(), ...chain].join("\n");
  }
  return out;
}

/**
 * Deletes the tracked connections of every client whose rules changed (or that is gone), so an
 * established flow the new rules forbid does not live on through "ct state established". Qubes
 * deletes only the flows the new rules would block; deleting all of that client's flows is simpler
 * and errs on the safe side (its open connections must start again). Without conntrack installed
 * this does nothing.
 */
async function forgetFlows(run: CommandRunner, before: Record<string, string> | undefined, now: Record<string, string>): Promise<void> {
  const changed = new Set(Object.keys(now).filter((ip) => before?.[ip] !== now[ip]));
  for (const ip of Object.keys(before ?? {})) if (!Object.hasOwn(now, ip)) changed.add(ip);
  for (const ip of changed) {
    // Exit 1 just means no flow matched.
    const r = await run("conntrack", ["-D", "-s", ip]);
    if (r.code === 127) return;
  }
}

async function configureClient(run: CommandRunner, host: NetHost, c: ClientNet): Promise<void> {
  const ip = (...args: string[]) => runChecked(run, "ip", args);
  await pruneAddresses(run, OWN_LINK, `${c.ip}/32`);
  await ip("addr", "replace", `${c.ip}/32`, "dev", OWN_LINK);
  await ip("link", "set", "dev", OWN_LINK, "group", UPLINK_GROUP, "up");
  // The gateway's MAC is known: no ARP on the link, and no answer from anything else counts.
  await ip("neigh", "replace", c.gateway, "dev", OWN_LINK, "lladdr", c.gatewayMac.toLowerCase(), "nud", "permanent");
  await ip("route", "replace", c.gateway, "dev", OWN_LINK, "scope", "link");
  await ip("route", "replace", "default", "via", c.gateway, "dev", OWN_LINK, "onlink");
  await host.writeResolvConf(resolvConf(c.dns));
}

async function configureUplink(run: CommandRunner, host: NetHost, u: UplinkNet): Promise<void> {
  const ip = (...args: string[]) => runChecked(run, "ip", args);
  await pruneAddresses(run, OWN_LINK, `${u.address}/${u.prefix}`);
  await ip("addr", "replace", `${u.address}/${u.prefix}`, "dev", OWN_LINK);
  await ip("link", "set", "dev", OWN_LINK, "group", UPLINK_GROUP, "up");
  await ip("route", "replace", "default", "via", u.gateway, "dev", OWN_LINK, "onlink");
  await host.writeResolvConf(resolvConf(u.dns));
}

async function connectSlot(run: CommandRunner, name: string, gateway: string, link: ClientLink): Promise<void> {
  const ip = (...args: string[]) => runChecked(run, "ip", args);
  await ip("link", "set", "dev", name, "group", CLIENT_GROUP);
  await pruneAddresses(run, name, `${gateway}/32`);
  await pruneRoutes(run, name, link.clientIp);
  await pruneNeighbours(run, name, link.clientIp);
  await ip("addr", "replace", `${gateway}/32`, "dev", name);
  await ip("neigh", "replace", link.clientIp, "dev", name, "lladdr", link.clientMac.toLowerCase(), "nud", "permanent");
  await ip("link", "set", "dev", name, "up");
  await ip("route", "replace", link.clientIp, "dev", name, "scope", "link");
}

/**
 * Slots without a client: each down first, so nothing passes while it is emptied. One `ip -batch`
 * for all of them: under emulation every process start costs tens of milliseconds, and a net
 * domain has a dozen slots.
 */
async function releaseSlots(run: CommandRunner, names: readonly string[]): Promise<void> {
  if (!names.length) return;
  const lines = names.flatMap((name) => [`link set dev ${name} down`, `addr flush dev ${name}`, `route flush dev ${name}`, `neigh flush dev ${name} nud all`]);
  // -force: one slot already empty must not stop the rest; what failed is in stderr, not fatal.
  await run("ip", ["-force", "-batch", "-"], { input: `${lines.join("\n")}\n` });
}

function resolvConf(dns: readonly string[]): string {
  return ["# written by the qvm guest agent", ...dns.map((d) => `nameserver ${d}`), ""].join("\n");
}

/** `ip -j` output as a list of objects; anything else as an empty list (then nothing is pruned). */
async function ipJson(run: CommandRunner, args: string[]): Promise<Record<string, unknown>[]> {
  const out = await runChecked(run, "ip", ["-j", "-4", ...args]);
  try {
    const parsed = JSON.parse(out || "[]") as unknown;
    return Array.isArray(parsed) ? parsed.filter((e): e is Record<string, unknown> => typeof e === "object" && e !== null) : [];
  } catch {
    return [];
  }
}

async function pruneAddresses(run: CommandRunner, dev: string, keep: string): Promise<void> {
  for (const entry of await ipJson(run, ["addr", "show", "dev", dev])) {
    const infos = Array.isArray(entry.addr_info) ? (entry.addr_info as Record<string, unknown>[]) : [];
    for (const a of infos) {
      const cidr = `${String(a.local)}/${String(a.prefixlen)}`;
      if (a.family === "inet" && cidr !== keep) await runChecked(run, "ip", ["addr", "del", cidr, "dev", dev]);
    }
  }
}

async function pruneRoutes(run: CommandRunner, dev: string, keep: string): Promise<void> {
  for (const r of await ipJson(run, ["route", "show", "dev", dev])) {
    if (typeof r.dst === "string" && r.dst !== keep) await runChecked(run, "ip", ["route", "del", r.dst, "dev", dev]);
  }
}

async function pruneNeighbours(run: CommandRunner, dev: string, keep: string): Promise<void> {
  for (const n of await ipJson(run, ["neigh", "show", "dev", dev])) {
    if (typeof n.dst === "string" && n.dst !== keep) await runChecked(run, "ip", ["neigh", "del", n.dst, "dev", dev]);
  }
}
