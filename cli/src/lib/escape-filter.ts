// Filters a domain's output before it reaches the admin's terminal, as Qubes' qvm-run does by
// default when its output is a terminal (qrexec-client -t/-T). A domain could otherwise drive
// the terminal: write the clipboard (OSC 52), set the title, ask for reports that are typed back
// as input, redefine keys, or hide and rewrite what was printed before.
//
// What goes through: printable characters, \t, \n and \r. What does not:
//   - escape sequences, removed whole: ESC followed by a CSI (ESC [ … final), a string (OSC
//     ESC ], DCS ESC P, SOS ESC X, PM ESC ^, APC ESC _, up to BEL or ST), or any other ESC
//     sequence (ESC, intermediates 0x20–0x2F, a final 0x30–0x7E); the same with the 8-bit C1
//     introducers U+009B CSI, U+009D OSC, U+0090 DCS, U+0098 SOS, U+009E PM, U+009F APC;
//   - every other control, shown as "_": C0 but \t \n \r (BEL, backspace, form feed, ...), DEL,
//     and C1 U+0080–U+009F;
//   - bytes that are not UTF-8, shown as U+FFFD; and when the locale is not UTF-8, every
//     non-ASCII character, shown as "_" (an 8-bit terminal would take some of their bytes for
//     C1 controls).
// A sequence cut off by a malformed byte ends there, and that byte is filtered like any other.
// Sequences are bounded (MAX_SEQUENCE, MAX_STRING): past the bound, the filter gives up on the
// sequence and shows what follows as text, so an unterminated string hides a bounded amount.

const ESC = 0x1b;
const BEL = 0x07;
const CAN = 0x18;
const SUB = 0x1a;
const C1_ST = 0x9c;
const C1_CSI = 0x9b;
/** C1 introducers of strings: DCS, SOS, OSC, PM, APC. */
const C1_STRINGS = new Set([0x90, 0x98, 0x9d, 0x9e, 0x9f]);
/** ESC + these start a string: DCS P, SOS X, OSC ], PM ^, APC _. */
const ESC_STRINGS = new Set(["P", "X", "]", "^", "_"].map((c) => c.charCodeAt(0)));

/** Longest CSI or other ESC sequence (characters) before the filter stops treating it as one. */
export const MAX_SEQUENCE = 256;
/** Longest OSC/DCS/SOS/PM/APC string (characters) the filter swallows while waiting for its end. */
export const MAX_STRING = 64 * 1024;

/** Where the filter is: in text, or inside a sequence it is dropping. */
const State = { Ground: 0, Esc: 1, EscIntermediate: 2, Csi: 3, Str: 4, StrEsc: 5 } as const;
type State = (typeof State)[keyof typeof State];

const REPLACEMENT = "_";
/** In the ground state, a chunk without any of these is passed as it is (UTF-8 mode). */
const NEEDS_WORK = /[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]/;

export interface EscapeFilterOptions {
  /** Whether the terminal reads UTF-8 (default: the locale says so, see localeIsUtf8). */
  utf8?: boolean;
}

/** Whether the environment's locale (LC_ALL, else LC_CTYPE, else LANG) is a UTF-8 one. */
export function localeIsUtf8(env: NodeJS.ProcessEnv = process.env): boolean {
  const locale = env.LC_ALL || env.LC_CTYPE || env.LANG || "";
  return /utf-?8/i.test(locale);
}

/** A streaming filter: feed it chunks as they come (sequences may span chunks), then end(). */
export class EscapeFilter {
  private readonly decoder = new TextDecoder("utf-8", { fatal: false, ignoreBOM: true });
  private readonly utf8: boolean;
  private state: State = State.Ground;
  private length = 0;

  constructor(opts: EscapeFilterOptions = {}) {
    this.utf8 = opts.utf8 ?? localeIsUtf8();
  }

  /** Filters one chunk; returns what may be written to the terminal (possibly empty). */
  push(chunk: Uint8Array): Buffer {
    return this.filter(this.decoder.decode(chunk, { stream: true }));
  }

  /** Flushes what is left: an incomplete UTF-8 character shows as U+FFFD, an open sequence is dropped. */
  end(): Buffer {
    const out = this.filter(this.decoder.decode());
    this.state = State.Ground;
    this.length = 0;
    return out;
  }

  private filter(text: string): Buffer {
    if (this.state === State.Ground && this.utf8 && !NEEDS_WORK.test(text)) return Buffer.from(text, "utf8");
    let out = "";
    for (const ch of text) {
      const c = ch.codePointAt(0)!;
      // A character that ends a sequence badly is processed again from the ground state.
      for (let again = true; again; ) {
        again = false;
        switch (this.state) {
          case State.Ground:
            out += this.ground(ch, c);
            break;
          case State.Esc:
            if (c === 0x5b /* [ */) this.enter(State.Csi);
            else if (ESC_STRINGS.has(c)) this.enter(State.Str);
            else if (c >= 0x20 && c <= 0x2f) this.enter(State.EscIntermediate);
            else if (c >= 0x30 && c <= 0x7e) this.state = State.Ground;
            else again = this.abandon();
            break;
          case State.EscIntermediate:
            if (c >= 0x20 && c <= 0x2f) again = this.grow(MAX_SEQUENCE);
            else if (c >= 0x30 && c <= 0x7e) this.state = State.Ground;
            else again = this.abandon();
            break;
          case State.Csi:
            if (c >= 0x20 && c <= 0x3f) again = this.grow(MAX_SEQUENCE);
            else if (c >= 0x40 && c <= 0x7e) this.state = State.Ground;
            else again = this.abandon();
            break;
          case State.Str:
            if (c === BEL || c === C1_ST || c === CAN || c === SUB) this.state = State.Ground;
            else if (c === ESC) this.state = State.StrEsc;
            else again = this.grow(MAX_STRING);
            break;
          case State.StrEsc:
            // ESC \ is ST; any other ESC ends the string and starts a new sequence.
            if (c === 0x5c /* \ */) this.state = State.Ground;
            else {
              this.enter(State.Esc);
              again = true;
            }
            break;
        }
      }
    }
    return Buffer.from(out, "utf8");
  }

  private ground(ch: string, c: number): string {
    const starts = c === ESC ? State.Esc : c === C1_CSI ? State.Csi : C1_STRINGS.has(c) ? State.Str : undefined;
    if (starts !== undefined) {
      this.enter(starts);
      return "";
    }
    if (c === 0x09 || c === 0x0a || c === 0x0d) return ch;
    if (c < 0x20 || (c >= 0x7f && c <= 0x9f)) return REPLACEMENT;
    if (c > 0x7f && !this.utf8) return REPLACEMENT;
    return ch;
  }

  private enter(state: State): void {
    this.state = state;
    this.length = 0;
  }

  /** One more character inside a sequence; past `max`, the sequence is given up (the character is shown). */
  private grow(max: number): boolean {
    if (++this.length <= max) return false;
    return this.abandon();
  }

  /** Leaves a malformed or overlong sequence (dropped so far); the current character is processed again. */
  private abandon(): boolean {
    this.state = State.Ground;
    this.length = 0;
    return true;
  }
}

/**
 * Which of `qvm run`'s output streams are filtered. `flag` is --filter-escape-chars (true),
 * --no-filter-escape-chars (false) or neither (undefined: each stream that is a terminal). With a
 * pty nothing is: the user asked for a terminal session with the program, whose escape
 * sequences draw it (a shell's line editing, an editor, colors), as over ssh.
 */
export function escapeFiltering(o: { flag: boolean | undefined; pty: boolean; stdoutIsTTY: boolean; stderrIsTTY: boolean }): { stdout: boolean; stderr: boolean } {
  if (o.pty) return { stdout: false, stderr: false };
  return { stdout: o.flag ?? o.stdoutIsTTY, stderr: o.flag ?? o.stderrIsTTY };
}
