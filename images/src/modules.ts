// Kernel module dependency order, from the modules.dep that depmod writes. Pure: unit tested.

/** Parses modules.dep ("path.ko: dep.ko dep2.ko") into a map keyed by module name. */
export function parseModulesDep(text: string): Map<string, { path: string; deps: string[] }> {
  const byName = new Map<string, { path: string; deps: string[] }>();
  for (const line of text.split("\n")) {
    const colon = line.indexOf(":");
    if (colon <= 0) continue;
    const modPath = line.slice(0, colon).trim();
    const deps = line.slice(colon + 1).trim().split(/\s+/).filter(Boolean);
    byName.set(moduleName(modPath), { path: modPath, deps });
  }
  return byName;
}

/** "kernel/fs/ext4/ext4.ko.xz" -> "ext4"; module names treat - and _ alike. */
export function moduleName(modPath: string): string {
  const base = modPath.slice(modPath.lastIndexOf("/") + 1);
  return base.replace(/\.ko(\.(xz|zst|gz))?$/, "").replaceAll("-", "_");
}

/**
 * Returns module paths so that each comes after everything it depends on. Names absent from
 * modules.dep are reported (built into the kernel, or a typo) rather than silently skipped.
 */
export function loadOrder(dep: Map<string, { path: string; deps: string[] }>, wanted: string[]): { order: string[]; missing: string[] } {
  const pathToName = new Map([...dep].map(([name, v]) => [v.path, name]));
  const order: string[] = [];
  const seen = new Set<string>();
  const missing: string[] = [];
  const visit = (name: string, stack: Set<string>) => {
    if (seen.has(name)) return;
    const entry = dep.get(name);
    if (!entry) {
      missing.push(name);
      return;
    }
    if (stack.has(name)) throw new Error(`module dependency loop at ${name}`);
    stack.add(name);
    for (const d of entry.deps) visit(pathToName.get(d) ?? moduleName(d), stack);
    stack.delete(name);
    seen.add(name);
    order.push(entry.path);
  };
  for (const w of wanted) visit(w.replaceAll("-", "_"), new Set());
  return { order, missing };
}
