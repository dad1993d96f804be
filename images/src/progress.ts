// Progress on the terminal for long builds: one line per step with its elapsed time; on a TTY the
// running step shows a live timer.
export interface Progress {
  step<T>(title: string, work: () => Promise<T>): Promise<T>;
  info(msg: string): void;
}

export function terminalProgress(stream: NodeJS.WriteStream = process.stderr, prefix = "qvm-images"): Progress {
  const tty = stream.isTTY === true;
  return {
    async step(title, work) {
      const t0 = Date.now();
      const secs = () => ((Date.now() - t0) / 1000).toFixed(1);
      let timer: NodeJS.Timeout | undefined;
      if (tty) {
        stream.write(`${prefix}: ${title} …`);
        timer = setInterval(() => stream.write(`\r\x1b[K${prefix}: ${title} … ${secs()}s`), 250);
      } else {
        stream.write(`${prefix}: ${title} …\n`);
      }
      const end = (word: string) => {
        if (timer) clearInterval(timer);
        stream.write(`${tty ? "\r\x1b[K" : ""}${prefix}: ${title} ${word} (${secs()}s)\n`);
      };
      try {
        const r = await work();
        end("done");
        return r;
      } catch (err) {
        end("FAILED");
        throw err;
      }
    },
    info(msg) {
      stream.write(`${prefix}: ${msg}\n`);
    },
  };
}

export const silentProgress: Progress = { step: (_t, work) => work(), info: () => {} };
