// `qvm apply FILE` (docs/cli.md, "qvm apply"): load a declared-domains file with positions, read
// the current state, plan the actions, carry them out. The command (commands/apply.ts) imports
// this lazily: the YAML parser and the schema's zod load only when it runs.
export { MAX_DECLARED_FILE_BYTES, formatPath, parseDeclaredFile } from "./load.js";
export {
  declaredFirewall,
  declaredProperties,
  describeAction,
  describeLeftAlone,
  formatRecord,
  parseRecord,
  planApply,
  type ApplyAction,
  type ApplyPlan,
  type ApplyRecord,
  type CurrentDomain,
  type CurrentState,
} from "./plan.js";
export { applyDeclared, describeNotApplied, executePlan, readState, type ActionStatus, type ApplyAdmin, type ApplyOutcome } from "./engine.js";
export { PolicyDir, policyDirOf } from "./policy-dir.js";
