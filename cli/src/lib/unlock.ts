// An encrypted domain's passphrase for the calls that need it (start; revert and resize of a
// halted one's private volume), as cryptsetup asks: the call goes without one first; if qvmd
// answers PASSPHRASE_REQUIRED, "Passphrase for NAME: " is asked on the terminal without echo and
// the call sent again, and a wrong one (PERMISSION_DENIED) is asked again, up to MAX_TRIES in all.
// A passphrase from --passphrase-file goes with the first call (qvmd ignores it for a domain that
// is not encrypted) and is tried once. The passphrase is never printed, logged or put in argv.
import { QvmError, isQvmError } from "@qvm/protocol/contracts";
import { canAsk, processTerminal, readSecret, type SecretTerminal } from "./passphrase.js";

/** How many passphrases the terminal is asked for, per call, before the last refusal is final. */
export const MAX_TRIES = 3;

export interface UnlockOptions {
  /** The passphrase read from --passphrase-file: sent at once, one try, nothing asked. */
  passphrase?: string;
  /** Where to ask (default: this process's stdin and stderr). */
  term?: SecretTerminal;
}

/** `call`'s result, with `name`'s passphrase when qvmd wants one (see above). */
export async function withPassphrase<T>(name: string, call: (passphrase: string | undefined) => Promise<T>, opts: UnlockOptions = {}): Promise<T> {
  if (opts.passphrase !== undefined) return call(opts.passphrase);
  const term = opts.term ?? processTerminal();
  try {
    return await call(undefined);
  } catch (err) {
    if (!isQvmError(err, "PASSPHRASE_REQUIRED")) throw err;
    if (!canAsk(term)) throw new QvmError("PASSPHRASE_REQUIRED", `${err.message}; no terminal to ask it on: give it in a file with --passphrase-file FILE`);
  }
  for (let tries = 1; ; tries++) {
    const passphrase = await readSecret(`Passphrase for ${name}: `, term);
    try {
      if (passphrase === "") throw new QvmError("PERMISSION_DENIED", `no passphrase given for ${name}`);
      return await call(passphrase);
    } catch (err) {
      if (!isQvmError(err, "PERMISSION_DENIED") || tries >= MAX_TRIES) throw err;
      term.stderr.write(`qvm: ${err.message}\n`);
    }
  }
}
