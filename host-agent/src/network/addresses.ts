// The fixed numbers of qvm's network: link slots, their MACs, and the user-mode uplink's
// addresses. Domain addresses come from their identity (model/net-identity.ts).

/**
 * Client links a net domain can serve at once. Each is a virtio-net device made at boot (the
 * microvm machine cannot hot-add devices, docs/design.md "Network links"); together with the
 * disks and vsock they must fit microvm's 24 virtio-mmio transports.
 */
export const NET_SLOTS = 12;

/** Every domain's own link to its netvm (present even when it has none, so one can be set later). */
export const CLIENT_NIC = "eth0";
/** A net domain's uplink (through passt, or a tap device). */
export const UPLINK_NIC = "uplink";
export const slotNic = (slot: number) => `vif${slot}`;

/** The net domain's side of client link `slot`: locally administered, unicast, never a domain's. */
export function slotMac(slot: number): string {
  if (!Number.isInteger(slot) || slot < 0 || slot >= NET_SLOTS) throw new RangeError(`link slot ${slot} is out of range 0-${NET_SLOTS - 1}`);
  return `fe:ff:ff:ff:00:${slot.toString(16).padStart(2, "0")}`;
}

export const UPLINK_MAC = "fe:ff:ff:fe:00:01";

/**
 * What sys-net sees through passt: a private /24 with passt as gateway and DNS forwarder (passt
 * answers ARP for the gateway and forwards DNS sent to PASST_DNS to the host's resolvers).
 */
export const PASST_GUEST = { address: "10.0.2.15", prefix: 24, gateway: "10.0.2.2", dns: "10.0.2.3" } as const;
