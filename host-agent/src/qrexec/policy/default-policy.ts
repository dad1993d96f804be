// The policy qvm ships, after Qubes' 90-default.policy (qubes-core-admin: qubes-rpc-policy/) for
// the standard services. qvmd rewrites 90-default.policy at every start, the way a package
// upgrade would, and creates 30-user.policy once for the administrator's own rules.
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { writeFileAtomic } from "@qvm/images";

export const DEFAULT_POLICY_FILE = "90-default.policy";
export const USER_POLICY_FILE = "30-user.policy";

export const DEFAULT_POLICY = `## qvm's default qrexec policy (after Qubes' 90-default.policy).
## Do not edit: qvmd rewrites this file at every start. Put your rules in ${USER_POLICY_FILE},
## which is read first: files are read in name order and the first matching rule wins.
##
## SERVICE          ARG  SOURCE          TARGET     ACTION  [PARAMS]

qubes.Filecopy      *    @anyvm          @anyvm     ask

qubes.OpenInVM      *    @anyvm          @dispvm    allow
qubes.OpenInVM      *    @anyvm          @anyvm     ask
qubes.OpenURL       *    @anyvm          @dispvm    allow
qubes.OpenURL       *    @anyvm          @anyvm     ask
qubes.StartApp      *    @anyvm          @dispvm    allow
qubes.StartApp      *    @anyvm          @anyvm     ask

qubes.VMShell       *    @anyvm          @dispvm    allow
qubes.VMShell       *    @anyvm          @anyvm     deny
qubes.VMExec        *    @anyvm          @dispvm    allow
qubes.VMExec        *    @anyvm          @anyvm     deny
qubes.VMExecGUI     *    @anyvm          @dispvm    allow
qubes.VMExecGUI     *    @anyvm          @anyvm     deny
qubes.VMRootShell   *    @anyvm          @anyvm     deny

qubes.GetDate       *    @tag:anon-vm    @adminvm   deny
qubes.GetDate       *    @tag:anon-vm    @default   deny
qubes.GetDate       *    @anyvm          @adminvm   allow
qubes.GetDate       *    @anyvm          @default   allow   target=@adminvm
qubes.GetDate       *    @anyvm          @anyvm     deny

qubes.ClipboardPaste *   @adminvm        @anyvm     ask
qubes.ClipboardPaste *   @anyvm          @anyvm     ask
qubes.ConnectTCP    *    @anyvm          @anyvm     deny
qubes.UpdatesProxy  *    @type:TemplateVM @default  allow   target=sys-net
qubes.UpdatesProxy  *    @anyvm          @anyvm     deny

## USB (docs/usb.md): a device travels in a qubes.USB call qvmd arranges for one attach, allowed
## by a one-shot grant, never by this file; a domain asking for one by itself is refused. Input
## devices are attached only where these allow (ask: the attach command is the answer).
qubes.USB           *    @anyvm          @anyvm     deny
qubes.InputKeyboard *    @anyvm          @anyvm     deny
qubes.InputMouse    *    @anyvm          @anyvm     ask
qubes.InputTablet   *    @anyvm          @anyvm     deny
`;

const USER_POLICY = `## Your qrexec policy. Read before ${DEFAULT_POLICY_FILE}; the first matching rule wins.
## SERVICE          ARG  SOURCE   TARGET   ACTION  [PARAMS]
## Examples:
# my.Service        *    work     vault    allow
# qubes.Filecopy    *    work     @anyvm   ask     default_target=vault
# qubes.VMShell     *    @tag:dev @anyvm   deny    notify=no
`;

/** Makes the policy directory hold the shipped default and, once, a commented user file. */
export function installDefaultPolicy(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  const def = path.join(dir, DEFAULT_POLICY_FILE);
  if (!existsSync(def) || readFileSync(def, "utf8") !== DEFAULT_POLICY) writeFileAtomic(def, DEFAULT_POLICY, 0o644);
  const user = path.join(dir, USER_POLICY_FILE);
  if (!existsSync(user)) writeFileAtomic(user, USER_POLICY, 0o644);
}
