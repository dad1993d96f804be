// The network of running domains: it wires each domain's link to its netvm, re-wires clients
// when their netvm comes back or changes, cuts links when a domain stops, and tells every
// domain's agent its configuration (addresses, routes, DNS, and in a net domain its clients'
// firewall rules) whenever that changes. One reconcile does it all, serialized: it compares what
// the properties ask for with what the link files show, fixes the difference, and pushes the
// configurations that changed. It runs at every start, stop, unpause, netvm or firewall change.
import type { agentV1 } from "@qvm/protocol";
import { formatRuleApi } from "@qvm/protocol/contracts";
import type { Disposable } from "../base/disposables.js";
import type { EventBus } from "../base/events.js";
import type { Attacher } from "../domain/attachments.js";
import type { DomainPaths } from "../domain/paths.js";
import type { DomainRegistry } from "../domain/registry.js";
import type { DomainRunner } from "../domain/runner.js";
import { domainIp } from "../model/net-identity.js";
import { guestNetworkConfig, type LiveLink, type NetDomain, type Uplink } from "./guest-config.js";
import type { LinkFiles } from "./link-files.js";
import { passtUplink } from "./passt.js";
import { tapDeviceOf, tapUplink } from "./tap-uplink.js";

export interface NetworkServiceDeps {
  registry: DomainRegistry;
  runner: Pick<DomainRunner, "runningNames" | "state" | "running">;
  paths: DomainPaths;
  files: LinkFiles;
  events: EventBus;
  log: (msg: string) => void;
}

/** Properties whose change can move a link or change what a domain is told. */
const NETWORK_PROPERTIES = new Set(["netvm", "provides_network", "mac", "uplink"]);

export class NetworkService {
  private serial: Promise<void> = Promise.resolve();
  /** What each domain was last told, to push only changes; forgotten when it stops. */
  private readonly told = new Map<string, string>();
  private unsubscribe?: () => void;

  constructor(private readonly deps: NetworkServiceDeps) {}

  /** Reacts to the events that change the network. */
  listen(): void {
    this.unsubscribe = this.deps.events.subscribe((ev) => {
      const prop = ev.fields.name ?? "";
      const relevant =
        ev.type === "firewall-changed" ||
        ev.type === "domain-unpaused" ||
        ((ev.type === "property-set" || ev.type === "property-reset") && NETWORK_PROPERTIES.has(prop)) ||
        // A tap uplink's addressing (tap-uplink.ts) applies at once to a running net domain.
        ((ev.type === "feature-set" || ev.type === "feature-delete") && prop.startsWith("net.uplink-")) ||
        (ev.type === "global-property-set" && prop === "default_netvm");
      // A reload asks the netvm to resolve host names again: tell it even if nothing changed.
      if (ev.type === "firewall-changed" && ev.fields.reason === "reload") this.told.clear();
      if (relevant) void this.reconcile(`${ev.type} ${ev.domain} ${prop}`.trim());
    });
  }

  close(): void {
    this.unsubscribe?.();
  }

  /** Every domain gets its links wired at start (and re-attach) and cut when its VM is gone. */
  attacher(): Attacher {
    return {
      name: "network links",
      holder: "vmm",
      attach: async (ctx): Promise<Disposable> => {
        this.deps.files.openSockets(this.deps.paths.runtimeDirOf(ctx.name));
        this.told.delete(ctx.name);
        // After a qvmd restart the links are as the VMMs held them: one reconcile once every
        // domain is back (afterReattach), not one per domain while its netvm may not be yet.
        if (!ctx.reattached) await this.reconcile(`${ctx.name} started`, ctx.name);
        return {
          dispose: () => {
            this.told.delete(ctx.name);
            void this.reconcile(`${ctx.name} stopped`, undefined, ctx.name);
          },
        };
      },
    };
  }

  /** qvmd has taken back every running domain: check the links and tell each agent. */
  afterReattach(): Promise<void> {
    return this.reconcile("qvmd started");
  }

  /** Waits for the reconciles queued so far (tests, and callers that need the result). */
  settled(): Promise<void> {
    return this.serial;
  }

  /**
   * Brings links and configurations in line with the properties. `starting` is a domain whose
   * VM just came up (it counts as running though the runner may not list it yet); `gone` one
   * whose VM has just exited.
   */
  reconcile(why: string, starting?: string, gone?: string): Promise<void> {
    const run = this.serial.then(() => this.reconcileNow(starting, gone)).catch((err: Error) => this.deps.log(`network: ${why}: ${err.message}`));
    this.serial = run;
    return run;
  }

  private async reconcileNow(starting?: string, gone?: string): Promise<void> {
    const { registry, runner, paths, files, log } = this.deps;
    const names = new Set(runner.runningNames());
    if (starting) names.add(starting);
    if (gone) names.delete(gone);
    const dir = (n: string) => paths.runtimeDirOf(n);
    const up = [...names].filter((n) => registry.store.get(n));
    const active = (n: string) => n === starting || runner.state(n) === "Running";
    const netvms = up.filter((n) => registry.resolve(registry.get(n), "provides_network") === true);

    // 1. Links that should not be: slots held by no running client, or by a client (not paused)
    //    that now wants another netvm. A paused client keeps its link until it is unpaused.
    const clientInode = new Map<number, string>();
    for (const n of up) {
      const ino = files.clientSocketInode(dir(n));
      if (ino !== undefined) clientInode.set(ino, n);
    }
    for (const nv of netvms) {
      const keep = new Set<number>();
      for (const [ino, client] of clientInode) {
        const wants = String(registry.resolve(registry.get(client), "netvm"));
        if (wants === nv || !active(client)) keep.add(ino);
      }
      const pruned = files.pruneSlots(dir(nv), keep);
      if (pruned.length) log(`network: ${nv}: freed link slots ${pruned.join(", ")}`);
    }

    // 2. Links that should be: every active domain to its netvm when that runs.
    for (const n of up) {
      if (!active(n)) continue;
      const wants = String(registry.resolve(registry.get(n), "netvm"));
      const current = netvms.find((nv) => files.slotOf(dir(n), dir(nv)) !== undefined);
      if (wants && netvms.includes(wants)) {
        if (current !== wants) {
          const slot = files.connect(dir(n), dir(wants), wants);
          log(`network: ${n} linked to ${wants} (slot ${slot})`);
        }
      } else if (current || files.clientSocketInode(dir(n)) !== undefined) {
        files.disconnect(dir(n), current ? dir(current) : undefined);
      }
    }

    // 3. Tell each active domain what changed for it.
    const links: LiveLink[] = [];
    for (const n of up) {
      for (const nv of netvms) {
        const slot = files.slotOf(dir(n), dir(nv));
        if (slot !== undefined) links.push({ client: n, netvm: nv, slot });
      }
    }
    const views = new Map<string, NetDomain>(up.map((n) => [n, this.view(n)]));
    await Promise.all(
      up.filter(active).map(async (n) => {
        const config = guestNetworkConfig(views.get(n)!, views, links, (d) => this.uplinkOf(d));
        await this.tell(n, config);
      }),
    );
  }

  /**
   * What a net domain's uplink looks like from inside it: passt's fixed addresses, or a tap's
   * from its features (checked at start; bad ones set since then fail this reconcile for it, and
   * it keeps what it was last told).
   */
  private uplinkOf(d: NetDomain): Uplink | undefined {
    if (d.uplink === "passt") return passtUplink();
    return tapDeviceOf(d.uplink) !== undefined ? tapUplink(d.name, this.deps.registry.features(d.name)) : undefined;
  }

  private view(name: string): NetDomain {
    const { registry } = this.deps;
    const rec = registry.get(name);
    return {
      name,
      ip: domainIp(rec),
      mac: String(registry.resolve(rec, "mac")),
      providesNetwork: registry.resolve(rec, "provides_network") === true,
      uplink: String(registry.resolve(rec, "uplink")),
      isTemplate: rec.class === "TemplateVM",
      firewall: registry.firewall(name).map(formatRuleApi),
    };
  }

  private async tell(name: string, config: agentV1.SetNetworkRequest): Promise<void> {
    const key = JSON.stringify(config);
    if (this.told.get(name) === key) return;
    try {
      const reply = await this.deps.runner.running(name).agent.setNetwork(config);
      this.told.set(name, key);
      for (const [ip, why] of Object.entries(reply.failures)) {
        this.deps.log(`network: ${name}: the firewall of the client at ${ip} could not be applied, so its traffic is dropped: ${why}`);
      }
    } catch (err) {
      this.told.delete(name);
      this.deps.log(`network: cannot configure ${name}'s network: ${(err as Error).message}`);
    }
  }
}
