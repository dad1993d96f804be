// Domain names follow Qubes' rules (qubes/vm/__init__.py: validate_name). A name is used in
// paths, socket names, process titles, policy files and page titles, so every component checks
// it with this one rule: qvmd, the policy parser, the web shell and the in-domain tools.
import { QvmError } from "./errors.js";

export const MAX_NAME_LENGTH = 31;
/** Letters, digits, "_", "." and "-", a letter first, at most MAX_NAME_LENGTH characters. */
export const DOMAIN_NAME_PATTERN = /^[a-zA-Z][a-zA-Z0-9_.-]{0,30}$/;
/** Names Qubes reserves, plus the host's own. Compared case-insensitively. */
export const RESERVED_NAMES = ["dom0", "domain-0", "none", "default", "host"];

/** Whether `name` has a domain name's shape (reserved names aside: a policy may name dom0). */
export function isDomainNameShaped(name: unknown): name is string {
  return typeof name === "string" && DOMAIN_NAME_PATTERN.test(name);
}

/** `name` if a domain may have it; otherwise throws QvmError INVALID_ARGUMENT saying why. */
export function validateDomainName(name: unknown): string {
  if (typeof name !== "string" || name.length === 0) throw new QvmError("INVALID_ARGUMENT", "a domain name is required");
  if (name.length > MAX_NAME_LENGTH) {
    throw new QvmError("INVALID_ARGUMENT", `domain name "${name.slice(0, 40)}…" is longer than ${MAX_NAME_LENGTH} characters`);
  }
  if (!DOMAIN_NAME_PATTERN.test(name)) {
    throw new QvmError(
      "INVALID_ARGUMENT",
      `invalid domain name ${JSON.stringify(name)}: it must start with a letter and contain only letters, digits, "_", "." and "-"`,
    );
  }
  if (RESERVED_NAMES.includes(name.toLowerCase())) throw new QvmError("INVALID_ARGUMENT", `"${name}" is a reserved name`);
  if (name.endsWith("-dm")) throw new QvmError("INVALID_ARGUMENT", `invalid domain name "${name}": names must not end in "-dm"`);
  return name;
}
