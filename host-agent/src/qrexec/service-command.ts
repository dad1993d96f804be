// How a qrexec service is run in its target domain: through /usr/lib/qvm/qrexec-run in the
// template (images/guest/qrexec-run), which looks the service up as Qubes' qrexec-agent does and
// exits 127 when there is none. The environment is what qvmd knows, never what the caller said
// about itself.
export const QREXEC_RUN = "/usr/lib/qvm/qrexec-run";
export const ADMIN_DOMAIN_NAME = "dom0";

const SERVICE_RE = /^[A-Za-z0-9_.-]{1,64}$/;
/** Qubes keeps service names and arguments short; longer is garbled. */
export const MAX_ARGUMENT_LENGTH = 128;

export function isValidServiceName(s: string): boolean {
  return SERVICE_RE.test(s);
}

/** As Qubes' qrexec-daemon does: every character outside [A-Za-z0-9_.+-] becomes "_". */
export function sanitizeArgument(arg: string): string {
  return arg.replace(/[^A-Za-z0-9_.+-]/g, "_");
}

/** Splits "SERVICE+ARG" as Qubes does (at the first "+"). */
export function splitServiceName(full: string): { service: string; argument: string } {
  const plus = full.indexOf("+");
  return plus < 0 ? { service: full, argument: "" } : { service: full.slice(0, plus), argument: full.slice(plus + 1) };
}

export interface ServiceInvocation {
  service: string;
  argument: string;
  /** Who calls, as qvmd knows it. */
  source: string;
  /** What the caller asked for ("@default", a name, "@dispvm…"). */
  requestedTarget: string;
}

export function serviceCommand(inv: ServiceInvocation): { argv: string[]; env: Record<string, string> } {
  const env: Record<string, string> = {
    QREXEC_REMOTE_DOMAIN: inv.source,
    QREXEC_SERVICE_FULL_NAME: inv.argument ? `${inv.service}+${inv.argument}` : inv.service,
  };
  if (inv.argument) env.QREXEC_SERVICE_ARGUMENT = inv.argument;
  // As Qubes: a name is passed as the name; a keyword (@default, @dispvm…) separately.
  if (inv.requestedTarget.startsWith("@")) {
    env.QREXEC_REQUESTED_TARGET_TYPE = "keyword";
    env.QREXEC_REQUESTED_TARGET_KEYWORD = inv.requestedTarget.slice(1);
  } else {
    env.QREXEC_REQUESTED_TARGET_TYPE = "name";
    env.QREXEC_REQUESTED_TARGET = inv.requestedTarget;
  }
  return { argv: [QREXEC_RUN, inv.service, inv.argument], env };
}
