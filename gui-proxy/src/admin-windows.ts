// The window backend of `qvm shell`: qvmd's admin API (docs/admin-api.md, docs/gui.md).
// ListWindows gives the list (each entry checked against the page's schema: a window qvmd lists
// out of bounds is left out, not shown half-checked); window-open, window-close and a domain's
// stop in the event feed say when it changed; WindowStream carries a window's RFB bytes (qvmd
// dials the domain's hybrid vsock); ResizeWindow and CloseWindow are the user's two actions.
// The events come from a feed that outlives a qvmd restart (admin-events.ts): its watchers hear
// `lost` when qvmd goes and `back` when it answers again.
import { Duplex } from "node:stream";
import { eventTypeWord, type AdminClient, type adminV1 } from "@qvm/protocol";
import { QvmError, windowSummarySchema, type WindowSummary } from "@qvm/protocol/contracts";
import { AdminEventFeed } from "./admin-events.js";
import type { WindowBackend } from "./windows.js";

/** The admin calls the backend makes (an AdminClient; tests pass a fake). */
export type WindowAdmin = Pick<AdminClient, "listWindows" | "resizeWindow" | "closeWindow" | "windowStream" | "watchEvents" | "getDaemonInfo" | "errorOf">;

/** Events after which the window list may differ. */
const WINDOW_CHANGES = new Set(["window-open", "window-close", "domain-shutdown", "domain-start"]);
/** How long a window's RFB server has to say its first bytes. */
const FIRST_BYTES_MS = 15_000;

export function adminWindows(admin: WindowAdmin, log: (m: string) => void = () => {}, feed: AdminEventFeed = new AdminEventFeed(admin)): WindowBackend {
  return {
    list: async () => {
      const { windows } = await admin.listWindows({ domain: "" });
      const out: WindowSummary[] = [];
      for (const w of windows) {
        const r = windowSummarySchema.safeParse({ domain: w.domain, id: w.windowId, program: w.program, width: w.width, height: w.height });
        if (r.success) out.push(r.data);
        else log(`left out window ${JSON.stringify(w.domain).slice(0, 80)}/${w.windowId}: ${r.error.issues[0]?.message ?? "invalid"}`);
      }
      return out;
    },
    watch: (onChange) =>
      feed.subscribe({
        event: (ev: adminV1.Event) => {
          if (WINDOW_CHANGES.has(eventTypeWord(ev.type))) onChange("changed");
        },
        lost: () => onChange("lost"),
        back: () => onChange("back"),
      }),
    dial: (domain, id) => windowStream(admin, domain, id),
    resize: async (domain, id, width, height) => {
      await admin.resizeWindow({ domain, windowId: id, width, height });
    },
    close: async (domain, id) => {
      await admin.closeWindow({ domain, windowId: id });
    },
  };
}

/**
 * A window's WindowStream as a byte Duplex, resolved once the first bytes arrive (an RFB server
 * speaks first), so a window that cannot be reached fails the dial rather than the relay.
 * Back-pressure both ways: the gRPC stream pauses while the Duplex's reader lags, and writes wait
 * for the gRPC stream to drain.
 */
function windowStream(admin: WindowAdmin, domain: string, windowId: number): Promise<Duplex> {
  const call = admin.windowStream();
  call.write({ msg: { $case: "start", value: { domain, windowId } } });
  const stream = new Duplex({
    read: () => void call.resume(),
    write: (chunk: Buffer, _enc, done) => {
      if (call.write({ msg: { $case: "input", value: chunk } })) done();
      else call.once("drain", () => done());
    },
    final: (done) => {
      call.end();
      done();
    },
    destroy: (err, done) => {
      call.cancel();
      done(err);
    },
  });
  return new Promise((resolve, reject) => {
    let started = false;
    const timer = setTimeout(() => fail(new QvmError("AGENT_TIMEOUT", `window ${domain}/${windowId} sent nothing within ${FIRST_BYTES_MS} ms`)), FIRST_BYTES_MS);
    const fail = (err: Error) => {
      clearTimeout(timer);
      if (started) return void stream.destroy(err);
      // Nobody holds the stream yet: the dial fails instead.
      started = true;
      stream.destroy();
      reject(err);
    };
    call.on("data", (res: adminV1.WindowStreamResponse) => {
      if (!res.output.length) return;
      if (!stream.push(Buffer.from(res.output))) call.pause();
      if (!started) {
        started = true;
        clearTimeout(timer);
        resolve(stream);
      }
    });
    call.on("error", (err: Error) => fail(admin.errorOf(err)));
    call.on("end", () => {
      if (!started) fail(new QvmError("AGENT_UNAVAILABLE", `window ${domain}/${windowId}'s stream ended before it started`));
      else {
        clearTimeout(timer);
        stream.push(null);
      }
    });
  });
}
