// How a qrexec service is run in its target domain: through /usr/lib/qvm/qrexec-run in the
// template (guest-agent/rpc/qrexec-run), which looks the service up as Qubes' qrexec-agent does
// and exits 127 when there is none. The environment is what qvmd knows, never what the caller
// said about itself. The service-name rule is a contract shared with the CLI and the policy
// (@qvm/protocol/contracts), re-exported beside serviceCommand for admin/ and core/, which import
// both from here.
export { MAX_ARGUMENT_LENGTH, isValidServiceName, sanitizeArgument, splitServiceName } from "@qvm/protocol/contracts";

export const QREXEC_RUN = "/usr/lib/qvm/qrexec-run";
export const ADMIN_DOMAIN_NAME = "dom0";

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
