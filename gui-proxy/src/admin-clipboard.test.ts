// The admin-API clipboard backend against a fake admin client (qvmd's clipboard itself is tested
// in host-agent): each request as the RPC qvmd gets (the oneofs for a window and a terminal), the
// answers mapped back, qvmd's refusals passed through, and the state watched through the
// `clipboard` event and qvmd's return after a restart.
import { EventEmitter } from "node:events";
import { describe, expect, it } from "vitest";
import { QvmError, eventTypeFromWord } from "@qvm/protocol";
import { adminClipboard, type ClipboardAdmin } from "./admin-clipboard.js";

class FakeCall extends EventEmitter {
  cancelled = false;
  cancel(): void {
    this.cancelled = true;
  }
}

function fakeAdmin() {
  const f = { requests: [] as [string, unknown][], events: [] as FakeCall[], admin: {} as ClipboardAdmin };
  const state = { source: "work", size: 5, copiedAtMs: 1764500000000 };
  const record =
    <T>(name: string, answer: T) =>
    async (req: unknown) => {
      f.requests.push([name, req]);
      return answer;
    };
  f.admin = {
    clipboardCopy: record("copy", state),
    clipboardPaste: async (req: { domain: string }) => {
      f.requests.push(["paste", req]);
      if (req.domain === "vault") throw new QvmError("PERMISSION_DENIED", "Pasting from work to vault is denied by policies");
      return { data: Buffer.from("hello"), source: "work" };
    },
    getClipboard: record("get", state),
    setClipboard: record("set", { source: "dom0", size: 3, copiedAtMs: 7 }),
    takeClipboard: record("take", { data: Buffer.from("abc"), source: "dom0" }),
    watchEvents: () => {
      const c = new FakeCall();
      f.events.push(c);
      return c;
    },
    getDaemonInfo: async () => ({}),
  } as unknown as ClipboardAdmin;
  return f;
}

describe("the admin API's clipboard", () => {
  it("sends each request as qvmd's RPC and maps the answers back", async () => {
    const f = fakeAdmin();
    const c = adminClipboard(f.admin);
    expect(await c.state()).toEqual({ source: "work", size: 5, copiedAtMs: 1764500000000 });
    await c.copy("work", { window: 3 });
    await c.copy("work", { text: Buffer.from("sel") });
    expect(await c.paste("personal", { window: 4 })).toEqual({ data: Buffer.from("hello"), source: "work" });
    await c.paste("personal", "terminal");
    expect(await c.set(Buffer.from("abc"))).toEqual({ source: "dom0", size: 3, copiedAtMs: 7 });
    expect(await c.take()).toEqual({ data: Buffer.from("abc"), source: "dom0" });
    expect(f.requests).toEqual([
      ["get", {}],
      ["copy", { domain: "work", from: { $case: "windowId", value: 3 } }],
      ["copy", { domain: "work", from: { $case: "terminal", value: Buffer.from("sel") } }],
      ["paste", { domain: "personal", into: { $case: "windowId", value: 4 } }],
      ["paste", { domain: "personal", into: { $case: "terminal", value: true } }],
      ["set", { data: Buffer.from("abc") }],
      ["take", {}],
    ]);
    await expect(c.paste("vault", "terminal")).rejects.toMatchObject({ code: "PERMISSION_DENIED", message: "Pasting from work to vault is denied by policies" });
  });

  it("says the state changed on a clipboard event and when qvmd is back, not on other events", async () => {
    const f = fakeAdmin();
    let changes = 0;
    const stop = adminClipboard(f.admin).watch(() => changes++);
    const feed = f.events[0]!;
    for (const word of ["clipboard", "window-open", "domain-start", "clipboard"] as const) feed.emit("data", { type: eventTypeFromWord(word), domain: "", fields: {} });
    expect(changes).toBe(2);
    feed.emit("error", new Error("Connection dropped"));
    await expect.poll(() => changes).toBe(3); // back: qvmd's clipboard starts empty
    stop();
    expect(f.events.at(-1)!.cancelled).toBe(true);
  });
});
