// A server stream of an admin call read to its end, for tests: its messages, or the QvmError it ended with.
import type { ClientReadableStream } from "@grpc/grpc-js";
import type { QvmError } from "@qvm/protocol";

export function collectStream<T>(stream: ClientReadableStream<T>, errorOf: (e: unknown) => QvmError): Promise<T[]> {
  return new Promise((resolve, reject) => {
    const out: T[] = [];
    stream.on("data", (m: T) => out.push(m));
    stream.on("error", (e) => reject(errorOf(e)));
    stream.on("end", () => resolve(out));
  });
}
