// withPassphrase against a fake call (an "encrypted domain" that wants one passphrase) and a fake
// terminal that types the given answers: when it asks, how often, what it sends, and what fails.
import { PassThrough } from "node:stream";
import { describe, expect, it } from "vitest";
import { QvmError, isQvmError } from "@qvm/protocol/contracts";
import { MAX_TRIES, withPassphrase } from "./unlock.js";

/** A terminal (or, with tty false, a pipe) that types `answers`, one per prompt; what it showed. */
function terminal(answers: string[], tty = true) {
  const stdin = Object.assign(new PassThrough(), { isTTY: tty, isRaw: false, setRawMode: tty ? (m: boolean) => void (stdin.isRaw = m) : undefined });
  let said = "";
  const stderr = {
    write(s: string) {
      said += s;
      // A prompt is up: type the next answer once readSecret listens.
      if (s.startsWith("Passphrase for ")) {
        const a = answers.shift();
        setImmediate(() => stdin.write(a === undefined ? "\u0003" : `${a}\r`));
      }
      return true;
    },
  };
  return { stdin, stderr, said: () => said };
}

/** A call to a domain encrypted under `right` (or not encrypted): records what it was sent. */
function fakeCall(right: string | undefined) {
  const sent: Array<string | undefined> = [];
  const call = (p: string | undefined): Promise<string> => {
    sent.push(p);
    if (right === undefined || p === right) return Promise.resolve("started");
    if (!p) return Promise.reject(new QvmError("PASSPHRASE_REQUIRED", "vault is encrypted: its passphrase is needed"));
    return Promise.reject(new QvmError("PERMISSION_DENIED", "wrong passphrase for vault: its private volume did not unlock; try again"));
  };
  return { call, sent };
}

async function rejection(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => undefined,
    (e: unknown) => e,
  );
}

describe("withPassphrase", () => {
  it("asks nothing for a domain that needs no passphrase", async () => {
    const t = terminal([]);
    const f = fakeCall(undefined);
    expect(await withPassphrase("work", f.call, { term: t })).toBe("started");
    expect(f.sent).toEqual([undefined]);
    expect(t.said()).toBe("");
  });

  it("asks on PASSPHRASE_REQUIRED, without echo, and sends the answer", async () => {
    const t = terminal(["pw"]);
    const f = fakeCall("pw");
    expect(await withPassphrase("vault", f.call, { term: t })).toBe("started");
    expect(f.sent).toEqual([undefined, "pw"]);
    expect(t.said()).toBe("Passphrase for vault: \n");
    expect(t.stdin.isRaw).toBe(false);
  });

  it("asks again after a wrong passphrase, saying so", async () => {
    const t = terminal(["nope", "pw"]);
    const f = fakeCall("pw");
    expect(await withPassphrase("vault", f.call, { term: t })).toBe("started");
    expect(f.sent).toEqual([undefined, "nope", "pw"]);
    expect(t.said()).toBe("Passphrase for vault: \nqvm: wrong passphrase for vault: its private volume did not unlock; try again\nPassphrase for vault: \n");
  });

  it(`fails with PERMISSION_DENIED after ${MAX_TRIES} wrong ones (an empty answer counts as one)`, async () => {
    const t = terminal(["a", "", "c", "pw"]);
    const f = fakeCall("pw");
    const err = await rejection(withPassphrase("vault", f.call, { term: t }));
    expect(isQvmError(err, "PERMISSION_DENIED") && err.message).toMatch(/wrong passphrase for vault/);
    expect(f.sent).toEqual([undefined, "a", "c"]);
    expect(t.said().match(/Passphrase for vault: /g)).toHaveLength(MAX_TRIES);
    expect(t.said()).toContain("qvm: no passphrase given for vault\n");
  });

  it("without a terminal: qvmd's PASSPHRASE_REQUIRED with the hint, nothing asked", async () => {
    const t = terminal(["pw"], false);
    const f = fakeCall("pw");
    const err = await rejection(withPassphrase("vault", f.call, { term: t }));
    expect(isQvmError(err, "PASSPHRASE_REQUIRED") && err.message).toBe(
      "vault is encrypted: its passphrase is needed; no terminal to ask it on: give it in a file with --passphrase-file FILE",
    );
    expect(f.sent).toEqual([undefined]);
    expect(t.said()).toBe("");
  });

  it("a passphrase from a file goes with the first call, once, and nothing is asked", async () => {
    const t = terminal(["pw"]);
    const right = fakeCall("pw");
    expect(await withPassphrase("vault", right.call, { term: t, passphrase: "pw" })).toBe("started");
    expect(right.sent).toEqual(["pw"]);
    const wrong = fakeCall("pw");
    const err = await rejection(withPassphrase("vault", wrong.call, { term: t, passphrase: "nope" }));
    expect(isQvmError(err, "PERMISSION_DENIED")).toBe(true);
    expect(wrong.sent).toEqual(["nope"]);
    expect(t.said()).toBe("");
  });

  it("other errors and a cancelled prompt end it at once", async () => {
    const gone = await rejection(withPassphrase("vault", () => Promise.reject(new QvmError("NOT_FOUND", 'domain "vault" does not exist')), { term: terminal([]) }));
    expect(isQvmError(gone, "NOT_FOUND")).toBe(true);
    const f = fakeCall("pw");
    const cancelled = await rejection(withPassphrase("vault", f.call, { term: terminal([]) })); // Ctrl-C at the prompt
    expect(cancelled).toBeInstanceOf(QvmError);
    expect((cancelled as Error).message).toMatch(/cancelled/);
    expect(f.sent).toEqual([undefined]);
  });
});
