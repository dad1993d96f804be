// `qvm apply`'s two sides that touch qvmd: reading the current state through the admin API (and
// the policy directory), and carrying out a plan, one admin call (or one policy file) per action,
// in order, stopping at the first failure. Every action is complete in itself, so a stop leaves a
// consistent state: the actions before it done, none after.
import type { AdminClient } from "@qvm/protocol";
import { domainClassFromWord, domainClassWord } from "@qvm/protocol";
import { QvmError, isQvmError } from "@qvm/protocol/contracts";
import { DECLARED_MARKER_FEATURE, type DeclaredFile } from "@qvm/protocol/declared";
import { describeAction, planApply, type ApplyAction, type ApplyPlan, type CurrentDomain, type CurrentState } from "./plan.js";
import { PolicyDir, policyDirOf } from "./policy-dir.js";

/** The admin calls apply makes. */
export type ApplyAdmin = Pick<
  AdminClient,
  | "listDomains"
  | "listProperties"
  | "listFeatures"
  | "getFirewall"
  | "createDomain"
  | "setProperty"
  | "resetProperty"
  | "setFeature"
  | "removeFeature"
  | "addTag"
  | "removeTag"
  | "setFirewall"
  | "checkPolicy"
  | "getDaemonInfo"
>;

/**
 * What the plan needs: every domain's features (to find the marker), and for each declared or
 * marked one its properties, tags and firewall; the policy files only when the file declares some.
 */
export async function readState(admin: ApplyAdmin, file: DeclaredFile, policy: PolicyDir | undefined): Promise<CurrentState> {
  const declared = file.domains ?? {};
  const { domains } = await admin.listDomains({});
  const state: CurrentState = { domains: [], others: [] };
  for (const d of domains) {
    // Preloaded disposables come and go on their own; they are nobody's to declare.
    if (d.isPreload) continue;
    const { features } = await admin.listFeatures({ domain: d.name });
    if (!Object.hasOwn(declared, d.name) && features[DECLARED_MARKER_FEATURE] === undefined) {
      state.others.push(d.name);
      continue;
    }
    const [{ properties }, { rules }] = await Promise.all([admin.listProperties({ domain: d.name }), admin.getFirewall({ domain: d.name })]);
    const current: CurrentDomain = {
      name: d.name,
      class: domainClassWord(d.class),
      properties: Object.fromEntries(properties.map((p) => [p.name, { value: p.value, own: p.source === "own" }])),
      features,
      tags: d.tags,
      firewall: rules,
    };
    state.domains.push(current);
  }
  if (file.policy && policy) {
    const texts: Record<string, string> = {};
    for (const name of Object.keys(file.policy)) {
      const text = policy.read(name);
      if (text !== undefined) texts[name] = text;
    }
    state.policy = { names: policy.list(), texts };
  }
  return state;
}

export type ActionStatus = "planned" | "applied" | "failed" | "not-applied";

export interface ApplyOutcome {
  /** Each action with its status, in plan order. */
  actions: Array<{ action: ApplyAction; status: ActionStatus }>;
  /** The failure that stopped the run, if one did. */
  error?: QvmError;
  /** Problems that did not stop it (another policy file that qvmd cannot read). */
  warnings: string[];
}

/** A policy file applies once qvmd reads the policy without an error; any call asks it to. */
const POLICY_PROBE = { service: "qvm.ApplyCheck", argument: "", source: "dom0", target: "dom0" };

/**
 * Carries out the plan in order; `applied` hears of each action once done. Stops at the first
 * failure, which is returned (with the rest marked not applied), not thrown.
 */
export async function executePlan(plan: ApplyPlan, admin: ApplyAdmin, policy: PolicyDir | undefined, applied: (a: ApplyAction) => void = () => {}): Promise<ApplyOutcome> {
  const outcome: ApplyOutcome = { actions: plan.actions.map((action) => ({ action, status: "not-applied" as ActionStatus })), warnings: [] };
  for (const entry of outcome.actions) {
    try {
      const warning = await perform(entry.action, admin, policy);
      if (warning) outcome.warnings.push(warning);
    } catch (err) {
      entry.status = "failed";
      outcome.error = isQvmError(err) ? err : new QvmError("INTERNAL", (err as Error).message ?? String(err), { cause: err });
      break;
    }
    entry.status = "applied";
    applied(entry.action);
  }
  return outcome;
}

/** One action: one admin call, or one policy file written and read back by qvmd. Returns a warning, if any. */
async function perform(a: ApplyAction, admin: ApplyAdmin, policy: PolicyDir | undefined): Promise<string | undefined> {
  switch (a.kind) {
    case "create-domain":
      await admin.createDomain({ name: a.domain, class: domainClassFromWord(a.class), template: a.template, label: a.label, properties: a.properties });
      return undefined;
    case "set-property":
      await admin.setProperty({ domain: a.domain, name: a.name, value: a.value });
      return undefined;
    case "reset-property":
      await admin.resetProperty({ domain: a.domain, name: a.name });
      return undefined;
    case "set-feature":
      await admin.setFeature({ domain: a.domain, name: a.name, value: a.value });
      return undefined;
    case "remove-feature":
      await admin.removeFeature({ domain: a.domain, name: a.name });
      return undefined;
    case "add-tag":
      await admin.addTag({ domain: a.domain, tag: a.tag });
      return undefined;
    case "remove-tag":
      await admin.removeTag({ domain: a.domain, tag: a.tag });
      return undefined;
    case "set-firewall":
      await admin.setFirewall({ domain: a.domain, rules: a.rules });
      return undefined;
    case "write-policy":
      if (!policy) throw new QvmError("INTERNAL", "no policy directory to write to");
      return writePolicy(a.file, a.text, admin, policy);
  }
}

/**
 * Writes one policy file and has qvmd read the whole policy. When qvmd finds an error in this file
 * (or in one it includes), the file gets its previous text back and the action fails with qvmd's
 * error (file:line): a policy with an error refuses every qrexec call, so it must not stay. An error
 * in another file is not this file's doing: the write stands and the error is a warning.
 */
async function writePolicy(name: string, text: string, admin: ApplyAdmin, policy: PolicyDir): Promise<string | undefined> {
  const previous = policy.write(name, text);
  try {
    await admin.checkPolicy(POLICY_PROBE);
    return undefined;
  } catch (err) {
    if (!isQvmError(err, "POLICY_INVALID")) throw err;
    if (err.message.includes(policy.pathOf(name))) {
      policy.restore(name, previous);
      throw new QvmError("POLICY_INVALID", `qvmd refused the new ${name}: ${err.message}; ${previous === undefined ? "it was not created" : "it keeps its previous text"}`, { cause: err });
    }
    return `the qrexec policy has an error outside the files this apply writes, so qvmd refuses every qrexec call until it is fixed: ${err.message}`;
  }
}

/**
 * `qvm apply` without its words: reads the state (and, when the file declares policy, the policy
 * directory of qvmd's data directory), plans, and unless `dryRun` carries the plan out. Throws only
 * what stops it before the first change (an unreadable state, a plan that cannot be made); a
 * failed change is in the outcome.
 */
export async function applyDeclared(admin: ApplyAdmin, file: DeclaredFile, opts: { dryRun: boolean }, applied?: (a: ApplyAction) => void): Promise<{ plan: ApplyPlan; outcome: ApplyOutcome }> {
  const policy = file.policy ? new PolicyDir(policyDirOf((await admin.getDaemonInfo({})).dataDir)) : undefined;
  const plan = planApply(await readState(admin, file, policy), file);
  if (opts.dryRun) return { plan, outcome: { actions: plan.actions.map((action) => ({ action, status: "planned" })), warnings: [] } };
  return { plan, outcome: await executePlan(plan, admin, policy, applied) };
}

/** The lines `qvm apply` prints for an outcome's failure: what was not done. */
export function describeNotApplied(outcome: ApplyOutcome): string[] {
  return outcome.actions.filter((e) => e.status === "not-applied").map((e) => describeAction(e.action));
}
