// cloud-hypervisor's REST API (its OpenAPI description: ../shared/vendor/cloud-hypervisor/), over
// the Unix socket given to `--api-socket`. The second piece of the cloud-hypervisor driver (issue
// 17), tested against a local server that answers as the API documents (ch-api.test.ts); not yet
// run against a real cloud-hypervisor.
//
// The VMM serves guest-facing devices, so its answers are bounded and checked like any other
// untrusted reply: at most 1 MiB, JSON where JSON is documented, the VM state one of the
// documented words, and error text clipped and stripped of control characters before it reaches
// an error message. Every call has a deadline; a VMM that dies mid-call fails the call at once.
import http from "node:http";
import { QvmError } from "@qvm/protocol";
import type { ChNetConfig, ChVmConfig } from "./vm-config.js";

const MAX_REPLY_BYTES = 1024 * 1024;
const DEFAULT_TIMEOUT_MS = 10_000;
export const CH_VM_STATES = ["Created", "Running", "Shutdown", "Paused", "BreakPoint"] as const;
export type ChVmState = (typeof CH_VM_STATES)[number];

export interface ChVmInfo {
  state: ChVmState;
  /** Guest RAM the VM has now (after the balloon), bytes; absent when CH does not say. */
  memoryActualSize?: number;
}

interface Reply {
  status: number;
  body: Buffer;
}

export class ChApi {
  constructor(
    readonly socketPath: string,
    private readonly timeoutMs = DEFAULT_TIMEOUT_MS,
  ) {}

  async ping(): Promise<{ version: string }> {
    const v = this.json(await this.call("GET", "/vmm.ping"), "vmm.ping") as { version?: unknown };
    if (typeof v.version !== "string" || v.version.length > 100) throw this.protocol("vmm.ping has no version");
    return { version: v.version };
  }

  create(config: ChVmConfig): Promise<void> {
    return this.put("vm.create", config);
  }
  boot(): Promise<void> {
    return this.put("vm.boot");
  }
  shutdown(): Promise<void> {
    return this.put("vm.shutdown");
  }
  powerButton(): Promise<void> {
    return this.put("vm.power-button");
  }
  pause(): Promise<void> {
    return this.put("vm.pause");
  }
  resume(): Promise<void> {
    return this.put("vm.resume");
  }
  resizeDisk(id: string, desiredSize: number): Promise<void> {
    return this.put("vm.resize-disk", { id, desired_size: desiredSize });
  }
  /** Hot-plugs a network link (a tap device by name: vm.create and add-net take no descriptors from us). */
  async addNet(net: ChNetConfig): Promise<void> {
    const r = await this.call("PUT", "/vm.add-net", net);
    // 200 with PciDeviceInfo when the VM runs, 204 when it is not booted yet (a cold add).
    if (r.status !== 200 && r.status !== 204) throw this.refused("vm.add-net", r);
  }
  removeDevice(id: string): Promise<void> {
    return this.put("vm.remove-device", { id });
  }
  /** Writes the paused VM's state into `dir` (a local directory). */
  snapshot(dir: string): Promise<void> {
    return this.put("vm.snapshot", { destination_url: `file://${dir}` });
  }
  restore(dir: string, opts: { resume?: boolean } = {}): Promise<void> {
    return this.put("vm.restore", { source_url: `file://${dir}`, ...(opts.resume !== undefined ? { resume: opts.resume } : {}) });
  }
  /** Ends the VMM process itself. */
  shutdownVmm(): Promise<void> {
    return this.put("vmm.shutdown");
  }

  async info(): Promise<ChVmInfo> {
    const v = this.json(await this.call("GET", "/vm.info"), "vm.info") as { state?: unknown; memory_actual_size?: unknown };
    if (typeof v.state !== "string" || !(CH_VM_STATES as readonly string[]).includes(v.state)) throw this.protocol(`vm.info has an unknown state ${clip(String(v.state))}`);
    const info: ChVmInfo = { state: v.state as ChVmState };
    if (Number.isSafeInteger(v.memory_actual_size) && (v.memory_actual_size as number) >= 0) info.memoryActualSize = v.memory_actual_size as number;
    return info;
  }

  private async put(what: string, body?: unknown): Promise<void> {
    const r = await this.call("PUT", `/${what}`, body);
    if (r.status < 200 || r.status > 299) throw this.refused(what, r);
  }

  private json(r: Reply, what: string): unknown {
    if (r.status !== 200) throw this.refused(what, r);
    try {
      return JSON.parse(r.body.toString("utf8"));
    } catch {
      throw this.protocol(`${what} answered something that is not JSON`);
    }
  }

  private refused(what: string, r: Reply): QvmError {
    const why = clip(errorText(r.body.toString("utf8"))) || `HTTP ${r.status}`;
    // 405: the VM is in the wrong state for it, as the API description documents; CH's code answers
    // 500 for that instead (with the reason in the text), 404 for no VM or no such device, 409 for
    // a duplicate id.
    const code = r.status === 405 || r.status === 409 ? "FAILED_PRECONDITION" : r.status === 404 ? "NOT_FOUND" : "VMM_FAILED";
    return new QvmError(code, `cloud-hypervisor refused ${what} (HTTP ${r.status}): ${why}`);
  }

  private protocol(msg: string): QvmError {
    return new QvmError("VMM_FAILED", `cloud-hypervisor's API at ${this.socketPath}: ${msg}`);
  }

  private call(method: "GET" | "PUT", path: string, body?: unknown): Promise<Reply> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    return new Promise((resolve, reject) => {
      const req = http.request(
        {
          socketPath: this.socketPath,
          method,
          path: `/api/v1${path}`,
          headers: { Accept: "application/json", ...(payload ? { "Content-Type": "application/json", "Content-Length": payload.length } : {}) },
          timeout: this.timeoutMs,
        },
        (res) => {
          const parts: Buffer[] = [];
          let size = 0;
          res.on("data", (c: Buffer) => {
            size += c.length;
            if (size > MAX_REPLY_BYTES) {
              req.destroy();
              return reject(this.protocol(`${path} answered more than ${MAX_REPLY_BYTES} bytes`));
            }
            parts.push(c);
          });
          res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(parts) }));
          res.on("error", (err) => reject(this.unreachable(path, err)));
        },
      );
      req.on("timeout", () => req.destroy(new QvmError("VMM_FAILED", `cloud-hypervisor did not answer ${path} within ${this.timeoutMs} ms`)));
      req.on("error", (err) => reject(err instanceof QvmError ? err : this.unreachable(path, err)));
      req.end(payload);
    });
  }

  private unreachable(path: string, err: Error): QvmError {
    return new QvmError("VMM_FAILED", `cloud-hypervisor's API at ${this.socketPath} failed during ${path}: ${err.message} (is the VMM still running? see its log)`, { cause: err });
  }
}

/**
 * CH (v53) answers errors as a JSON array of strings, outermost first ("Error from API", "The VM
 * could not be paused", "VM is not running"); older releases sent plain text. Either way, text.
 */
function errorText(body: string): string {
  if (body.startsWith("[")) {
    try {
      const parts = JSON.parse(body) as unknown;
      if (Array.isArray(parts) && parts.every((p) => typeof p === "string")) return parts.filter((p) => p !== "Error from API").join(": ");
    } catch {
      // not JSON: plain text
    }
  }
  return body;
}

/** Error text from the VMM: one line, no control characters, at most 300 characters. */
function clip(s: string): string {
  const flat = s.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029\u200b-\u200f\u202a-\u202e\u2066-\u2069]+/g, " ").trim();
  return flat.length > 300 ? `${flat.slice(0, 300)}…` : flat;
}
