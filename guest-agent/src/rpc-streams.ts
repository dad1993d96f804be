// What the agent's list RPCs share (windows, USB devices): a QvmError as a gRPC error, and a
// server stream that follows a watched list, writing the newest one and skipping those in
// between while the host reads slowly, so a slow reader costs the agent one pending list.
import { status, type ServerWritableStream } from "@grpc/grpc-js";
import { isQvmError } from "@qvm/protocol/contracts";

export function toGrpcError(err: unknown): { code: number; details: string; name: string; message: string } {
  const code = isQvmError(err) ? err.grpcStatus : status.INTERNAL;
  const details = err instanceof Error ? err.message : String(err);
  return { code, details, name: "AgentError", message: details };
}

/**
 * Streams `watch`'s lists on `call` as `toMessage` makes them, until the host cancels or the
 * stream ends; a `watch` that throws ends the stream with that error.
 */
export function streamNewest<L, Req, Res>(call: ServerWritableStream<Req, Res>, watch: (onList: (list: L) => void) => () => void, toMessage: (list: L) => Res): void {
  let blocked = false;
  let pending: L | undefined;
  const send = (list: L) => {
    if (call.cancelled || call.writableEnded || call.destroyed) return;
    if (blocked) {
      pending = list;
      return;
    }
    if (!call.write(toMessage(list))) {
      blocked = true;
      call.once("drain", () => {
        blocked = false;
        const next = pending;
        pending = undefined;
        if (next !== undefined) send(next);
      });
    }
  };
  let unsubscribe: () => void;
  try {
    unsubscribe = watch(send);
  } catch (err) {
    call.emit("error", toGrpcError(err));
    return;
  }
  call.on("cancelled", unsubscribe);
  call.on("close", unsubscribe);
  call.on("error", unsubscribe);
}
