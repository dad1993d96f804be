// qrexec service names and their arguments, as Qubes writes them: "SERVICE" or "SERVICE+ARG".
// One rule for every place that reads one: the router (a domain's call), the policy parser, the
// admin API's Exec and CheckPolicy, and `qvm run --service` / `qvm policy check` on the command
// line, so a name one of them accepts is never refused by another.

export const MAX_SERVICE_NAME_LENGTH = 64;
/** Qubes keeps service arguments short; a longer one is garbled or hostile. */
export const MAX_ARGUMENT_LENGTH = 128;
/** Letters, digits, "_", "." and "-". */
export const SERVICE_NAME_PATTERN = /^[A-Za-z0-9_.-]{1,64}$/;
/** What an argument may hold after sanitizing; "+" is allowed inside it. */
export const ARGUMENT_PATTERN = /^[A-Za-z0-9_.+-]*$/;

export function isValidServiceName(s: string): boolean {
  return SERVICE_NAME_PATTERN.test(s);
}

/** Splits "SERVICE+ARG" as Qubes does (at the first "+"); no "+" means no argument. */
export function splitServiceName(full: string): { service: string; argument: string } {
  const plus = full.indexOf("+");
  return plus < 0 ? { service: full, argument: "" } : { service: full.slice(0, plus), argument: full.slice(plus + 1) };
}

/** As Qubes' qrexec-daemon does: every character outside [A-Za-z0-9_.+-] becomes "_". */
export function sanitizeArgument(arg: string): string {
  return arg.replace(/[^A-Za-z0-9_.+-]/g, "_");
}

/** Whether "SERVICE[+ARG]" is a call a person may write: a valid name and an argument that needs no sanitizing. */
export function isValidServiceCall(full: string): boolean {
  const { service, argument } = splitServiceName(full);
  return isValidServiceName(service) && argument.length <= MAX_ARGUMENT_LENGTH && ARGUMENT_PATTERN.test(argument);
}
