// One command in a domain through qvmd's admin Exec stream (what `qvm run --pass-io` does), with
// its output collected and a deadline: the soak's "run" step, and how it reads a guest's journal.
import { QvmError, adminV1, type AdminClient } from "@qvm/protocol";

export interface ExecResult {
  stdout: string;
  stderr: string;
  code: number | null;
  signal: string;
}

/** Runs `shellCommand` in `domain` (never autostarting it) as `user` (default: its default_user); rejects with AGENT_TIMEOUT after `timeoutMs`. */
export function execInDomain(client: AdminClient, domain: string, shellCommand: string, timeoutMs: number, opts: { user?: string } = {}): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const call = client.exec();
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let done = false;
    const finish = (fn: () => void) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      fn();
    };
    const timer = setTimeout(() => {
      finish(() => reject(new QvmError("AGENT_TIMEOUT", `\`${shellCommand}\` in ${domain} did not finish within ${timeoutMs / 1000} s`)));
      call.cancel();
    }, timeoutMs);
    call.on("data", (res: adminV1.ExecResponse) => {
      const msg = res.msg;
      if (msg?.$case === "stdout") out.push(msg.value);
      else if (msg?.$case === "stderr") err.push(msg.value);
      else if (msg?.$case === "exit") {
        finish(() =>
          resolve({ stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString(), code: msg.value.code, signal: msg.value.signal }),
        );
        call.end();
      }
    });
    call.on("error", (e: unknown) => finish(() => reject(client.errorOf(e))));
    call.on("end", () => finish(() => reject(new QvmError("INTERNAL", `the Exec stream for ${domain} ended without an exit status`))));
    const start = adminV1.ExecStart.fromPartial({ domain, shellCommand, noAutostart: true, user: opts.user ?? "" });
    call.write({ msg: { $case: "start", value: start } });
    call.write({ msg: { $case: "closeStdin", value: true } });
  });
}
