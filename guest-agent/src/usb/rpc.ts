// The USB RPCs of the GuestAgent service (ListUsbDevices, WatchUsbDevices) over a UsbMonitor.
import { status, type ServerWritableStream } from "@grpc/grpc-js";
import type { agentV1 } from "@qvm/protocol";
import { isQvmError } from "@qvm/protocol/contracts";
import type { UsbMonitor } from "./monitor.js";
import type { UsbDevice } from "./sysfs.js";

type UsbRpcs = Pick<agentV1.GuestAgentServer, "listUsbDevices" | "watchUsbDevices">;

function toError(err: unknown): { code: number; details: string; name: string; message: string } {
  const code = isQvmError(err) ? err.grpcStatus : status.INTERNAL;
  const details = err instanceof Error ? err.message : String(err);
  return { code, details, name: "AgentError", message: details };
}

export function usbRpcs(usb: UsbMonitor): UsbRpcs {
  return {
    listUsbDevices(_call, cb) {
      try {
        cb(null, { devices: usb.list() });
      } catch (err) {
        cb(toError(err));
      }
    },
    watchUsbDevices(call: ServerWritableStream<agentV1.WatchUsbDevicesRequest, agentV1.ListUsbDevicesResponse>) {
      // Writes the newest list; while the host reads slowly, lists in between are skipped.
      let blocked = false;
      let pending: UsbDevice[] | undefined;
      const send = (devices: UsbDevice[]) => {
        if (call.cancelled || call.writableEnded || call.destroyed) return;
        if (blocked) {
          pending = devices;
          return;
        }
        if (!call.write({ devices })) {
          blocked = true;
          call.once("drain", () => {
            blocked = false;
            const next = pending;
            pending = undefined;
            if (next) send(next);
          });
        }
      };
      let unsubscribe: () => void;
      try {
        unsubscribe = usb.watch(send);
      } catch (err) {
        call.emit("error", toError(err));
        return;
      }
      call.on("cancelled", unsubscribe);
      call.on("close", unsubscribe);
      call.on("error", unsubscribe);
    },
  };
}
