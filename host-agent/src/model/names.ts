// Domain names: Qubes' rule, defined once for every component in @qvm/protocol/contracts
// (contracts/names.ts, with its tests). The model's modules and those built on it take it from here.
export { MAX_NAME_LENGTH, RESERVED_NAMES, validateDomainName } from "@qvm/protocol/contracts";
