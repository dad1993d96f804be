// scripts/install-system-deps.sh takes Debian sid's mirror from the machine's own apt sources (or
// QVM_SID_MIRROR), never from a host name written in the repository: a table of apt setups, one-line
// and deb822, through `--print-sid-mirror` with QVM_APT_ETC pointing at a fake /etc/apt.
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { repoPath } from "./repo.js";

const script = repoPath("scripts/install-system-deps.sh");
let etc = "";
beforeEach(() => {
  etc = mkdtempSync(path.join(os.tmpdir(), "qvm-apt-etc-"));
  mkdirSync(path.join(etc, "sources.list.d"));
});
afterEach(() => rmSync(etc, { recursive: true, force: true }));

function printMirror(files: Record<string, string>, env: Record<string, string> = {}) {
  for (const [name, text] of Object.entries(files)) writeFileSync(path.join(etc, name), text);
  const childEnv: NodeJS.ProcessEnv = { ...process.env, QVM_APT_ETC: etc, ...env };
  if (!("QVM_SID_MIRROR" in env)) delete childEnv.QVM_SID_MIRROR;
  const r = spawnSync("bash", [script, "--print-sid-mirror"], { env: childEnv, encoding: "utf8" });
  return { code: r.status, stdout: r.stdout.trim(), stderr: r.stderr };
}

const M = "http://mirror.example/debian";
const SECURITY = "http://mirror.example/debian-security";

describe("install-system-deps.sh --print-sid-mirror", () => {
  it.each<[string, Record<string, string>, string]>([
    ["one-line sources.list", { "sources.list": `deb ${M} bookworm main\n` }, M],
    ["with options in brackets and a trailing slash", { "sources.list": `deb [arch=amd64 signed-by=/usr/share/keyrings/k.gpg] ${M}/ trixie main contrib\n` }, M],
    ["deb-src and comments skipped", { "sources.list": `# deb http://old.example/debian bookworm main\ndeb-src http://src.example/debian bookworm main\ndeb ${M} bookworm main\n` }, M],
    ["the security archive skipped", { "sources.list": `deb ${SECURITY} bookworm-security main\ndeb ${M} bookworm-updates main\n` }, M],
    ["a third-party archive skipped", { "sources.list": `deb https://third-party.example/apt nodistro main\ndeb ${M} sid main\n` }, M],
    ["a cdrom skipped", { "sources.list": `deb cdrom:[Debian GNU/Linux 12]/ bookworm main\ndeb ${M} bookworm main\n` }, M],
    ["aliases count (stable, unstable, testing)", { "sources.list": `deb ${M} stable main\n` }, M],
    [
      "deb822 .sources, as Debian 12 containers have",
      {
        "sources.list.d/debian.sources": `Types: deb\n# http://snapshot.example/archive/debian/20250520T000000Z\nURIs: ${M}\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\nTypes: deb\nURIs: ${SECURITY}\nSuites: bookworm-security\nComponents: main\n`,
      },
      M,
    ],
    [
      "deb822: a disabled stanza, a deb-src stanza and the security stanza first are skipped",
      {
        "sources.list.d/debian.sources": `Types: deb\nURIs: ${SECURITY}\nSuites: trixie-security\n\nTypes: deb\nURIs: http://disabled.example/debian\nSuites: trixie\nEnabled: no\n\nTypes: deb-src\nURIs: http://src.example/debian\nSuites: trixie\n\ntypes: deb deb-src\nuris: ${M}\nsuites: trixie\n`,
      },
      M,
    ],
    ["deb822 with several URIs takes the first", { "sources.list.d/a.sources": `Types: deb\nURIs: ${M} http://second.example/debian\nSuites: sid\n` }, M],
    [
      "sources.list before sources.list.d, and parts in name order",
      {
        "sources.list": `deb https://third-party.example/apt stable-ish main\n`,
        "sources.list.d/b.list": "deb http://b.example/debian bookworm main\n",
        "sources.list.d/a.sources": `Types: deb\nURIs: ${M}\nSuites: bookworm\n`,
      },
      M,
    ],
    ["files that are not .list or .sources are ignored", { "sources.list.d/old.list.disabled": "deb http://no.example/debian bookworm main\n", "sources.list.d/z.list": `deb ${M} bookworm main\n` }, M],
  ])("%s", (_what, files, want) => {
    const r = printMirror(files);
    expect(r.stderr).toBe("");
    expect(r).toMatchObject({ code: 0, stdout: want });
  });

  it("QVM_SID_MIRROR overrides apt's sources", () => {
    expect(printMirror({ "sources.list": `deb ${M} bookworm main\n` }, { QVM_SID_MIRROR: "http://override.example/debian" })).toMatchObject({ code: 0, stdout: "http://override.example/debian" });
  });

  it.each<[string, Record<string, string>]>([
    ["no sources at all", {}],
    ["only Ubuntu and third-party archives", { "sources.list": "deb http://archive.example/ubuntu noble main\ndeb https://third-party.example/apt nodistro main\n" }],
    ["only the security archive", { "sources.list.d/debian.sources": `Types: deb\nURIs: ${SECURITY}\nSuites: bookworm-security\n` }],
  ])("fails with what to do when apt has no Debian archive: %s", (_what, files) => {
    const r = printMirror(files);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr).toMatch(/no Debian archive in apt's sources .*: set QVM_SID_MIRROR/);
  });

  it("writes no archive host name of its own (it comes from the machine or QVM_SID_MIRROR)", () => {
    const text = readFileSync(script, "utf8");
    expect(text).not.toMatch(/https?:\/\/[a-z0-9.-]+\.(org|net|com|io)\b/i);
  });
});
