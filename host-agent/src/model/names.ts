// Domain names follow Qubes' rules (qubes/vm/__init__.py: validate_name). A name is used in
// paths, socket names and process titles, so nothing outside these rules may pass.
import { QvmError } from "@qvm/protocol";

export const MAX_NAME_LENGTH = 31;
const NAME_RE = /^[a-zA-Z][a-zA-Z0-9_.-]*$/;
/** Names Qubes reserves, plus the host's own. Compared case-insensitively. */
export const RESERVED_NAMES = ["dom0", "domain-0", "none", "default", "host"];

export function validateDomainName(name: unknown): string {
  if (typeof name !== "string" || name.length === 0) throw new QvmError("INVALID_ARGUMENT", "a domain name is required");
  if (name.length > MAX_NAME_LENGTH) {
    throw new QvmError("INVALID_ARGUMENT", `domain name "${name.slice(0, 40)}…" is longer than ${MAX_NAME_LENGTH} characters`);
  }
  if (!NAME_RE.test(name)) {
    throw new QvmError(
      "INVALID_ARGUMENT",
      `invalid domain name ${JSON.stringify(name)}: it must start with a letter and contain only letters, digits, "_", "." and "-"`,
    );
  }
  if (RESERVED_NAMES.includes(name.toLowerCase())) throw new QvmError("INVALID_ARGUMENT", `"${name}" is a reserved name`);
  if (name.endsWith("-dm")) throw new QvmError("INVALID_ARGUMENT", `invalid domain name "${name}": names must not end in "-dm"`);
  return name;
}
