// The network part of a domain's boot plan: every domain has its own link (eth0), connected
// or not, so that its netvm can be set or changed while it runs; a net domain also has
// NET_SLOTS client links, and sys-net its uplink (passt, or a tap device).
import { chownSync } from "node:fs";
import { QvmError } from "@qvm/protocol";
import type { DomainRecord } from "../model/domain.js";
import type { LinkPlanner } from "../domain/boot-plan.js";
import type { DomainPaths } from "../domain/paths.js";
import type { DomainRegistry } from "../domain/registry.js";
import type { NicSpec, VmmUser } from "../vmm/driver.js";
import { CLIENT_NIC, NET_SLOTS, UPLINK_MAC, UPLINK_NIC, slotMac, slotNic } from "./addresses.js";
import { netDirOf, nicEnds, type LinkFiles } from "./link-files.js";
import { passtSocketOf, startPasst } from "./passt.js";
import { tapDeviceOf, tapUplink } from "./tap-uplink.js";

export interface NetLinkPlannerDeps {
  registry: DomainRegistry;
  paths: DomainPaths;
  files: LinkFiles;
}

export class NetLinkPlanner implements LinkPlanner {
  constructor(private readonly deps: NetLinkPlannerDeps) {}

  plan(rec: DomainRecord, runtimeDir: string, user: VmmUser | undefined): { nics: NicSpec[]; beforeVmm: () => Promise<() => void> } {
    const { registry, files, paths } = this.deps;
    const dgram = (nic: string, mac: string): NicSpec => ({ id: nic, mac, backend: { kind: "dgram-unix", ...nicEnds(runtimeDir, nic) } });
    const nics = [dgram(CLIENT_NIC, String(registry.resolve(rec, "mac")))];
    const uplink = String(registry.resolve(rec, "uplink"));
    const netvm = String(registry.resolve(rec, "netvm"));
    if (uplink && netvm) {
      throw new QvmError("FAILED_PRECONDITION", `${rec.name} has both a netvm (${netvm}) and an uplink (${uplink}); a net domain goes out one way: \`qvm prefs ${rec.name} netvm ""\` or \`qvm prefs --reset ${rec.name} uplink\``);
    }
    const tap = tapDeviceOf(uplink);
    // A tap uplink's addressing is in the domain's features: a missing or bad one refuses the start.
    if (tap) tapUplink(rec.name, registry.features(rec.name));
    if (registry.resolve(rec, "provides_network") === true) {
      for (let s = 0; s < NET_SLOTS; s++) nics.push(dgram(slotNic(s), slotMac(s)));
    }
    if (uplink === "passt") nics.push({ id: UPLINK_NIC, mac: UPLINK_MAC, backend: { kind: "stream-unix", path: passtSocketOf(runtimeDir) } });
    // The VMM gets the tap as a descriptor, opened outside its jail (the driver's qvm-tap-open).
    if (tap) nics.push({ id: UPLINK_NIC, mac: UPLINK_MAC, backend: { kind: "tap", ifname: tap } });
    return {
      nics,
      beforeVmm: async () => {
        files.prepare(runtimeDir);
        // passt binds its socket as the domain's VMM user, before the VMM's jail is made.
        if (user) chownSync(netDirOf(runtimeDir), user.uid, user.gid);
        return uplink === "passt" ? startPasst(rec.name, runtimeDir, paths.logDirOf(rec.name), user) : () => {};
      },
    };
  }
}
