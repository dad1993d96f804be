// The calling side of a qrexec call, inside a domain (docs/qrexec-protocol.md): send the request,
// learn only "connected" or "refused", then carry stdin out and stdout/stderr back until the
// service's exit code arrives. The stream is whatever reaches the host: socat's vsock
// connection in a domain, a Unix socket in tests.
import { Writable, type Duplex, type Readable } from "node:stream";
import { EXIT_REFUSED, FrameDecoder, FrameType, encodeData, encodeFrame, qrexecV1, type Frame } from "@qvm/protocol/qrexec";

export interface CallTarget {
  target: string;
  service: string;
  argument: string;
}

export interface CallIo {
  /** Sent to the service's stdin; null sends EOF at once. */
  stdin: Readable | null;
  stdout: Writable;
  stderr: Writable;
}

export interface CallOutcome {
  accepted: boolean;
  /** The service's exit code; 126 when refused; 1 when the connection broke first. */
  code: number;
}

/**
 * Makes one call. `ioOrStart` is the call's streams, or a function that makes them once the call
 * is accepted (qrexec-client-vm starts its local program only then, as Qubes' does).
 */
export function callService(conn: Duplex, req: CallTarget, ioOrStart: CallIo | (() => CallIo)): Promise<CallOutcome> {
  let io: CallIo = typeof ioOrStart === "function" ? { stdin: null, stdout: nullSink(), stderr: nullSink() } : ioOrStart;
  return new Promise((resolve) => {
    const decoder = new FrameDecoder();
    let accepted: boolean | undefined;
    let settled = false;
    const finish = (o: CallOutcome) => {
      if (settled) return;
      settled = true;
      io.stdin?.unpipe?.();
      io.stdin?.pause();
      conn.destroy();
      resolve(o);
    };
    const body = qrexecV1.CallRequest.encode({ target: req.target, service: req.service, argument: req.argument }).finish();
    conn.write(encodeFrame(FrameType.REQUEST, body));

    const sendStdin = () => {
      if (!io.stdin) {
        conn.write(encodeFrame(FrameType.STDIN));
        return;
      }
      const src = io.stdin;
      src.on("data", (chunk: Buffer) => {
        let more = true;
        for (const f of encodeData(FrameType.STDIN, chunk)) more = conn.write(f);
        if (!more) {
          src.pause();
          conn.once("drain", () => src.resume());
        }
      });
      src.once("end", () => conn.write(encodeFrame(FrameType.STDIN)));
      src.on("error", () => conn.write(encodeFrame(FrameType.STDIN)));
    };

    const onFrame = (f: Frame) => {
      if (accepted === undefined) {
        if (f.type !== FrameType.RESULT || f.payload.length !== 1) return finish({ accepted: false, code: EXIT_REFUSED });
        accepted = f.payload[0] === 1;
        if (!accepted) return finish({ accepted: false, code: EXIT_REFUSED });
        if (typeof ioOrStart === "function") io = ioOrStart();
        sendStdin();
        return;
      }
      switch (f.type) {
        case FrameType.STDOUT:
        case FrameType.STDERR: {
          const out = f.type === FrameType.STDOUT ? io.stdout : io.stderr;
          if (!f.payload.length) return;
          if (!out.write(f.payload)) {
            conn.pause();
            out.once("drain", () => conn.resume());
          }
          return;
        }
        case FrameType.EXIT:
          return finish({ accepted: true, code: f.payload.length === 4 ? f.payload.readInt32BE(0) : 1 });
        default:
          return finish({ accepted: true, code: 1 });
      }
    };
    conn.on("data", (chunk: Buffer) => {
      try {
        for (const f of decoder.push(chunk)) {
          onFrame(f);
          if (settled) return;
        }
      } catch {
        finish({ accepted: accepted ?? false, code: accepted ? 1 : EXIT_REFUSED });
      }
    });
    const broken = () => finish({ accepted: accepted ?? false, code: accepted ? 1 : EXIT_REFUSED });
    conn.on("end", broken);
    conn.on("close", broken);
    conn.on("error", broken);
  });
}

function nullSink(): Writable {
  return new Writable({ write: (_c, _e, cb) => cb() });
}
