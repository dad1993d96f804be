// The window RPCs of the GuestAgent service (OpenWindow, ResizeWindow, CloseWindow, ListWindows,
// WatchWindows, GetWindowClipboard, SetWindowClipboard) over a WindowManager.
import { status, type sendUnaryData, type ServerWritableStream } from "@grpc/grpc-js";
import type { agentV1 } from "@qvm/protocol";
import { isQvmError } from "@qvm/protocol/contracts";
import type { WindowManager, WindowSummary } from "./windows.js";

type WindowRpcs = Pick<
  agentV1.GuestAgentServer,
  "openWindow" | "resizeWindow" | "closeWindow" | "listWindows" | "watchWindows" | "getWindowClipboard" | "setWindowClipboard"
>;

function toError(err: unknown): { code: number; details: string; name: string; message: string } {
  const code = isQvmError(err) ? err.grpcStatus : status.INTERNAL;
  const details = err instanceof Error ? err.message : String(err);
  return { code, details, name: "AgentError", message: details };
}

function reply<T>(cb: sendUnaryData<T>, p: Promise<T>): void {
  p.then(
    (v) => cb(null, v),
    (err: unknown) => cb(toError(err)),
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
      // Writes the newest list; while the host reads slowly, lists in between are skipped.
      let blocked = false;
      let pending: WindowSummary[] | undefined;
      const send = (list: WindowSummary[]) => {
        if (call.cancelled || call.writableEnded || call.destroyed) return;
        if (blocked) {
          pending = list;
          return;
        }
        if (!call.write({ windows: list })) {
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
        unsubscribe = windows.watch(send);
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
