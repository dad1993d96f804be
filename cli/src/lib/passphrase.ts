// Passphrases (a backup's, an encrypted domain's): from a file (--passphrase-file: its first
// line), or asked on the terminal without echo (twice for a new backup or domain: a typo there
// would make it unreadable). Never from the command line, where other users could see it in the
// process list.
import { readFileSync } from "node:fs";
import { QvmError } from "@qvm/protocol/contracts";

/** The longest passphrase accepted; the key derivation does not care, a paste accident might. */
export const MAX_PASSPHRASE_LENGTH = 1024;

export function passphraseFromFile(file: string, read: (f: string) => string = (f) => readFileSync(f, "utf8")): string {
  let text: string;
  try {
    text = read(file);
  } catch (err) {
    throw new QvmError("INVALID_ARGUMENT", `cannot read the passphrase file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  const line = text.split(/\r?\n/)[0] ?? "";
  return checked(line, `the passphrase file ${file}`);
}

function checked(p: string, where: string): string {
  if (p.length === 0) throw new QvmError("INVALID_ARGUMENT", `${where} gives an empty passphrase`);
  if (p.length > MAX_PASSPHRASE_LENGTH) throw new QvmError("INVALID_ARGUMENT", `${where} gives a passphrase longer than ${MAX_PASSPHRASE_LENGTH} characters`);
  return p;
}

/** This process's terminal: stdin for the answer, stderr for the prompt. */
export const processTerminal = (): SecretTerminal => ({ stdin: process.stdin, stderr: process.stderr });

/** A terminal: stdin in raw mode (no echo), the prompt on stderr. */
export interface SecretTerminal {
  stdin: NodeJS.ReadableStream & { isTTY?: boolean; isRaw?: boolean; setRawMode?(mode: boolean): unknown };
  stderr: { write(text: string): unknown };
}

/** Reads one line without echo. Ctrl-C or Ctrl-D on an empty line cancels. */
export function readSecret(prompt: string, term: SecretTerminal): Promise<string> {
  const { stdin, stderr } = term;
  if (!canAsk(term) || !stdin.setRawMode) {
    return Promise.reject(new QvmError("INVALID_ARGUMENT", "no terminal to ask the passphrase on: give it in a file with --passphrase-file FILE"));
  }
  stderr.write(prompt);
  const wasRaw = Boolean(stdin.isRaw);
  stdin.setRawMode(true);
  return new Promise<string>((resolve, reject) => {
    let buf = "";
    const finish = (err: Error | undefined): void => {
      stdin.removeListener("data", onData);
      stdin.setRawMode?.(wasRaw);
      stdin.pause();
      stderr.write("\n");
      if (err) reject(err);
      else resolve(buf);
    };
    const onData = (chunk: Buffer | string): void => {
      for (const ch of chunk.toString()) {
        if (ch === "\r" || ch === "\n") return finish(undefined);
        if (ch === "\u0003" || (ch === "\u0004" && buf === "")) return finish(new QvmError("INVALID_ARGUMENT", "cancelled: no passphrase given"));
        if (ch === "\u007f" || ch === "\b") buf = buf.slice(0, -1);
        else if (ch === "\u0015") buf = ""; // Ctrl-U: start over
        else if (ch >= " ") buf += ch;
      }
    };
    stdin.on("data", onData);
    stdin.resume();
  });
}

/** Whether `term` can ask a secret: a terminal that raw mode (no echo) works on. */
export function canAsk(term: SecretTerminal): boolean {
  return Boolean(term.stdin.isTTY && term.stdin.setRawMode);
}

/**
 * Asks for a passphrase; `confirm` asks twice and refuses two different answers. `words`: the
 * prompt, and what the refusal says was not done (the backup's by default).
 */
export async function askPassphrase(term: SecretTerminal, confirm: boolean, words: { prompt: string; notDone: string } = { prompt: "Backup passphrase: ", notDone: "nothing was backed up" }): Promise<string> {
  const first = checked(await readSecret(words.prompt, term), "the terminal");
  if (!confirm) return first;
  const second = await readSecret("The same passphrase again: ", term);
  if (second !== first) throw new QvmError("INVALID_ARGUMENT", `the two passphrases differ: ${words.notDone}; run the command again`);
  return first;
}
