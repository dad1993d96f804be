// The admin API's gRPC handlers: each one parses its request, calls the qvmd core and translates
// the result or the QvmError. No logic lives here that a web route would also need.
import net from "node:net";
import type { ServerDuplexStream, ServerUnaryCall, ServerWritableStream, sendUnaryData, UntypedServiceImplementation } from "@grpc/grpc-js";
import { QvmError, adminV1, toGrpcError } from "@qvm/protocol";
import type { Qvmd, DomainView } from "../daemon/qvmd.js";
import type { QvmEvent } from "../daemon/events.js";
import type { PropertyView } from "../daemon/registry.js";
import type { VolumeView } from "../storage/volumes.js";
import { SIGNAL_NAMES, type SignalName } from "../agent/replies.js";
import type { ExecProcess } from "../agent/exec-process.js";
import type { AgentClient } from "../agent/agent-client.js";
import { ADMIN_DOMAIN_NAME, isValidServiceName, sanitizeArgument, serviceCommand, splitServiceName } from "../qrexec/service-command.js";
import type { Prompt } from "../qrexec/prompts.js";

/** Events a subscriber may fall behind by before its stream is closed (it can resubscribe). */
export const MAX_EVENT_BACKLOG = 10_000;
const MAX_ARGV_BYTES = 128 * 1024;
const MAX_ENV_ENTRIES = 256;

function unary<Req, Res>(fn: (req: Req) => Promise<Res> | Res) {
  return (call: ServerUnaryCall<Req, Res>, cb: sendUnaryData<Res>) => {
    Promise.resolve()
      .then(() => fn(call.request))
      .then(
        (res) => cb(null, res),
        (err: unknown) => cb(toGrpcError(err) as never),
      );
  };
}

const domainMsg = (d: DomainView): adminV1.Domain => ({ ...d });
const propMsg = (p: PropertyView): adminV1.Property => ({ ...p });
const volumeMsg = (v: VolumeView & { revisionsToKeep: number }): adminV1.Volume => ({
  revisionsToKeep: v.revisionsToKeep,
  domain: v.domain,
  name: v.name,
  path: v.path,
  sizeBytes: v.sizeBytes,
  usageBytes: v.usageBytes,
  snapOnStart: v.flags.snapOnStart,
  saveOnStop: v.flags.saveOnStop,
  rw: v.flags.rw,
  revisions: v.revisions,
});

export function adminService(qvmd: Qvmd): UntypedServiceImplementation {
  const impl: adminV1.QvmAdminServer = {
    getDaemonInfo: unary(() => ({
      version: process.env.QVM_VERSION ?? "0.1.0",
      dataDir: qvmd.opts.dataDir,
      runtimeDir: qvmd.opts.runtimeDir,
      pid: process.pid,
      accel: "",
      imagesDir: qvmd.opts.images.root,
    })),
    importTemplates: unary(async () => ({ registered: await qvmd.importTemplates() })),
    listDomains: unary(() => ({ domains: qvmd.list().map(domainMsg) })),
    getDomain: unary((req: adminV1.GetDomainRequest) => ({ domain: domainMsg(qvmd.get(req.name)) })),
    createDomain: unary(async (req: adminV1.CreateDomainRequest) => ({
      domain: domainMsg(await qvmd.create({ name: req.name, klass: req.klass, template: req.template, label: req.label, properties: req.properties })),
    })),
    cloneDomain: unary(async (req: adminV1.CloneDomainRequest) => ({ domain: domainMsg(await qvmd.clone(req.source, req.name)) })),
    removeDomain: unary(async (req: adminV1.RemoveDomainRequest) => {
      await qvmd.remove(req.name);
      return {};
    }),

    listProperties: unary((req: adminV1.ListPropertiesRequest) => ({ properties: qvmd.registry.properties(req.domain).map(propMsg) })),
    getProperty: unary((req: adminV1.GetPropertyRequest) => ({ property: propMsg(qvmd.registry.getProperty(req.domain, req.name)) })),
    setProperty: unary(async (req: adminV1.SetPropertyRequest) => ({ property: propMsg(await qvmd.setProperty(req.domain, req.name, req.value)) })),
    resetProperty: unary(async (req: adminV1.ResetPropertyRequest) => ({ property: propMsg(await qvmd.resetProperty(req.domain, req.name)) })),

    listFeatures: unary((req: adminV1.ListFeaturesRequest) => ({ features: qvmd.registry.features(req.domain) })),
    setFeature: unary(async (req: adminV1.SetFeatureRequest) => {
      await qvmd.runner.locks.run(req.domain, () => qvmd.registry.setFeature(req.domain, req.name, req.value));
      return {};
    }),
    removeFeature: unary(async (req: adminV1.RemoveFeatureRequest) => {
      await qvmd.runner.locks.run(req.domain, () => qvmd.registry.removeFeature(req.domain, req.name));
      return {};
    }),
    listTags: unary((req: adminV1.ListTagsRequest) => ({ tags: qvmd.registry.tags(req.domain) })),
    addTag: unary(async (req: adminV1.AddTagRequest) => {
      await qvmd.runner.locks.run(req.domain, () => qvmd.registry.addTag(req.domain, req.tag));
      return {};
    }),
    removeTag: unary(async (req: adminV1.RemoveTagRequest) => {
      await qvmd.runner.locks.run(req.domain, () => qvmd.registry.removeTag(req.domain, req.tag));
      return {};
    }),

    startDomain: unary(async (req: adminV1.StartDomainRequest) => {
      await qvmd.runner.start(req.name);
      return { domain: domainMsg(qvmd.get(req.name)) };
    }),
    shutdownDomain: unary(async (req: adminV1.ShutdownDomainRequest) => ({ reason: await qvmd.runner.shutdown(req.name, { wait: req.wait, force: req.force }) })),
    killDomain: unary(async (req: adminV1.KillDomainRequest) => {
      await qvmd.runner.kill(req.name);
      return {};
    }),
    pauseDomain: unary(async (req: adminV1.PauseDomainRequest) => {
      await qvmd.runner.pause(req.name);
      return {};
    }),
    unpauseDomain: unary(async (req: adminV1.UnpauseDomainRequest) => {
      await qvmd.runner.unpause(req.name);
      return {};
    }),

    listVolumes: unary(async (req: adminV1.ListVolumesRequest) => ({ volumes: (await qvmd.listVolumes(req.domain)).map(volumeMsg) })),
    revertVolume: unary(async (req: adminV1.RevertVolumeRequest) => ({ revision: await qvmd.revertVolume(req.domain, req.volume, req.revision) })),
    configVolume: unary(async (req: adminV1.ConfigVolumeRequest) => {
      await qvmd.configVolume(req.domain, req.volume, req.property, req.value);
      return {};
    }),
    resizeVolume: unary(async (req: adminV1.ResizeVolumeRequest) => {
      await qvmd.resizeVolume(req.domain, req.volume, req.sizeBytes);
      return {};
    }),

    checkPolicy: unary((req: adminV1.CheckPolicyRequest) => {
      const d = qvmd.checkPolicy({ service: req.service, argument: req.argument, source: req.source, target: req.target });
      return {
        action: d.action,
        target: d.action === "allow" ? d.target : "",
        targets: d.action === "ask" ? d.targets : [],
        defaultTarget: d.action === "ask" ? (d.defaultTarget ?? "") : "",
        user: d.action !== "deny" ? (d.user ?? "") : "",
        autostart: d.action !== "deny" && d.autostart,
        notify: d.notify,
        reason: d.action === "deny" ? d.reason : "",
        ruleFile: d.rule?.file ?? "",
        ruleLine: d.rule?.line ?? 0,
      };
    }),
    askPrompt: (call) => serveAskPrompt(qvmd, call),
    exec: (call) => serveExec(qvmd, call),
    console: (call) => serveConsole(qvmd, call),
    watchEvents: (call) => serveEvents(qvmd, call),
  };
  return impl as unknown as UntypedServiceImplementation;
}

function fail(call: { emit(ev: "error", e: unknown): boolean }, err: unknown): void {
  call.emit("error", toGrpcError(err));
}

function checkExecStart(s: adminV1.ExecStart): void {
  if (s.service) {
    if (s.argv.length || s.shellCommand || s.pty) throw new QvmError("INVALID_ARGUMENT", "a service call takes no command and no terminal");
    const { service } = splitServiceName(s.service);
    if (!isValidServiceName(service)) throw new QvmError("INVALID_ARGUMENT", `invalid service name ${JSON.stringify(service)}: use letters, digits, "_", "." and "-"`);
    return;
  }
  const hasArgv = s.argv.length > 0;
  if (hasArgv === Boolean(s.shellCommand)) throw new QvmError("INVALID_ARGUMENT", "give either a command (argv) or a shell command, not both or neither");
  const size = s.argv.reduce((n, a) => n + a.length, 0) + s.shellCommand.length;
  if (size > MAX_ARGV_BYTES) throw new QvmError("INVALID_ARGUMENT", `the command is longer than ${MAX_ARGV_BYTES} bytes`);
  if (Object.keys(s.env).length > MAX_ENV_ENTRIES) throw new QvmError("INVALID_ARGUMENT", `more than ${MAX_ENV_ENTRIES} environment variables`);
}

/** Relays one process: admin stream <-> agent Exec, with back-pressure both ways. */
function serveExec(qvmd: Qvmd, call: ServerDuplexStream<adminV1.ExecRequest, adminV1.ExecResponse>): void {
  let proc: ExecProcess | undefined;
  let agent: AgentClient | undefined;
  let finished = false;
  let disposable: string | undefined;
  /** Destroys this call's disposable, once, whichever way the call ends. */
  const destroyDisposable = (): Promise<void> => {
    const name = disposable;
    disposable = undefined;
    return name ? qvmd.destroyDisposable(name).catch((err: Error) => qvmd.log(`${name}: cannot destroy: ${err.message}`)) : Promise.resolve();
  };
  const early: adminV1.ExecRequest[] = [];
  call.on("error", () => {
    proc?.cancel();
    void destroyDisposable();
  });
  call.on("cancelled", () => {
    proc?.cancel();
    void destroyDisposable();
  });

  const onRequest = (req: adminV1.ExecRequest) => {
    const msg = req.msg;
    if (!msg) return;
    if (!proc) {
      early.push(req);
      return;
    }
    switch (msg.$case) {
      case "start":
        return abort(new QvmError("INVALID_ARGUMENT", "start sent twice"));
      case "stdin":
        if (!proc.stdin.write(msg.value)) {
          call.pause();
          proc.stdin.once("drain", () => call.resume());
        }
        return;
      case "closeStdin":
        proc.stdin.end();
        return;
      case "resize":
        proc.resize(msg.value.rows, msg.value.cols);
        return;
      case "signal": {
        if (!(SIGNAL_NAMES as readonly string[]).includes(msg.value)) return abort(new QvmError("INVALID_ARGUMENT", `signal must be one of ${SIGNAL_NAMES.join(", ")}`));
        const id = proc.id;
        if (id !== undefined) void agent?.signal(id, msg.value as SignalName).catch(() => {});
        return;
      }
    }
  };
  const abort = (err: unknown) => {
    if (finished) return;
    finished = true;
    proc?.cancel();
    fail(call, err);
  };

  call.once("data", (first: adminV1.ExecRequest) => {
    call.on("data", onRequest);
    void (async () => {
      if (first.msg?.$case !== "start") throw new QvmError("INVALID_ARGUMENT", "the first Exec message must be start");
      const s = first.msg.value;
      checkExecStart(s);
      call.pause();
      if (s.dispvm) {
        // The disposable is destroyed however this call ends: exit, error or cancellation.
        disposable = await qvmd.createDisposable(s.dispvm);
        s.domain = disposable;
      }
      const dom = await qvmd.runner.ensureRunning(s.domain, s.noAutostart && !disposable);
      const rec = qvmd.registry.get(s.domain);
      agent = dom.agent;
      // A service call runs as dom0 calling it (Qubes' `qvm-run --service`); no policy applies to the admin.
      const { service, argument } = splitServiceName(s.service);
      const svc = s.service ? serviceCommand({ service, argument: sanitizeArgument(argument), source: ADMIN_DOMAIN_NAME, requestedTarget: s.domain }) : undefined;
      proc = dom.agent.exec({
        command: svc ? svc.argv : s.argv.length ? s.argv : s.shellCommand,
        env: svc ? { ...s.env, ...svc.env } : s.env,
        cwd: s.cwd || undefined,
        user: s.user || String(qvmd.registry.resolve(rec, "default_user")),
        pty: s.pty ? { rows: s.window?.rows || 24, cols: s.window?.cols || 80 } : undefined,
      });
      const p = proc;
      const { pid } = await p.started;
      call.write({ msg: { $case: "started", value: { pid, domain: s.domain } } });
      const pump = (src: NodeJS.ReadableStream, kind: "stdout" | "stderr") =>
        new Promise<void>((resolve) => {
          src.on("data", (chunk: Buffer) => {
            const more = call.write({ msg: { $case: kind, value: chunk } } as adminV1.ExecResponse);
            if (!more) {
              src.pause();
              call.once("drain", () => src.resume());
            }
          });
          src.once("end", resolve);
        });
      for (const r of early.splice(0)) onRequest(r);
      call.resume();
      const [exit] = await Promise.all([p.exit, pump(p.stdout, "stdout"), pump(p.stderr, "stderr")]);
      if (finished) return;
      finished = true;
      // A disposable is gone before its caller learns the exit status.
      await destroyDisposable();
      call.write({ msg: { $case: "exit", value: { code: exit.code ?? 0, signal: exit.signal ?? "" } } });
      call.end();
    })().catch((err) => {
      void destroyDisposable();
      abort(err);
    });
  });
}

/** The serial console: bytes both ways between the admin stream and QEMU's console socket. */
function serveConsole(qvmd: Qvmd, call: ServerDuplexStream<adminV1.ConsoleRequest, adminV1.ConsoleResponse>): void {
  let sock: net.Socket | undefined;
  const close = () => sock?.destroy();
  call.on("cancelled", close);
  call.on("error", close);
  call.on("end", () => {
    sock?.end();
    call.end();
  });
  call.once("data", (first: adminV1.ConsoleRequest) => {
    void (async () => {
      if (first.msg?.$case !== "start") throw new QvmError("INVALID_ARGUMENT", "the first Console message must be start");
      const dom = qvmd.runner.running(first.msg.value.domain);
      const { consoleSocket } = await dom.vm.info();
      const s = net.connect(consoleSocket);
      sock = s;
      await new Promise<void>((resolve, reject) => {
        s.once("connect", resolve);
        s.once("error", reject);
      });
      // Guest console bytes are passed on as opaque data; the client decides how to show them.
      s.on("data", (chunk: Buffer) => {
        if (!call.write({ output: chunk })) {
          s.pause();
          call.once("drain", () => s.resume());
        }
      });
      s.on("close", () => call.end());
      s.on("error", () => call.end());
      void dom.vm.exited.then(() => s.destroy());
      call.on("data", (req: adminV1.ConsoleRequest) => {
        if (req.msg?.$case === "input" && !s.write(req.msg.value)) {
          call.pause();
          s.once("drain", () => call.resume());
        }
      });
    })().catch((err) => fail(call, err));
  });
}

function serveEvents(qvmd: Qvmd, call: ServerWritableStream<adminV1.WatchEventsRequest, adminV1.Event>): void {
  const only = call.request.domain;
  let behind = 0;
  const unsubscribe = qvmd.events.subscribe((ev: QvmEvent) => {
    if (only && ev.domain !== only) return;
    if (!call.write(ev)) behind++;
    if (behind > MAX_EVENT_BACKLOG) {
      unsubscribe();
      fail(call, new QvmError("FAILED_PRECONDITION", `event subscriber fell more than ${MAX_EVENT_BACKLOG} events behind; subscribe again`));
    }
  });
  call.on("drain", () => (behind = 0));
  call.on("cancelled", unsubscribe);
  call.on("error", unsubscribe);
  call.on("close", unsubscribe);
}

/**
 * A registered ask prompt: questions go out on the stream, answers come back by id. The prompt
 * stays registered until the stream ends; its unanswered questions are then denied.
 */
function serveAskPrompt(qvmd: Qvmd, call: ServerDuplexStream<adminV1.AskAnswer, adminV1.AskQuestion>): void {
  const prompt: Prompt = {
    send: (q) =>
      call.write({
        id: q.id,
        source: q.source,
        service: q.service,
        argument: q.argument,
        requestedTarget: q.requestedTarget,
        targets: q.targets,
        defaultTarget: q.defaultTarget ?? "",
        timeoutSeconds: q.timeoutSeconds,
      }),
  };
  const unregister = qvmd.asks.register(prompt);
  qvmd.log("qrexec: an ask prompt registered");
  call.on("data", (a: adminV1.AskAnswer) => qvmd.asks.answer(prompt, a.id, a.target));
  const end = () => {
    unregister();
    call.end();
  };
  call.on("end", end);
  call.on("cancelled", unregister);
  call.on("error", unregister);
}
