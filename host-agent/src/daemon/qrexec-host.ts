// Connects the qrexec router to qvmd: domain facts for the policy, the policy directory, where
// services run (a domain's agent, a new disposable, or the admin domain's own services), the
// ask prompt and the event feed.
import path from "node:path";
import { runHostService } from "../qrexec/host-services.js";
import { loadPolicy } from "../qrexec/policy/loader.js";
import type { DomainFacts, SystemFacts } from "../qrexec/policy/evaluate.js";
import type { AskBroker } from "../qrexec/prompts.js";
import type { OpenedService, QrexecHost } from "../qrexec/router.js";
import { ADMIN_DOMAIN_NAME, serviceCommand, type ServiceInvocation } from "../qrexec/service-command.js";
import type { Qvmd } from "./qvmd.js";

export function policyDirOf(dataDir: string): string {
  return path.join(dataDir, "policy.d");
}

export function systemFacts(qvmd: Qvmd): SystemFacts {
  const { registry } = qvmd;
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

/** Starts a service in a domain (booting it when allowed) through its agent. */
export async function openInDomain(qvmd: Qvmd, name: string, opts: { user?: string; autostart: boolean; inv: ServiceInvocation }) {
  const dom = await qvmd.runner.ensureRunning(name, !opts.autostart);
  const cmd = serviceCommand(opts.inv);
  const proc = dom.agent.exec({
    command: cmd.argv,
    env: cmd.env,
    user: opts.user || String(qvmd.registry.resolve(qvmd.registry.get(name), "default_user")),
  });
  proc.stdin.on("error", () => {});
  await proc.started;
  return proc;
}

export function qrexecHost(qvmd: Qvmd, broker: AskBroker): QrexecHost {
  return {
    facts: () => systemFacts(qvmd),
    loadPolicy: () => loadPolicy(policyDirOf(qvmd.opts.dataDir)),
    async open(target, opts): Promise<OpenedService> {
      if (target === "@adminvm") {
        return { proc: runHostService(opts.inv.service, opts.inv.argument), domain: ADMIN_DOMAIN_NAME, release: async () => {} };
      }
      if (!target.startsWith("@dispvm:")) {
        return { proc: await openInDomain(qvmd, target, opts), domain: target, release: async () => {} };
      }
      const name = await qvmd.createDisposable(target.slice("@dispvm:".length));
      const release = () => qvmd.destroyDisposable(name).catch((err: Error) => qvmd.log(`${name}: cannot destroy: ${err.message}`));
      try {
        return { proc: await openInDomain(qvmd, name, { ...opts, autostart: true }), domain: name, release };
      } catch (err) {
        await release();
        throw err;
      }
    },
    ask: (q) => broker.ask(q),
    log: (m) => qvmd.log(m),
    called: (source, fields) => qvmd.events.publish("qrexec-call", source, fields),
  };
}

