// Interfaces are found by MAC and renamed to the names the ruleset uses (eth0, vif0, vif1, …),
// whatever order the kernel found them in. Names can be taken by each other (the client link came
// up as eth1 while a slot is eth0), so a link whose name is wanted elsewhere moves through a
// temporary name first; a link we do not manage that holds a wanted name is moved aside.
import { QvmError } from "@qvm/protocol/contracts";
import type { LinkInfo } from "./host.js";

export interface RenameStep {
  from: string;
  to: string;
}

export interface LinkPlan {
  /** Renames in order; each needs the link down. */
  steps: RenameStep[];
  /** MAC → the name it will have: only MACs that were found. */
  found: Map<string, string>;
}

/** `wanted`: lowercase MAC → name. Pure: plans, runs nothing. */
export function planLinks(links: readonly LinkInfo[], wanted: ReadonlyMap<string, string>): LinkPlan {
  const found = new Map<string, string>();
  const current = new Map<string, string>(); // mac → name now
  for (const link of links) {
    if (!wanted.has(link.mac)) continue;
    if (current.has(link.mac)) {
      throw new QvmError("FAILED_PRECONDITION", `two network interfaces (${current.get(link.mac)}, ${link.name}) have MAC ${link.mac}`);
    }
    current.set(link.mac, link.name);
    found.set(link.mac, wanted.get(link.mac) ?? link.name);
  }
  const moves = [...current].flatMap(([mac, name]) => {
    const to = wanted.get(mac);
    return to === undefined || to === name ? [] : [{ from: name, to }];
  });
  if (moves.length === 0) return { steps: [], found };

  const taken = new Set(links.map((l) => l.name));
  const spare = (prefix: string) => {
    for (let i = 0; ; i++) {
      const name = `${prefix}${i}`;
      if (!taken.has(name)) {
        taken.add(name);
        return name;
      }
    }
  };
  const targets = new Set(moves.map((m) => m.to));
  const steps: RenameStep[] = [];
  // Unmanaged links sitting on a wanted name step aside.
  for (const link of links) {
    if (!wanted.has(link.mac) && targets.has(link.name)) steps.push({ from: link.name, to: spare("qvmu") });
  }
  // A wanted name some managed link still holds is free only once that link has moved.
  const heldByManaged = new Set(current.values());
  const later: RenameStep[] = [];
  for (const m of moves) {
    if (!heldByManaged.has(m.to)) {
      steps.push(m);
      continue;
    }
    const tmp = spare("qvmtmp");
    steps.push({ from: m.from, to: tmp });
    later.push({ from: tmp, to: m.to });
  }
  return { steps: [...steps, ...later], found };
}
