// The GuestAgent gRPC service: translates RPCs into ExecSessions and system calls.
import { readFileSync } from "node:fs";
import os from "node:os";
import { spawn } from "node:child_process";
import { status, type ServerDuplexStream, type sendUnaryData, type ServerUnaryCall } from "@grpc/grpc-js";
import { agentV1 } from "@qvm/protocol";
import { EXEC_SIGNALS, isExecSignal } from "@qvm/protocol/contracts";
import { ExecSession, ExecRequestError } from "./exec-session.js";
import { MAX_CONCURRENT_EXECS } from "./limits.js";
import { setNetwork } from "./network-rpc.js";
import { reidentifyRpcs, systemIdentity, type IdentitySystem } from "./reidentify.js";
import { windowRpcs } from "./gui/rpc.js";
import { systemGui } from "./gui/system.js";
import { WindowManager } from "./gui/windows.js";
import { UsbMonitor } from "./usb/monitor.js";
import { usbRpcs } from "./usb/rpc.js";

declare const QVM_AGENT_VERSION: string;
export const AGENT_VERSION = typeof QVM_AGENT_VERSION === "string" ? QVM_AGENT_VERSION : "0.0.0-dev";

type ExecStream = ServerDuplexStream<agentV1.ExecRequest, agentV1.ExecResponse>;

function fail(cb: sendUnaryData<never>, code: status, details: string): void {
  cb({ code, details, name: "AgentError", message: details });
}

export interface PowerControl {
  shutdown(reboot: boolean): void;
}

/** Powers off through systemd, or directly when there is no systemd (initramfs-only tests). */
export const systemPower: PowerControl = {
  shutdown(reboot) {
    const verb = reboot ? "reboot" : "poweroff";
    const p = spawn("systemctl", [verb], { stdio: "ignore", detached: true });
    p.on("error", () => spawn(verb, ["-f"], { stdio: "ignore", detached: true }).on("error", () => {}));
    p.unref();
  },
};

export function createGuestAgentService(
  power: PowerControl = systemPower,
  windows = new WindowManager(systemGui()),
  usb = new UsbMonitor(),
  identity: IdentitySystem = systemIdentity(),
): agentV1.GuestAgentServer {
  const sessions = new Map<number, ExecSession>();
  let nextId = 1;

  return {
    ...windowRpcs(windows),
    ...usbRpcs(usb),
    ...reidentifyRpcs(identity),

    ping(_call: ServerUnaryCall<agentV1.PingRequest, agentV1.PingResponse>, cb: sendUnaryData<agentV1.PingResponse>) {
      cb(null, { agentVersion: AGENT_VERSION });
    },

    setNetwork(call, cb) {
      setNetwork(call.request, (m) => process.stderr.write(`qvm-agent: ${m}\n`)).then(
        (failures) => cb(null, { failures }),
        (err: Error & { code?: string }) => fail(cb, err.code === "INVALID_ARGUMENT" ? status.INVALID_ARGUMENT : status.INTERNAL, err.message),
      );
    },

    getInfo(_call, cb) {
      const uptime = Number(readFileSync("/proc/uptime", "utf8").split(" ")[0]);
      cb(null, { kernelRelease: os.release(), uptimeSeconds: uptime, agentVersion: AGENT_VERSION, hostname: os.hostname() });
    },

    exec(call: ExecStream) {
      let session: ExecSession | undefined;
      const sink = {
        send: (res: agentV1.ExecResponse) => {
          if (call.destroyed || call.writableEnded) return true;
          const ok = call.write(res);
          if (res.msg?.$case === "exit") call.end();
          return ok;
        },
        onDrain: (cb: () => void) => call.once("drain", cb),
      };
      // grpc-js sends an error status on a streaming call when the call emits 'error'.
      const reject = (code: status, details: string) => {
        call.emit("error", { code, details, name: "AgentError", message: details });
      };

      call.on("data", (req: agentV1.ExecRequest) => {
        const msg = req.msg;
        if (!session) {
          if (msg?.$case !== "start") return reject(status.INVALID_ARGUMENT, "the first Exec message must be start");
          if (sessions.size >= MAX_CONCURRENT_EXECS) return reject(status.RESOURCE_EXHAUSTED, "too many processes");
          const id = nextId++;
          try {
            session = new ExecSession(id, msg.value, sink, () => sessions.delete(id));
          } catch (err) {
            if (err instanceof ExecRequestError) return reject(status.INVALID_ARGUMENT, err.message);
            throw err;
          }
          sessions.set(id, session);
          session.started();
          return;
        }
        switch (msg?.$case) {
          case "stdin":
            if (!session.writeStdin(msg.value)) {
              call.pause();
              session.onStdinDrain(() => call.resume());
            }
            break;
          case "closeStdin":
            if (msg.value) session.closeStdin();
            break;
          case "resize":
            session.resize(msg.value.rows, msg.value.cols);
            break;
          default:
            reject(status.INVALID_ARGUMENT, "start may be sent only once");
        }
      });
      call.on("cancelled", () => session?.abort());
      call.on("error", () => session?.abort());
    },

    signal(call, cb) {
      const { execId, signal } = call.request;
      if (!isExecSignal(signal)) return fail(cb, status.INVALID_ARGUMENT, `signal not allowed: ${signal}; allowed: ${EXEC_SIGNALS.join(", ")}`);
      const session = sessions.get(execId);
      if (!session) return fail(cb, status.NOT_FOUND, `no process with exec id ${execId}`);
      session.signal(signal);
      cb(null, {});
    },

    shutdown(call, cb) {
      cb(null, {});
      setTimeout(() => power.shutdown(call.request.reboot), 50);
    },
  };
}
