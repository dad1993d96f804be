// The clipboard backend of `qvm shell`: qvmd's global clipboard through the admin API
// (docs/web-shell.md, "Clipboard"): ClipboardCopy, ClipboardPaste, GetClipboard, SetClipboard and
// TakeClipboard; the `clipboard` event says when it changed, and qvmd coming back after a restart
// (its clipboard, held in memory only, is then empty) counts as a change too. qvmd checks the
// policy and the size; its refusals (PERMISSION_DENIED "Pasting from A to B is denied by
// policies", FAILED_PRECONDITION when empty, RESOURCE_EXHAUSTED over 64000 bytes) pass through.
import { eventTypeWord, type AdminClient, type adminV1 } from "@qvm/protocol";
import { AdminEventFeed } from "./admin-events.js";
import type { ClipboardBackend, ClipboardState } from "./clipboard.js";

/** The admin calls the backend makes (an AdminClient; tests pass a fake). */
export type ClipboardAdmin = Pick<AdminClient, "clipboardCopy" | "clipboardPaste" | "getClipboard" | "setClipboard" | "takeClipboard" | "watchEvents" | "getDaemonInfo">;

const stateOf = (s: adminV1.ClipboardState): ClipboardState => ({ source: s.source, size: s.size, copiedAtMs: Number(s.copiedAtMs) });

export function adminClipboard(admin: ClipboardAdmin, feed: AdminEventFeed = new AdminEventFeed(admin)): ClipboardBackend {
  return {
    state: async () => stateOf(await admin.getClipboard({})),
    watch: (onChange) =>
      feed.subscribe({
        event: (ev: adminV1.Event) => {
          if (eventTypeWord(ev.type) === "clipboard") onChange();
        },
        back: () => onChange(),
      }),
    copy: async (domain, from) =>
      stateOf(await admin.clipboardCopy({ domain, from: "window" in from ? { $case: "windowId", value: from.window } : { $case: "terminal", value: from.text } })),
    paste: async (domain, into) => {
      const r = await admin.clipboardPaste({ domain, into: into === "terminal" ? { $case: "terminal", value: true } : { $case: "windowId", value: into.window } });
      return { data: Buffer.from(r.data), source: r.source };
    },
    set: async (data) => stateOf(await admin.setClipboard({ data })),
    take: async () => {
      const r = await admin.takeClipboard({});
      return { data: Buffer.from(r.data), source: r.source };
    },
  };
}
