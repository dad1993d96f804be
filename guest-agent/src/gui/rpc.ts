// The window RPCs of the GuestAgent service (OpenWindow, ResizeWindow, CloseWindow, ListWindows,
// WatchWindows, GetWindowClipboard, SetWindowClipboard) over a WindowManager.
import type { sendUnaryData, ServerWritableStream } from "@grpc/grpc-js";
import type { agentV1 } from "@qvm/protocol";
import { streamNewest, toGrpcError } from "../rpc-streams.js";
import type { WindowManager } from "./windows.js";

type WindowRpcs = Pick<
  agentV1.GuestAgentServer,
  "openWindow" | "resizeWindow" | "closeWindow" | "listWindows" | "watchWindows" | "getWindowClipboard" | "setWindowClipboard"
>;

function reply<T>(cb: sendUnaryData<T>, p: Promise<T>): void {
  p.then(
    (v) => cb(null, v),
    (err: unknown) => cb(toGrpcError(err)),
  );
}

export function windowRpcs(windows: WindowManager): WindowRpcs {
  return {
    openWindow(call, cb) {
      reply(cb, windows.open(call.request));
    },
    resizeWindow(call, cb) {
      const { windowId, width, height } = call.request;
      reply(cb, windows.resize(windowId, width, height).then(() => ({})));
    },
    closeWindow(call, cb) {
      reply(cb, windows.close(call.request.windowId).then(() => ({})));
    },
    getWindowClipboard(call, cb) {
      reply(cb, windows.getClipboard(call.request.windowId, call.request.maxBytes));
    },
    setWindowClipboard(call, cb) {
      reply(cb, windows.setClipboard(call.request.windowId, call.request.data).then(() => ({})));
    },
    listWindows(_call, cb) {
      cb(null, { windows: windows.list() });
    },
    watchWindows(call: ServerWritableStream<agentV1.WatchWindowsRequest, agentV1.ListWindowsResponse>) {
      streamNewest(call, (onList) => windows.watch(onList), (list) => ({ windows: list }));
    },
  };
}
