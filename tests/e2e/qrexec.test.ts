// qrexec with real VMs: calls from one domain to another over guest-initiated vsock, decided by
// the policy files in DATA/policy.d, answered at a `qvm policy ask` prompt; the in-domain tools
// from the template; hostile traffic from a domain.
import { writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FrameType, encodeFrame, qrexecV1 } from "@qvm/protocol";
import { waitFor } from "./fixtures.js";
import { withDaemon, withDomain, withService, type E2eDaemon, type E2eService } from "./qvmd-fixtures.js";

let d: E2eDaemon;
const ASK_TIMEOUT_S = 6;

function qvm(args: string[], opts: { input?: string | Buffer } = {}) {
  return d.qvm(args, opts.input);
}
/** A shell command in a domain as its user; resolves with exit code and output. */
const sh = (dom: string, script: string, input?: string | Buffer) => qvm(["run", "--pass-io", "--no-pty", dom, "--", "sh", "-c", script], { input });

/** A `qvm policy ask` prompt answering each question with the next of `answers` (null: never). */
async function prompt(answers: Array<string | null>): Promise<E2eService & { questions: () => string }> {
  const p = await withService(d, ["policy", "ask"], { stdin: "pipe", stopSignal: "SIGINT" });
  let asked = 0;
  p.proc.stderr!.on("data", () => {
    const n = p.stderr().split("asks to call").length - 1;
    while (asked < n) {
      const a = answers[asked++];
      if (a !== null && a !== undefined) p.proc.stdin!.write(`${a}\n`);
    }
  });
  return Object.assign(p, { questions: () => p.stderr() });
}

/** A tree's names, modes, sizes and content hashes, as seen inside a domain. */
const TREE_LISTING = "cd \"$1\" && find . -printf '%P %y %m %s %l\\n' | LC_ALL=C sort && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum";

beforeAll(async () => {
  d = await withDaemon("e2e-qrexec", { args: ["--ask-timeout", String(ASK_TIMEOUT_S), "--max-qrexec-calls", "4"] });
  writeFileSync(
    path.join(d.dirs.dataDir, "policy.d", "30-user.policy"),
    ["test.Echo * work vault allow", "test.Echo * vault work deny notify=no", "test.Denied * work vault deny", "test.Missing * work vault allow", ""].join("\n"),
  );
  // One after the other: two TCG boots at once on a 2-core machine once left an agent unanswered
  // for 60 s (see the README's known limits).
  await withDomain(d, "work", { label: "blue", properties: { memory: "600" }, start: true });
  await withDomain(d, "vault", { label: "black", properties: { memory: "600" }, start: true });
  // A test service in vault (on its root snapshot: gone at its next start).
  const svc = '#!/bin/sh\necho "from=$QREXEC_REMOTE_DOMAIN arg=$1 env_arg=$QREXEC_SERVICE_ARGUMENT req=$QREXEC_REQUESTED_TARGET"\ncat\n';
  const r = await qvm(["run", "--pass-io", "--no-pty", "-u", "root", "vault", "--", "sh", "-c", "cat > /usr/local/etc/qubes-rpc/test.Echo && chmod 755 /usr/local/etc/qubes-rpc/test.Echo"], { input: svc });
  expect(r.exitCode, r.stderr).toBe(0);
});

afterAll(async () => {
  await d?.[Symbol.asyncDispose]();
});

describe("qrexec between real domains", () => {
  it("an allowed call carries data both ways; the service learns the caller from qvmd", async () => {
    const r = await sh("work", "echo payload | qrexec-client-vm vault test.Echo+some_arg");
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toBe("from=work arg=some_arg env_arg=some_arg req=vault\npayload");
  });

  it("a denied call is refused with 126, and `qvm policy check` names the rule", async () => {
    const r = await sh("work", "qrexec-client-vm vault test.Denied");
    expect(r.exitCode).toBe(126);
    expect(r.stderr).toContain("Request refused");
    const check = await qvm(["policy", "check", "test.Denied", "work", "vault"]);
    expect(check.exitCode).toBe(1);
    expect(check.stdout).toBe(`deny: the policy denies it\nrule: ${path.join(d.dirs.dataDir, "policy.d", "30-user.policy")}:3`);
    expect((await sh("vault", "qrexec-client-vm work test.Echo")).exitCode).toBe(126);
  });

  it("a service the target does not have exits 127", async () => {
    const r = await sh("work", "qrexec-client-vm vault test.Missing");
    expect(r.exitCode).toBe(127);
  });

  it("ignores a source name forged in the request body", async () => {
    // CallRequest field 4 would be "source"; it is reserved, and identity is the vsock socket.
    const body = Buffer.concat([qrexecV1.CallRequest.encode({ target: "vault", service: "test.Echo", argument: "" }).finish(), Buffer.from([0x22, 5, ...Buffer.from("vault")])]);
    const frames = Buffer.concat([encodeFrame(FrameType.REQUEST, body), encodeFrame(FrameType.STDIN)]);
    const r = await sh("work", "socat -t 30 - VSOCK-CONNECT:2:50 | od -An -c | tr -d ' \\n'", frames);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toContain("from=work");
    expect(r.stdout).not.toContain("from=vault");
  });

  it("qvm run --service calls a service as dom0", async () => {
    const r = await qvm(["run", "--service", "vault", "test.Echo+x"], { input: "in\n" });
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toBe("from=dom0 arg=x env_arg=x req=vault\nin");
  });

  it("qvm-copy asks where to; answered 'vault', the tree lands in ~/QubesIncoming/work byte for byte", async () => {
    const make =
      "set -e; rm -rf ~/tree; mkdir -p ~/tree/sub/deeper ~/tree/empty; echo one > ~/tree/a.txt; " +
      "head -c 3000000 /dev/urandom > ~/tree/sub/big.bin; printf '#!/bin/sh\\n' > ~/tree/sub/run.sh; chmod 750 ~/tree/sub/run.sh; " +
      "chmod 700 ~/tree/sub/deeper; echo x > ~/tree/sub/deeper/f; ln -s ../a.txt ~/tree/sub/link";
    expect((await sh("work", make)).exitCode).toBe(0);
    await using p = await prompt(["vault"]);
    await waitFor("the prompt to register", () => d.log().includes("an ask prompt registered"));
    const r = await sh("work", "qvm-copy ~/tree");
    await p.stop();
    expect(r.exitCode, r.stderr).toBe(0);
    expect(p.questions()).toMatch(/work asks to call qubes.Filecopy \(requested target: @default\)\.\nAllowed targets: [^\n]*vault/);
    expect(p.questions()).not.toMatch(/Allowed targets: [^\n]*\bwork\b/);
    const here = await sh("work", `set -- ~/tree; ${TREE_LISTING}`);
    const there = await sh("vault", `set -- ~/QubesIncoming/work/tree; ${TREE_LISTING}`);
    expect(there.exitCode, there.stderr).toBe(0);
    expect(there.stdout).toBe(here.stdout);
    expect(here.stdout).toContain("sub/link l 777 8 ../a.txt");
  });

  it("qvm-copy answered 'deny' is refused; unanswered, it is denied after the ask timeout", async () => {
    expect((await sh("work", "echo z > ~/z.txt")).exitCode).toBe(0);
    await using no = await prompt(["deny"]);
    await waitFor("the prompt to register", () => d.log().split("an ask prompt registered").length >= 3);
    const r = await sh("work", "qvm-copy ~/z.txt");
    await no.stop();
    expect(r.exitCode).toBe(126);

    await using silent = await prompt([null]);
    await waitFor("the prompt to register", () => d.log().split("an ask prompt registered").length >= 4);
    const t0 = Date.now();
    const late = await sh("work", "qvm-copy ~/z.txt");
    await silent.stop();
    expect(late.exitCode).toBe(126);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(ASK_TIMEOUT_S * 1000);
    expect((await sh("vault", "test -e ~/QubesIncoming/work/z.txt && echo present || echo absent")).stdout).toBe("absent");
  });

  it("garbage and floods from a domain are dropped with a log line; its next call and others' still work", async () => {
    const flood = "for i in $(seq 40); do (head -c 2000 /dev/urandom | socat -u - VSOCK-CONNECT:2:50 2>/dev/null &); done; sleep 3";
    expect((await sh("work", flood)).exitCode).toBe(0);
    await waitFor("a drop to be logged", () => /qrexec: work: dropped a call/.test(d.log()));
    expect((await sh("work", "echo again | qrexec-client-vm vault test.Echo")).stdout).toContain("from=work");
    expect(d.log()).not.toMatch(/qrexec: vault: dropped/);
  });
});
