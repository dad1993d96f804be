// qvmd's event feed across a restart: one stream shared by its listeners, `lost` when it ends,
// subscribed again with a growing wait, `back` once qvmd answers on the new stream; against a fake
// admin client, then against a real qvmd stopped (SIGTERM: its streams are cancelled) and killed
// (SIGKILL: the connection drops), and started again on the same directories.
import { EventEmitter } from "node:events";
import { afterAll, describe, expect, it } from "vitest";
import { AdminClient, adminSocketPath, domainClassFromWord, eventTypeFromWord, type adminV1 } from "@qvm/protocol";
import { removeTestDaemonDirs, startTestDaemon, testDaemonDirs, type TestDaemon } from "@qvm/host-agent/testing";
import { AdminEventFeed, type EventFeedAdmin } from "./admin-events.js";
import { adminWindows, type WindowAdmin } from "./admin-windows.js";
import type { WindowChange } from "./windows.js";

class FakeCall extends EventEmitter {
  cancelled = false;
  cancel(): void {
    this.cancelled = true;
  }
}

function fakeAdmin() {
  const f = { calls: [] as FakeCall[], up: true, probes: 0, admin: {} as EventFeedAdmin };
  f.admin = {
    watchEvents: () => {
      const c = new FakeCall();
      f.calls.push(c);
      return c;
    },
    getDaemonInfo: async () => {
      f.probes++;
      if (!f.up) throw new Error("qvmd is not reachable");
      return {};
    },
  } as unknown as EventFeedAdmin;
  return f;
}

const ev = (word: "window-open" | "domain-add"): adminV1.Event => ({ seq: 1, type: eventTypeFromWord(word), domain: "work", fields: {}, time: "" });

describe("the admin event feed", () => {
  it("shares one stream, says lost and back across a drop, and stops when nobody listens", async () => {
    const f = fakeAdmin();
    const feed = new AdminEventFeed(f.admin, [20, 40]);
    const a: string[] = [];
    const b: string[] = [];
    const stopA = feed.subscribe({ event: (e) => a.push(`event ${e.type}`), lost: () => a.push("lost"), back: () => a.push("back") });
    const stopB = feed.subscribe({ event: () => b.push("event"), lost: () => b.push("lost"), back: () => b.push("back") });
    expect(f.calls).toHaveLength(1);
    f.calls[0]!.emit("data", ev("window-open"));
    expect(a).toEqual([`event ${eventTypeFromWord("window-open")}`]);
    expect(b).toEqual(["event"]);
    // The stream drops while qvmd is away: lost once, then attempts until qvmd answers.
    f.up = false;
    f.calls[0]!.emit("error", new Error("Connection dropped"));
    f.calls[0]!.emit("end"); // a second end of the same stream changes nothing
    expect(f.calls[0]!.cancelled).toBe(true);
    expect(a).toEqual([expect.stringMatching(/^event/), "lost"]);
    expect(feed.isDown).toBe(true);
    await expect.poll(() => f.probes).toBeGreaterThanOrEqual(2);
    expect(a.filter((x) => x === "lost")).toHaveLength(1);
    f.up = true;
    await expect.poll(() => a.at(-1)).toBe("back");
    expect(b.at(-1)).toBe("back");
    expect(feed.isDown).toBe(false);
    const live = f.calls.at(-1)!;
    live.emit("data", ev("domain-add"));
    expect(b.at(-1)).toBe("event");
    stopA();
    expect(live.cancelled).toBe(false);
    stopB();
    expect(live.cancelled).toBe(true);
    const n = f.calls.length;
    await new Promise((r) => setTimeout(r, 100));
    expect(f.calls).toHaveLength(n);
  });

  it("does not retry for listeners that left while qvmd was away", async () => {
    const f = fakeAdmin();
    const feed = new AdminEventFeed(f.admin, [30]);
    const stop = feed.subscribe({});
    f.up = false;
    f.calls[0]!.emit("error", new Error("gone"));
    stop();
    await new Promise((r) => setTimeout(r, 100));
    expect(f.calls).toHaveLength(1);
  });
});

describe("the window backend across a real qvmd restart", () => {
  const dirs = testDaemonDirs("feed");
  let d: TestDaemon | undefined;
  const admin = new AdminClient(adminSocketPath(dirs.runtimeDir));

  afterAll(async () => {
    await d?.stop();
    admin.close();
    removeTestDaemonDirs(dirs);
  });

  it("hears lost and back when qvmd is stopped or killed and started again", async () => {
    d = await startTestDaemon(dirs);
    const feed = new AdminEventFeed(admin);
    const events: string[] = [];
    const unsubscribe = feed.subscribe({ event: (e) => events.push(e.domain) });
    const heard: WindowChange[] = [];
    const stop = adminWindows(admin as WindowAdmin, () => {}, feed).watch((c) => heard.push(c));
    for (const how of ["stop", "kill"] as const) {
      // The stream is up: qvmd's events arrive.
      const name = `probe-${how}`;
      await d.client.createDomain({ name, class: domainClassFromWord("StandaloneVM"), template: "", label: "red", properties: {} });
      await expect.poll(() => events).toContain(name);
      heard.length = 0;
      await (how === "stop" ? d.stop() : d.kill());
      await expect.poll(() => heard, { timeout: 5000 }).toContain("lost");
      // Away for a while: attempts fail, and nothing says back.
      await new Promise((r) => setTimeout(r, 400));
      expect(heard).toEqual(["lost"]);
      d = await startTestDaemon(dirs);
      await expect.poll(() => heard, { timeout: 10_000 }).toEqual(["lost", "back"]);
    }
    stop();
    unsubscribe();
  });
});
