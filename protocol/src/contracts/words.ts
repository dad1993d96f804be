// The words people read for the admin API's closed sets: Qubes' class names and power states,
// the policy's actions, the event names. The .proto carries them as enums; every client shows
// these words (`qvm ls`, `qvm ls --json`, `qvm policy check`, the web shell) and qvmd's own model
// uses them. protocol/src/admin-words.ts maps them to and from the enums.

export const DOMAIN_CLASSES = ["AppVM", "TemplateVM", "StandaloneVM", "DispVM"] as const;
export type DomainClassWord = (typeof DOMAIN_CLASSES)[number];

/** Qubes' power states; Transient is "starting". */
export const POWER_STATES = ["Halted", "Transient", "Running", "Paused", "Halting"] as const;
export type PowerStateWord = (typeof POWER_STATES)[number];

export const POLICY_ACTIONS = ["allow", "deny", "ask"] as const;
export type PolicyActionWord = (typeof POLICY_ACTIONS)[number];

export const EVENT_TYPES = [
  "domain-add",
  "domain-delete",
  "domain-pre-start",
  "domain-start",
  "domain-start-failed",
  "domain-paused",
  "domain-unpaused",
  "domain-pre-shutdown",
  "domain-shutdown",
  "property-set",
  "property-reset",
  "feature-set",
  "feature-delete",
  "tag-add",
  "tag-delete",
  "global-property-set",
  "volume-revert",
  "volume-resize",
  "volume-config",
  "qrexec-call",
  "firewall-changed",
  "device-assign",
  "device-unassign",
  "window-open",
  "window-close",
  // The global clipboard changed (copy, paste, set, take, cleared): fields action, source,
  // target, size; never its content.
  "clipboard",
  // A backend's USB device appeared or went away; one was attached to or detached from the
  // event's domain (fields: devclass "usb", device "sys-usb:2-1", …).
  "device-added",
  "device-removed",
  "device-attach",
  "device-detach",
] as const;
export type EventTypeWord = (typeof EVENT_TYPES)[number];

/** Shown for an enum value this client does not know (a newer or older qvmd): never guessed. */
export const UNKNOWN_WORD = "unknown";

/**
 * The VMM drivers qvm has, as the `vmm` property spells them (host-agent/src/vmm/drivers.ts).
 * Every one is accepted by `qvm prefs`; a domain whose VMM is missing on its host fails to start
 * with the install step.
 */
export const VMM_KINDS = ["qemu", "cloud-hypervisor"] as const;
export type VmmKindWord = (typeof VMM_KINDS)[number];
