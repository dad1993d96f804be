// SetNetwork: the host's whole network configuration for this domain, applied in order (one at
// a time; a newer one waits for the one being applied): the links, addresses, routes and
// firewall (net/apply.ts), then the services a net domain or a template runs
// (/usr/lib/qvm/qvm-net-services: the updates proxy, and the apt side of it in templates).
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import type { agentV1 } from "@qvm/protocol";
import { applyNetwork } from "./net/apply.js";
import { validateNetConfig, type GuestNetConfig } from "./net/config.js";

export const NET_SERVICES = "/usr/lib/qvm/qvm-net-services";

/** The generated message, as the net module's configuration (proto3 leaves absent parts undefined). */
export function toGuestNetConfig(req: agentV1.SetNetworkRequest): GuestNetConfig {
  const config: GuestNetConfig = {};
  if (req.client) config.client = { ...req.client, dns: [...req.client.dns] };
  if (req.netvm) {
    const n = req.netvm;
    config.netvm = {
      gateway: n.gateway,
      uplink: n.uplink ? { ...n.uplink, dns: [...n.uplink.dns] } : undefined,
      links: n.links.map((l) => ({ ...l, firewall: [...l.firewall] })),
      slotMacs: [...n.slotMacs],
    };
  }
  return config;
}

function netServices(args: string[]): Promise<string | undefined> {
  if (!existsSync(NET_SERVICES)) return Promise.resolve(`${NET_SERVICES} is missing`);
  return new Promise((resolve) =>
    execFile(NET_SERVICES, args, { timeout: 30_000 }, (err, _out, stderr) => resolve(err ? `${NET_SERVICES} ${args.join(" ")}: ${stderr.trim() || err.message}` : undefined)),
  );
}

let queue: Promise<unknown> = Promise.resolve();
/** What each service was last switched to, so an unchanged one costs no process (and no systemctl). */
const switched = new Map<string, boolean>();

/** Applies one configuration after those before it; resolves with the clients whose rules failed. */
export function setNetwork(req: agentV1.SetNetworkRequest, log: (m: string) => void): Promise<Record<string, string>> {
  const run = queue.then(async () => {
    const config = toGuestNetConfig(req);
    validateNetConfig(config);
    const result = await applyNetwork(config);
    // Both sides use port 8082: turn off before turning on, in case a domain changed roles.
    const services = [["updates-proxy", !!config.netvm], ["updates-client", req.updatesProxyClient]] as const;
    for (const [service, on] of [...services.filter(([, on]) => !on), ...services.filter(([, on]) => on)]) {
      if (switched.get(service) === on) continue;
      const err = await netServices([service, on ? "on" : "off"]);
      if (err) log(err);
      else switched.set(service, on);
    }
    return result.failures;
  });
  queue = run.catch(() => {});
  return run;
}
