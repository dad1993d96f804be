// Raw mode for `qvm run -p` with a pty and for `qvm console`, restored on every way out: normal
// return, error, signal, and process.exit (the "exit" handler runs synchronously).

export interface RawModeStream {
  isTTY?: boolean;
  isRaw?: boolean;
  setRawMode?(mode: boolean): unknown;
}

/** Puts `stdin` in raw mode if it is a terminal; returns an idempotent restore function. */
export function enterRawMode(stdin: RawModeStream = process.stdin as RawModeStream): () => void {
  if (!stdin.isTTY || !stdin.setRawMode) return () => {};
  const was = Boolean(stdin.isRaw);
  stdin.setRawMode(true);
  let restored = false;
  const restore = () => {
    if (restored) return;
    restored = true;
    process.removeListener("exit", restore);
    try {
      stdin.setRawMode?.(was);
    } catch {
      // the terminal is gone
    }
  };
  process.on("exit", restore);
  return restore;
}

/** The terminal's size, from whichever standard stream is a terminal; 24x80 if none is. */
export function windowSize(): { rows: number; cols: number } {
  for (const s of [process.stdout, process.stderr]) {
    if (s.isTTY && s.columns && s.rows) return { rows: s.rows, cols: s.columns };
  }
  return { rows: 24, cols: 80 };
}

/** Asks a yes/no question on stderr and reads one line from stdin; true only for y or yes. */
export async function confirm(question: string, stdin: NodeJS.ReadableStream = process.stdin): Promise<boolean> {
  process.stderr.write(`${question} [y/N] `);
  const answer = await new Promise<string>((resolve) => {
    let buf = "";
    const done = () => {
      stdin.removeListener("data", onData);
      stdin.removeListener("end", done);
      stdin.pause();
      resolve(buf);
    };
    const onData = (chunk: Buffer | string) => {
      buf += chunk.toString();
      const nl = buf.indexOf("\n");
      if (nl !== -1) {
        buf = buf.slice(0, nl);
        done();
      }
    };
    stdin.on("data", onData);
    stdin.once("end", done);
    stdin.resume();
  });
  return /^y(es)?$/i.test(answer.trim());
}
