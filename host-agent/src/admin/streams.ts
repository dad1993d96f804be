// The admin API's streaming calls: each pumps bytes or messages between a gRPC stream and a core
// session, with back-pressure both ways. What a session means lives in the core (core/sessions.ts);
// a transport error or a cancelled call ends the session.
import type { ServerDuplexStream, ServerWritableStream } from "@grpc/grpc-js";
import type { Duplex, Readable } from "node:stream";
import { QvmError, toGrpcError, type adminV1 } from "@qvm/protocol";
import type { QvmEvent } from "../base/events.js";
import type { BackupListener, Qvmd } from "../core/qvmd.js";
import type { ExecSession } from "../core/sessions.js";
import type { Prompt } from "../qrexec/prompts.js";
import { parseExecStart, parseSignal, domainName } from "./requests.js";

/** Progress messages of a backup command at most this often (notes and the result always go). */
const BACKUP_PROGRESS_INTERVAL_MS = 100;

/**
 * A backup command (create, verify, restore): progress and notes out while it runs, then one
 * message with the result; a failure ends the call with its QvmError. The passphrase is in the
 * request only: nothing here logs a request.
 */
export function pumpBackup<Req>(call: ServerWritableStream<Req, adminV1.BackupProgress>, run: (listener: BackupListener) => Promise<adminV1.BackupResult>): void {
  let last = 0;
  let lastItem = "";
  const cancel = new AbortController();
  call.on("cancelled", () => cancel.abort(new QvmError("FAILED_PRECONDITION", "the backup call was cancelled by its client")));
  const listener: BackupListener = {
    signal: cancel.signal,
    onProgress: (p) => {
      const now = Date.now();
      if (now - last < BACKUP_PROGRESS_INTERVAL_MS && p.item === lastItem && p.bytesDone < p.bytesTotal) return;
      last = now;
      lastItem = p.item;
      call.write({ phase: p.phase, item: p.item, bytesDone: p.bytesDone, bytesTotal: p.bytesTotal, note: "", result: undefined });
    },
    onNote: (note) => call.write({ phase: "", item: "", bytesDone: 0, bytesTotal: 0, note, result: undefined }),
  };
  Promise.resolve()
    .then(() => run(listener))
    .then(
      (result) => {
        call.write({ phase: "", item: "", bytesDone: 0, bytesTotal: 0, note: "", result });
        call.end();
      },
      (err: unknown) => fail(call, err),
    );
}

/** Events a subscriber may fall behind by before its stream is closed (it can resubscribe). */
export const MAX_EVENT_BACKLOG = 10_000;

function fail(call: { emit(ev: "error", e: unknown): boolean }, err: unknown): void {
  call.emit("error", toGrpcError(err));
}

/** Writes a readable's chunks as messages, pausing it while the call's buffer is full. */
function pipeOut(src: Readable, call: { write(m: unknown): boolean; once(ev: "drain", f: () => void): unknown }, msg: (chunk: Buffer) => unknown): Promise<void> {
  return new Promise((resolve) => {
    src.on("data", (chunk: Buffer) => {
      if (!call.write(msg(chunk))) {
        src.pause();
        call.once("drain", () => src.resume());
      }
    });
    src.once("end", resolve);
    src.once("error", () => resolve());
    // A stream handed over paused (a hybrid-vsock dial pauses its socket so no byte is lost)
    // does not start flowing when a data listener is added: start it.
    src.resume();
  });
}

/** One program in a domain: start, stdin/resize/signal in; started, stdout/stderr, exit out. */
export function pumpExec(qvmd: Qvmd, call: ServerDuplexStream<adminV1.ExecRequest, adminV1.ExecResponse>): void {
  let session: ExecSession | undefined;
  let finished = false;
  let gone = false;
  const early: adminV1.ExecRequest[] = [];
  const cancel = () => {
    gone = true;
    session?.cancel();
  };
  call.on("error", cancel);
  call.on("cancelled", cancel);

  const abort = (err: unknown) => {
    if (finished) return;
    finished = true;
    session?.cancel();
    fail(call, err);
  };
  const onRequest = (req: adminV1.ExecRequest) => {
    const msg = req.msg;
    if (!msg) return;
    if (!session) {
      early.push(req);
      return;
    }
    const s = session;
    switch (msg.$case) {
      case "start":
        return abort(new QvmError("INVALID_ARGUMENT", "start sent twice"));
      case "stdin":
        if (!s.stdin.write(msg.value)) {
          call.pause();
          s.stdin.once("drain", () => call.resume());
        }
        return;
      case "closeStdin":
        s.stdin.end();
        return;
      case "resize":
        s.resize(msg.value.rows, msg.value.cols);
        return;
      case "signal":
        try {
          void s.signal(parseSignal(msg.value));
        } catch (err) {
          abort(err);
        }
        return;
    }
  };

  call.once("data", (first: adminV1.ExecRequest) => {
    call.on("data", onRequest);
    void (async () => {
      if (first.msg?.$case !== "start") throw new QvmError("INVALID_ARGUMENT", "the first Exec message must be start");
      const cmd = parseExecStart(first.msg.value);
      call.pause();
      const s = await qvmd.exec(cmd);
      session = s;
      if (gone) return s.cancel();
      call.write({ msg: { $case: "started", value: { pid: s.pid, domain: s.domain } } });
      const out = pipeOut(s.guestStdout, call, (c) => ({ msg: { $case: "stdout", value: c } }));
      const err = pipeOut(s.guestStderr, call, (c) => ({ msg: { $case: "stderr", value: c } }));
      for (const r of early.splice(0)) onRequest(r);
      call.resume();
      const [exit] = await Promise.all([s.exit, out, err]);
      if (finished) return;
      finished = true;
      call.write({ msg: { $case: "exit", value: { code: exit.code ?? 0, signal: exit.signal ?? "" } } });
      call.end();
    })().catch(abort);
  });
}

/**
 * An opaque byte stream both ways between an admin call and something in a domain (its serial
 * console, a window's remote framebuffer): the first request names it, then `input` goes in
 * and `output` comes out, with back-pressure both ways.
 */
function pumpBytes<Req extends { msg?: { $case: string; value: unknown } }>(
  call: ServerDuplexStream<Req, { output: Buffer }>,
  what: string,
  open: (start: unknown) => Promise<Duplex>,
): void {
  let close = () => {};
  call.on("cancelled", () => close());
  call.on("error", () => close());
  call.once("data", (first: Req) => {
    void (async () => {
      if (first.msg?.$case !== "start") throw new QvmError("INVALID_ARGUMENT", `the first ${what} message must be start`);
      const s = await open(first.msg.value);
      close = () => s.destroy();
      call.on("end", () => {
        s.end();
        call.end();
      });
      // Domain bytes are passed on as opaque data; the client decides how to show them.
      void pipeOut(s, call, (c) => ({ output: c }));
      s.on("close", () => call.end());
      s.on("error", () => call.end());
      call.on("data", (req: Req) => {
        if (req.msg?.$case === "input" && !s.write(req.msg.value as Buffer)) {
          call.pause();
          s.once("drain", () => call.resume());
        }
      });
    })().catch((err) => fail(call, err));
  });
}

/** The serial console: bytes both ways between the admin stream and the domain's console. */
export function pumpConsole(qvmd: Qvmd, call: ServerDuplexStream<adminV1.ConsoleRequest, adminV1.ConsoleResponse>): void {
  pumpBytes(call, "Console", async (start) => (await qvmd.console(domainName((start as adminV1.ConsoleStart).domain))).stream);
}

/** A window's remote-framebuffer stream: opaque bytes both ways, with the console's back-pressure. */
export function pumpWindow(qvmd: Qvmd, call: ServerDuplexStream<adminV1.WindowStreamRequest, adminV1.WindowStreamResponse>): void {
  pumpBytes(call, "WindowStream", (start) => {
    const s = start as adminV1.WindowStreamStart;
    return qvmd.windowStream(domainName(s.domain), s.windowId);
  });
}

export function pumpEvents(qvmd: Qvmd, call: ServerWritableStream<adminV1.WatchEventsRequest, adminV1.Event>, toMessage: (ev: QvmEvent) => adminV1.Event): void {
  let behind = 0;
  const unsubscribe = qvmd.watchEvents((ev) => {
    if (!call.write(toMessage(ev))) behind++;
    if (behind > MAX_EVENT_BACKLOG) {
      unsubscribe();
      fail(call, new QvmError("FAILED_PRECONDITION", `event subscriber fell more than ${MAX_EVENT_BACKLOG} events behind; subscribe again`));
    }
  }, call.request.domain);
  call.on("drain", () => (behind = 0));
  call.on("cancelled", unsubscribe);
  call.on("error", unsubscribe);
  call.on("close", unsubscribe);
}

/**
 * A registered ask prompt: questions go out on the stream, answers come back by id. The prompt
 * stays registered until the stream ends; its unanswered questions are then denied.
 */
export function pumpAskPrompt(qvmd: Qvmd, call: ServerDuplexStream<adminV1.AskAnswer, adminV1.AskQuestion>): void {
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
  const registration = qvmd.registerPrompt(prompt);
  call.on("data", (a: adminV1.AskAnswer) => registration.answer(a.id, a.target));
  call.on("end", () => {
    registration.close();
    call.end();
  });
  call.on("cancelled", registration.close);
  call.on("error", registration.close);
}
