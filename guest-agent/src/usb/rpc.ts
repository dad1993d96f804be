// The USB RPCs of the GuestAgent service (ListUsbDevices, WatchUsbDevices) over a UsbMonitor.
import type { ServerWritableStream } from "@grpc/grpc-js";
import type { agentV1 } from "@qvm/protocol";
import { streamNewest, toGrpcError } from "../rpc-streams.js";
import type { UsbMonitor } from "./monitor.js";

type UsbRpcs = Pick<agentV1.GuestAgentServer, "listUsbDevices" | "watchUsbDevices">;

export function usbRpcs(usb: UsbMonitor): UsbRpcs {
  return {
    listUsbDevices(_call, cb) {
      try {
        cb(null, { devices: usb.list() });
      } catch (err) {
        cb(toGrpcError(err));
      }
    },
    watchUsbDevices(call: ServerWritableStream<agentV1.WatchUsbDevicesRequest, agentV1.ListUsbDevicesResponse>) {
      streamNewest(call, (onList) => usb.watch(onList), (list) => ({ devices: list }));
    },
  };
}
