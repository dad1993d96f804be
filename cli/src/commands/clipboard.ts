import { Args, Flags } from "@oclif/core";
import type { AdminClient, adminV1 } from "@qvm/protocol";
import { MAX_CLIPBOARD_BYTES, QvmError, isQvmError } from "@qvm/protocol/contracts";
import { QvmCommand, example } from "../base.js";

type Action = "show" | "copy" | "paste" | "set" | "take";
const ACTIONS: readonly Action[] = ["show", "copy", "paste", "set", "take"];

/** `qvm clipboard show`: where the content came from and how big it is, never the content. */
export function describeClipboard(s: adminV1.ClipboardState): string {
  if (!s.size) return "The global clipboard is empty.\n";
  const from = s.source === "dom0" ? "dom0 (this desktop)" : s.source;
  const when = s.copiedAtMs ? `, copied at ${new Date(s.copiedAtMs).toISOString()}` : "";
  return `The global clipboard holds ${bytes(s.size)} from ${from}${when}.\n`;
}

const bytes = (n: number) => (n === 1 ? "1 byte" : `${n} bytes`);

export default class Clipboard extends QvmCommand {
  static override summary = "Show, copy into, paste from, set or take the global inter-domain clipboard.";
  static override description = `Qubes' secure copy and paste between domains, as Ctrl-Shift-C and Ctrl-Shift-V do it in the web shell (docs/gui.md). qvmd holds one global clipboard: at most ${MAX_CLIPBOARD_BYTES} bytes of text and the domain it came from. It lives in qvmd's memory only; a qvmd restart empties it.

  qvm clipboard [show] [--json]        where it came from and its size (never the content)
  qvm clipboard copy VM [--window N]   a window's selection into it (Ctrl-Shift-C)
  qvm clipboard paste VM [--window N]  into a window's selection, then wipe it (Ctrl-Shift-V)
  qvm clipboard set [--text TEXT]      text from this desktop (stdin, or TEXT); source dom0
  qvm clipboard take                   the content to stdout, and wipe it

copy and paste act on VM's window N (as \`qvm run --gui\` printed it, and as the web shell's frame shows it); without --window, on VM's only window. copy replaces what the clipboard held; a selection larger than ${MAX_CLIPBOARD_BYTES} bytes empties it and fails.

A paste asks the qrexec policy for qubes.ClipboardPaste from the clipboard's source to VM (dom0 is @adminvm there). allow pastes; ask pastes too, since running the command is your answer, but only into a domain the ask would offer, never back into the domain the text came from; deny or no rule refuses: "Pasting from A to B is denied by policies". The default policy asks for every paste (see \`qvm policy check qubes.ClipboardPaste SOURCE VM\`). After a paste the clipboard is wiped; then paste in the window as usual (Ctrl-V).

set and take are the way between this desktop and the domains: set puts text in with source dom0 (refused beyond ${MAX_CLIPBOARD_BYTES} bytes, which also empties the clipboard); take writes the content to stdout as it is (no newline added) and wipes it. Both need no policy: this desktop is dom0.`;
  static override usage = ["[show] [--json]", "copy VM [--window N]", "paste VM [--window N]", "set [--text TEXT]", "take"];
  static override examples = [
    example("", "Where the clipboard's content came from, and its size."),
    example("copy work", "work's only window's selection into the global clipboard."),
    example("paste vault --window 2", "Into vault's window 2 (if the policy allows), then wipe it."),
    example("copy work && qvm clipboard paste personal", "From work to personal in one go."),
    example("set --text 'hunter2' && qvm clipboard paste vault", "A password from this desktop into vault."),
    example("set < notes.txt", "A file's text (at most 64000 bytes), source dom0."),
    example("take | wl-copy", "The content into this desktop's own clipboard; the global one is wiped."),
  ];
  static override strict = false;
  // ignoreStdin: oclif would otherwise take a missing argument from stdin, which is set's text.
  static override args = {
    action: Args.string({ description: "show (default), copy, paste, set or take.", required: false, ignoreStdin: true }),
    vm: Args.string({ description: "copy, paste: the domain.", required: false, ignoreStdin: true }),
  };
  static override flags = {
    window: Flags.integer({ char: "w", description: "copy, paste: the domain's window N (default: its only window).", min: 1, helpValue: "N" }),
    text: Flags.string({ description: "set: this text instead of stdin.", helpValue: "TEXT" }),
    json: Flags.boolean({ description: "show: print the state as JSON (source, size, copiedAtMs)." }),
  };

  async run(): Promise<void> {
    const { argv, flags } = await this.parse(Clipboard);
    const [word = "show", vm, ...rest] = argv as string[];
    const action = ACTIONS.find((a) => a === word);
    if (!action) throw new QvmError("INVALID_ARGUMENT", `unknown action ${JSON.stringify(word)}: use show, copy, paste, set or take (qvm clipboard ACTION ...)`);
    const misplaced = (
      [
        ["--window", flags.window !== undefined, ["copy", "paste"]],
        ["--text", flags.text !== undefined, ["set"]],
        ["--json", flags.json, ["show"]],
      ] as const
    ).find(([, given, only]) => given && !(only as readonly string[]).includes(action));
    if (misplaced) throw new QvmError("INVALID_ARGUMENT", `${misplaced[0]} goes with ${misplaced[2].join(" or ")}, not ${action}`);
    const needsVm = action === "copy" || action === "paste";
    if (needsVm && !vm) throw new QvmError("INVALID_ARGUMENT", `${action} needs a domain: qvm clipboard ${action} VM [--window N]`);
    const extra = needsVm ? rest : [vm, ...rest].filter((w) => w !== undefined);
    if (extra.length) throw new QvmError("INVALID_ARGUMENT", `${action} takes ${needsVm ? "one domain" : "no argument"} (got ${JSON.stringify(extra.join(" "))})${action === "set" ? "; give the text on stdin or with --text" : ""}`);

    switch (action) {
      case "show": {
        const state = await (await this.admin()).getClipboard({});
        if (flags.json) this.printJson(state);
        else this.print(describeClipboard(state));
        return;
      }
      case "copy": {
        const admin = await this.admin();
        const window = flags.window ?? (await onlyWindow(admin, vm!, "copy"));
        const state = await admin.clipboardCopy({ domain: vm!, from: { $case: "windowId", value: window } });
        this.print(`Copied ${bytes(state.size)} from ${vm}'s window ${window} to the global clipboard; paste with \`qvm clipboard paste VM\` or Ctrl-Shift-V in a window.\n`);
        return;
      }
      case "paste": {
        const admin = await this.admin();
        const window = flags.window ?? (await onlyWindow(admin, vm!, "paste"));
        const r = await admin.clipboardPaste({ domain: vm!, into: { $case: "windowId", value: window } }).catch(async (err: unknown) => {
          if (!isQvmError(err, "PERMISSION_DENIED")) throw err;
          // A refused paste leaves the clipboard as it was: its source is the one the policy was asked about.
          const source = (await admin.getClipboard({}).catch(() => undefined))?.source || "SOURCE";
          throw new QvmError(err.code, `${err.message} (see \`qvm policy check qubes.ClipboardPaste ${source} ${vm}\`)`);
        });
        this.print(`Pasted the global clipboard from ${r.source} into ${vm}'s window ${window} and wiped it; paste it there with Ctrl-V.\n`);
        return;
      }
      case "set": {
        const data = flags.text !== undefined ? Buffer.from(flags.text) : await readStdin();
        await (await this.admin()).setClipboard({ data });
        return;
      }
      case "take": {
        // As it is: bytes, no newline added.
        process.stdout.write((await (await this.admin()).takeClipboard({})).data);
        return;
      }
    }
  }
}

/** The domain's window when it has exactly one; otherwise an error that lists them and says how to choose. */
async function onlyWindow(admin: AdminClient, vm: string, action: string): Promise<number> {
  const { windows } = await admin.listWindows({ domain: vm });
  if (windows.length === 1) return windows[0]!.windowId;
  if (!windows.length) throw new QvmError("FAILED_PRECONDITION", `${vm} has no window to ${action}: open one with \`qvm run --gui ${vm} -- PROGRAM\``);
  const list = windows.map((w) => `${w.windowId} (${w.program})`).join(", ");
  throw new QvmError("INVALID_ARGUMENT", `${vm} has ${windows.length} windows: ${list}; choose one with --window N`);
}

/** stdin, up to one byte more than the clipboard holds (qvmd refuses that with its own message, and empties the clipboard). */
async function readStdin(): Promise<Buffer> {
  if (process.stdin.isTTY) throw new QvmError("INVALID_ARGUMENT", "give the text on stdin (e.g. `wl-paste | qvm clipboard set`) or with --text TEXT");
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of process.stdin as AsyncIterable<Buffer>) {
    chunks.push(chunk);
    size += chunk.length;
    if (size > MAX_CLIPBOARD_BYTES) break;
  }
  return Buffer.concat(chunks).subarray(0, MAX_CLIPBOARD_BYTES + 1);
}
