// Connects the qrexec router to the rest of qvmd: domain facts for the policy, the policy
// directory (parsed once, read again when a file changes), where services run (a domain or a new disposable through the ProcessLauncher, or
// the admin domain's own services), the ask prompt and the event feed. The router sees only the
// QrexecHost port; this file is its one adapter.
import type { EventBus } from "../base/events.js";
import { toDisposable } from "../base/disposables.js";
import type { Attacher } from "../domain/attachments.js";
import type { ProcessLauncher } from "../domain/launcher.js";
import type { DomainRegistry } from "../domain/registry.js";
import { QREXEC_VSOCK_PORT } from "@qvm/protocol";
import { runHostService } from "./host-services.js";
import type { PolicyCache } from "./policy/loader.js";
import type { DomainFacts, SystemFacts } from "./policy/evaluate.js";
import type { AskBroker } from "./prompts.js";
import type { OpenedService, QrexecHost, QrexecRouter } from "./router.js";
import { ADMIN_DOMAIN_NAME, serviceCommand } from "./service-command.js";
import { chownSync } from "node:fs";

/** What the policy evaluator knows of every domain. */
export function systemFacts(registry: DomainRegistry): SystemFacts {
  const domains = new Map<string, DomainFacts>();
  for (const r of registry.list()) {
    domains.set(r.name, {
      name: r.name,
      class: r.class,
      tags: r.tags,
      template: r.class === "DispVM" ? String(r.props.template ?? "") : undefined,
      templateForDispvms: registry.resolve(r, "template_for_dispvms") === true,
      defaultDispvm: String(registry.resolve(r, "default_dispvm") ?? ""),
    });
  }
  return { domains };
}

export interface QrexecHostDeps {
  registry: DomainRegistry;
  launcher: ProcessLauncher;
  events: EventBus;
  asks: AskBroker;
  /** The parsed policy, shared with the admin API's CheckPolicy. */
  policy: PolicyCache;
  log: (msg: string) => void;
}

export function qrexecHost(deps: QrexecHostDeps): QrexecHost {
  return {
    facts: () => systemFacts(deps.registry),
    loadPolicy: () => deps.policy.rules(),
    async open(target, opts): Promise<OpenedService> {
      // The policy names the admin domain "dom0" where a call goes (as Qubes does); "@adminvm" is the same.
      if (target === ADMIN_DOMAIN_NAME || target === "@adminvm") {
        return { proc: runHostService(opts.inv.service, opts.inv.argument), domain: ADMIN_DOMAIN_NAME, release: async () => {} };
      }
      const cmd = serviceCommand(opts.inv);
      const launched = await deps.launcher.launch({
        target: target.startsWith("@dispvm:") ? { dispvm: target.slice("@dispvm:".length) } : { domain: target },
        // The calling domain: disposables are counted per caller, and a disposable may not make one.
        caller: opts.inv.source,
        noAutostart: !opts.autostart,
        user: opts.user,
        command: cmd.argv,
        env: cmd.env,
      });
      return { proc: launched.proc, domain: launched.domain, release: launched.release };
    },
    ask: (q) => deps.asks.ask(q),
    log: deps.log,
    called: (source, fields) => deps.events.publish("qrexec-call", source, fields),
  };
}

/**
 * Each running domain's qrexec socket, `<vsock uds>_50`, where vhost-device-vsock delivers the
 * domain's calls to the host: held by qvmd, so it is made again at re-attach.
 */
export function qrexecListenerAttacher(router: QrexecRouter): Attacher {
  return {
    name: "qrexec listener",
    holder: "qvmd",
    async attach({ name, info }) {
      const socketPath = `${info.vsockPath}_${QREXEC_VSOCK_PORT}`;
      await router.attach(name, socketPath);
      // A jailed vhost-device-vsock connects to it as the domain's VMM user: the socket is theirs.
      if (info.user) chownSync(socketPath, info.user.uid, info.user.gid);
      return toDisposable(() => router.detach(name));
    },
  };
}
