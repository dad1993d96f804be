// The test factory for a domain as the CLI shows it (class and state in words), shared by the
// table tests and the fake qvmd, which sends it as the admin API's Domain message.
import type { DomainInWords } from "@qvm/protocol";

export function fakeDomain(name: string, extra: Partial<DomainInWords> = {}): DomainInWords {
  return {
    name,
    class: "AppVM",
    state: "Halted",
    label: "red",
    template: "debian-12",
    netvm: "",
    tags: [],
    createdAt: "2026-01-01T00:00:00Z",
    lastStopReason: "",
    vmmPid: 0,
    accel: "",
    isPreload: false,
    ...extra,
  };
}
