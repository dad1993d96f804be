// The real `qvm` (the ./qvm wrapper and the bundle `node scripts/build.mjs cli` makes) against a
// fake qvmd: a grpc-js server with the QvmAdmin service on a temporary socket, found through
// QVM_RUNTIME_DIR. Checks what users see: stdout, one-line errors on stderr, exit codes.
import { spawn, execFileSync } from "node:child_process";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { domainClassFromWord, type adminV1 } from "@qvm/protocol";
import { fakeDomain } from "./test-support/domains.js";
import { startFakeQvmd, type FakeQvmd } from "./test-support/fake-qvmd.js";

const repo = path.resolve(import.meta.dirname, "../..");
const qvmWrapper = path.join(repo, "qvm");

interface Result {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

let fake: FakeQvmd;

type RunOpts = { input?: string; env?: NodeJS.ProcessEnv; cwd?: string; during?: (child: ReturnType<typeof spawn>) => void };

/** Runs ./qvm with `args`, `input` on stdin; `during` gets the child once it is spawned. */
function qvm(args: string[], opts: RunOpts = {}): Promise<Result> {
  return run(qvmWrapper, args, opts);
}

/** Runs `cmd` as qvm would be run; killed after 15 s so that a failing test leaves nothing behind. */
function run(cmd: string, args: string[], opts: RunOpts = {}): Promise<Result> {
  const env: NodeJS.ProcessEnv = { ...process.env, QVM_RUNTIME_DIR: fake.runtimeDir, ...opts.env };
  // As a user runs it: not vitest's NODE_ENV.
  delete env.NODE_ENV;
  const t0 = Date.now();
  const child = spawn(cmd, args, { env, cwd: opts.cwd, stdio: ["pipe", "pipe", "pipe"] });
  const killer = setTimeout(() => child.kill("SIGKILL"), 15_000);
  child.on("close", () => clearTimeout(killer));
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  if (opts.input !== undefined) child.stdin.end(opts.input);
  opts.during?.(child);
  return new Promise((resolve) => child.on("close", (code, signal) => resolve({ code, signal, stdout, stderr, ms: Date.now() - t0 })));
}

const sortedCalls = (method: string) => fake.calls.filter(([m]) => m === method).map(([, r]) => r);

beforeAll(async () => {
  execFileSync(process.execPath, ["scripts/build.mjs", "cli"], { cwd: repo, stdio: "inherit" });
  fake = await startFakeQvmd();
}, 120_000);
afterAll(async () => {
  await fake?.close();
});
beforeEach(() => {
  fake.domains = [
    fakeDomain("work", { state: "Running", label: "blue", netvm: "sys-net", tags: ["office"] }),
    fakeDomain("debian-12", { class: "TemplateVM", label: "black", template: "" }),
    fakeDomain("sys-net", { state: "Paused", label: "red", template: "debian-12" }),
  ];
  fake.properties = new Map([
    [
      "work",
      [
        { name: "memory", value: "400", type: "int", source: "template", doc: "MiB" },
        { name: "label", value: "blue", type: "label", source: "own", doc: "" },
        { name: "netvm", value: "sys-net", type: "domain", source: "global", doc: "" },
      ],
    ],
    ["", [{ name: "default_template", value: "debian-12", type: "domain", source: "own", doc: "" }]],
  ]);
  fake.calls = [];
  fake.execStarts = [];
  fake.execSignals = [];
});

describe("qvm ls", () => {
  it("prints the aligned table, sorted, '-' for empty, no color when not a terminal", async () => {
    const r = await qvm(["ls"]);
    expect(r).toMatchObject({ code: 0, stderr: "" });
    expect(r.stdout).toBe(
      [
        "NAME       STATE    CLASS       LABEL  TEMPLATE   NETVM",
        "debian-12  Halted   TemplateVM  black  -          -",
        "sys-net    Paused   AppVM       red    debian-12  -",
        "work       Running  AppVM       blue   debian-12  sys-net",
        "",
      ].join("\n"),
    );
  });

  it("filters by state and tag, and --json prints the Domain objects", async () => {
    expect((await qvm(["ls", "--running", "--paused"])).stdout.split("\n").slice(1, -1).map((l) => l.split(" ")[0])).toEqual(["sys-net", "work"]);
    const r = await qvm(["ls", "--json", "--tags", "office", "--tags", "nothing"]);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual([fake.domains[0]]);
    expect(Object.keys(JSON.parse(r.stdout)[0])).toContain("lastStopReason");
    // Qubes' words, not the code's field name or the enum's number.
    expect(JSON.parse(r.stdout)[0]).toMatchObject({ class: "AppVM", state: "Running" });
    expect(JSON.parse(r.stdout)[0]).not.toHaveProperty("klass");
  });

  it("copes with 100 domains", async () => {
    fake.domains = Array.from({ length: 100 }, (_, i) => fakeDomain(`d${String(i).padStart(3, "0")}`));
    const r = await qvm(["ls"]);
    expect(r.code).toBe(0);
    expect(r.stdout.split("\n")).toHaveLength(102);
  });
});

describe("qvm prefs", () => {
  it("lists with the D marker, prints one value, sets, resets", async () => {
    expect((await qvm(["prefs", "work"])).stdout).toBe("label   -  blue\nmemory  D  400\nnetvm   D  sys-net\n");
    expect((await qvm(["prefs", "work", "memory"])).stdout).toBe("400\n");
    expect(await qvm(["prefs", "work", "memory", "800"])).toMatchObject({ code: 0, stdout: "", stderr: "" });
    expect(await qvm(["prefs", "-D", "work", "memory"])).toMatchObject({ code: 0 });
    expect(sortedCalls("setProperty")).toEqual([{ domain: "work", name: "memory", value: "800" }]);
    expect(sortedCalls("resetProperty")).toEqual([{ domain: "work", name: "memory" }]);
  });

  it("works on the global properties with --global, and prints JSON", async () => {
    expect((await qvm(["prefs", "--global"])).stdout).toBe("default_template  -  debian-12\n");
    await qvm(["prefs", "--global", "default_template", "fedora"]);
    expect(sortedCalls("setProperty")).toEqual([{ domain: "", name: "default_template", value: "fedora" }]);
    expect(JSON.parse((await qvm(["prefs", "work", "memory", "--json"])).stdout)).toEqual({ name: "memory", value: "400", type: "int", source: "template", doc: "MiB" });
  });

  it("maps qvmd's INVALID_ARGUMENT to exit 2 with one line", async () => {
    const r = await qvm(["prefs", "work", "colour"]);
    expect(r).toMatchObject({ code: 2, stdout: "", stderr: 'qvm: unknown property "colour"\n' });
  });
});

describe("qvm create", () => {
  it("sends the class, template, label and properties", async () => {
    const r = await qvm(["create", "new", "-l", "green", "-t", "debian-12", "--prop", "memory=800", "--prop", "netvm="]);
    expect(r).toMatchObject({ code: 0, stderr: "" });
    expect(sortedCalls("createDomain")).toEqual([{ name: "new", class: domainClassFromWord("AppVM"), template: "debian-12", label: "green", properties: { memory: "800", netvm: "" } }]);
    await qvm(["create", "--class", "TemplateVM", "--label", "black", "tpl"]);
    expect(sortedCalls("createDomain")[1]).toMatchObject({ name: "tpl", class: domainClassFromWord("TemplateVM"), template: "" });
  });

  it("refuses a missing label or a bad class before calling qvmd: exit 2, one line", async () => {
    for (const args of [["create", "x"], ["create", "x", "-l", "red", "--class", "RemoteVM"], ["create", "x", "-l", "red", "--prop", "memory"]]) {
      const r = await qvm(args);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/^qvm: [^\n]+\n$/);
    }
    expect(sortedCalls("createDomain")).toEqual([]);
  });

  it("reports ALREADY_EXISTS as exit 1", async () => {
    expect(await qvm(["create", "work", "-l", "red"])).toMatchObject({ code: 1, stderr: 'qvm: domain "work" already exists\n' });
  });
});

describe("qvm run", () => {
  it("-p passes stdin and output, and exits with the program's exit code", async () => {
    const r = await qvm(["run", "-p", "work", "--", "cat"], { input: "hello\n" });
    expect(r).toMatchObject({ code: 3, stdout: "HELLO\n", stderr: "err" });
    expect(fake.execStarts[0]).toMatchObject({ domain: "work", argv: ["cat"], shellCommand: "", pty: false, noAutostart: false });
  });

  it("one word is a shell command; several words or -- are argv; flags after the VM belong to the command", async () => {
    await qvm(["run", "-p", "work", "ls -l | wc -l"], { input: "" });
    await qvm(["run", "-u", "root", "-n", "work", "ls", "-u", "-p"], { input: "" });
    expect(fake.execStarts.map((s) => [s.argv, s.shellCommand, s.user, s.noAutostart])).toEqual([
      [[], "ls -l | wc -l", "", false],
      [["ls", "-u", "-p"], "", "root", true],
    ]);
  });

  it("without -p drops the output but still exits with the program's code", async () => {
    expect(await qvm(["run", "work", "--", "exit", "7"], { input: "x" })).toMatchObject({ code: 7, stdout: "", stderr: "" });
  });

  it("exits 128+N when the program is killed by signal N", async () => {
    expect((await qvm(["run", "-p", "work", "--", "kill", "SIGKILL"], { input: "" })).code).toBe(137);
  });

  it("passes SIGTERM to the program (no pty)", async () => {
    const r = await qvm(["run", "-p", "work", "--", "sleep"], {
      during: (child) => {
        const poll = setInterval(() => {
          if (fake.execStarts.length) {
            clearInterval(poll);
            child.kill("SIGTERM");
          }
        }, 20);
      },
    });
    expect(fake.execSignals).toEqual(["SIGTERM"]);
    expect(r.code).toBe(143);
  });

  it("reports an unknown domain in one line", async () => {
    expect(await qvm(["run", "-p", "nope", "--", "true"], { input: "" })).toMatchObject({ code: 1, stderr: 'qvm: domain "nope" does not exist\n' });
  });

  // script(1) gives qvm a terminal: a pty, raw mode while the program runs, restored after.
  // script(1) (Debian bsdutils, installed by scripts/install-system-deps.sh) gives the CLI a terminal.
  it("uses a pty on a terminal: window size sent, raw mode while running, restored after", async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "qvm-pty-"));
    try {
      const sh = `stty rows 33 cols 111; (sleep 0.7; stty -a < /dev/tty > ${dir}/during) & ${qvmWrapper} run -p work -- wait 1500; echo "rc=$?"; stty -a > ${dir}/after`;
      const r = await run("script", ["-qec", sh, "/dev/null"]);
      expect(r.stdout).toContain("rc=0");
      expect(fake.execStarts[0]).toMatchObject({ pty: true, window: { rows: 33, cols: 111 } });
      expect(readFileSync(`${dir}/during`, "utf8")).toMatch(/(^|\s)-icanon(\s|$)/m);
      expect(readFileSync(`${dir}/after`, "utf8")).toMatch(/(^|\s)icanon(\s|$)/m);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("qvm run: escape sequences from the domain", () => {
  // The fake echoes stdin upper-cased: an OSC title, a CSI color and a BEL come back as they went.
  const hostile = "x\x1b]0;fake title\x07y\x1b[31mz\x07!\n";

  it("are passed when qvm's output is not a terminal, and filtered there with --filter-escape-chars", async () => {
    expect((await qvm(["run", "-p", "work", "--", "cat"], { input: hostile })).stdout).toBe(hostile.toUpperCase());
    const r = await qvm(["run", "-p", "--filter-escape-chars", "work", "--", "cat"], { input: hostile });
    expect(r.stdout).toBe("XYZ_!\n");
    expect(fake.execStarts.at(-1)).toMatchObject({ pty: false });
  });

  it("--pty with --filter-escape-chars is refused", async () => {
    const r = await qvm(["run", "-p", "--pty", "--filter-escape-chars", "work", "--", "cat"], { input: "" });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^qvm: a pty's output is a terminal session and is not filtered/);
  });

  // script(1) gives qvm a terminal for stdout and stderr; stdin comes from a file (no pty then).
  it("are filtered by default on a terminal without a pty, and passed with --no-filter-escape-chars or a pty", async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "qvm-esc-"));
    try {
      writeFileSync(path.join(dir, "in"), hostile);
      const onTty = (flags: string) => run("script", ["-qec", `${qvmWrapper} run -p ${flags} work -- cat < ${dir}/in`, "/dev/null"]);
      const filtered = await onTty("--no-pty");
      expect(filtered.stdout).toContain("XYZ_!");
      expect(filtered.stdout).not.toContain("\x1b");
      expect(filtered.stdout).not.toContain("FAKE TITLE");
      const raw = await onTty("--no-pty --no-filter-escape-chars");
      expect(raw.stdout).toContain("X\x1b]0;FAKE TITLE\x07Y\x1b[31MZ");
      // With a pty (stdin redirected, so asked for with --pty) the session is the terminal's.
      const withPty = await onTty("--pty");
      expect(withPty.stdout).toContain("\x1b]0;FAKE TITLE\x07");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("qvm console", () => {
  it("passes input and output until qvmd closes the console, with a hint on stderr", async () => {
    const r = await qvm(["console", "work"], { input: "hello q" });
    expect(r).toMatchObject({ code: 0, stdout: "login: hello q" });
    expect(r.stderr).toBe("qvm: console of work; press Ctrl-] to detach\nqvm: qvmd closed the console of work\n");
  });

  it("detaches at Ctrl-] and exits 0, not sending what follows", async () => {
    const r = await qvm(["console", "work"], { input: "ab\x1dq" });
    expect(r.code).toBe(0);
    expect(r.stdout).not.toContain("q");
    expect(r.stderr).toMatch(/detached from the console of work\n$/);
  });

  it("reports an unknown domain in one line", async () => {
    const r = await qvm(["console", "nope"], { input: "" });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/qvm: domain "nope" does not exist\n$/);
  });
});

describe("lifecycle, tags, features, check, remove", () => {
  it("start reports each failure in one line, goes on, and exits with the first failure's code", async () => {
    const r = await qvm(["start", "work", "nope", "debian-12"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe('qvm: domain "work" is already running\nqvm: domain "nope" does not exist\n');
    expect(fake.domains.find((d) => d.name === "debian-12")?.state).toBe("Running");
    expect((await qvm(["start", "--skip-if-running", "work"])).code).toBe(0);
  });

  it("shutdown --all --wait shuts every domain that is not halted down, sending the flags", async () => {
    expect((await qvm(["shutdown", "--all", "--wait", "--exclude", "sys-net"])).code).toBe(0);
    expect(sortedCalls("shutdownDomain")).toEqual([{ name: "work", wait: true, force: false }]);
    expect((await qvm(["shutdown"])).code).toBe(2);
  });

  it("check answers with the exit code", async () => {
    expect(await qvm(["check", "work"])).toMatchObject({ code: 0, stdout: "work exists\n" });
    expect(await qvm(["check", "nope"])).toMatchObject({ code: 1, stdout: "nope does not exist\n" });
    expect(await qvm(["check", "--running", "sys-net"])).toMatchObject({ code: 0 });
    expect(await qvm(["check", "--running", "-q", "debian-12"])).toMatchObject({ code: 1, stdout: "" });
    expect((await qvm(["check", "--template", "debian-12"])).code).toBe(0);
  });

  it("tags and features", async () => {
    fake.tags.set("work", ["b", "a"]);
    expect((await qvm(["tags", "work"])).stdout).toBe("a\nb\n");
    expect((await qvm(["tags", "work", "list", "a", "zzz"])).code).toBe(1);
    await qvm(["tags", "work", "add", "x", "y"]);
    expect(sortedCalls("addTag")).toEqual([{ domain: "work", tag: "x" }, { domain: "work", tag: "y" }]);
    fake.features.set("work", { gui: "1" });
    expect((await qvm(["features", "work", "gui"])).stdout).toBe("1\n");
    expect((await qvm(["features", "work", "nope"])).code).toBe(1);
  });

  it("remove does not ask when stdin is not a terminal", async () => {
    expect((await qvm(["remove", "sys-net"], { input: "" })).code).toBe(0);
    expect(fake.domains.map((d) => d.name)).not.toContain("sys-net");
  });
});

describe("qvm firewall", () => {
  beforeEach(() => {
    fake.firewall = new Map();
  });
  const sets = () => sortedCalls("setFirewall").map((r) => (r as { rules: string[] }).rules);

  it("lists Qubes' columns, the raw API lines and JSON", async () => {
    fake.firewall.set("work", ["action=drop dst4=192.168.0.0/16", "action=accept dsthost=example.com proto=tcp dstports=443-443 comment=web only", "action=accept proto=icmp icmptype=8", "action=accept specialtarget=dns"]);
    const r = await qvm(["firewall", "work"]);
    expect(r).toMatchObject({ code: 0, stderr: "" });
    expect(r.stdout).toBe(
      [
        "NO  ACTION  HOST            PROTOCOL  PORT(S)  SPECIAL TARGET  ICMP TYPE  EXPIRE  COMMENT",
        "0   drop    192.168.0.0/16  -         -        -               -          -       -",
        "1   accept  example.com     tcp       443      -               -          -       web only",
        "2   accept  -               icmp      -        -               8          -       -",
        "3   accept  -               -         -        dns             -          -       -",
        "",
      ].join("\n"),
    );
    expect((await qvm(["firewall", "work", "list", "--raw"])).stdout).toBe(`${fake.firewall.get("work")!.join("\n")}\n`);
    expect(JSON.parse((await qvm(["firewall", "work", "list", "--json"])).stdout)[1]).toEqual({ action: "accept", dsthost: "example.com", proto: "tcp", dstports: [443, 443], comment: "web only" });
    expect((await qvm(["firewall", "vault"])).code).toBe(1);
  });

  it("adds, inserts, deletes and resets with Get, a local edit and Set", async () => {
    expect((await qvm(["firewall", "work", "add", "accept", "example.com", "tcp", "443"])).code).toBe(0);
    expect((await qvm(["firewall", "work", "add", "--before", "0", "drop", "dst4=10.0.0.0/8", "comment=no lan"])).code).toBe(0);
    expect((await qvm(["firewall", "work", "add", "accept", "proto=icmp", "icmptype=8"])).code).toBe(0);
    expect(fake.firewall.get("work")).toEqual(["action=drop dst4=10.0.0.0/8 comment=no lan", "action=accept", "action=accept dsthost=example.com proto=tcp dstports=443-443", "action=accept proto=icmp icmptype=8"]);
    expect((await qvm(["firewall", "work", "del", "--rule-no", "1"])).code).toBe(0);
    expect((await qvm(["firewall", "work", "del", "accept", "example.com", "tcp", "443-443"])).code).toBe(0);
    expect(fake.firewall.get("work")).toEqual(["action=drop dst4=10.0.0.0/8 comment=no lan", "action=accept proto=icmp icmptype=8"]);
    expect((await qvm(["firewall", "work", "reset"])).code).toBe(0);
    expect(fake.firewall.get("work")).toEqual(["action=accept"]);
    expect(sets()).toHaveLength(6);
    expect(sortedCalls("getFirewall")).toHaveLength(6);
  });

  it("turns expire=+N into a time N seconds from now", async () => {
    const before = Math.floor(Date.now() / 1000);
    expect((await qvm(["firewall", "work", "add", "accept", "proto=udp", "expire=+3600"])).code).toBe(0);
    const m = /^action=accept expire=(\d+) proto=udp$/.exec(fake.firewall.get("work")![1]!);
    expect(Number(m?.[1])).toBeGreaterThanOrEqual(before + 3600);
    expect(Number(m?.[1])).toBeLessThanOrEqual(Math.floor(Date.now() / 1000) + 3600);
    expect((await qvm(["firewall", "work"])).stdout).toMatch(/\n1 +accept +- +udp +- +- +- +\+(3600|3599)s +-\n$/);
  });

  it("reloads alone, or after a change", async () => {
    expect(await qvm(["firewall", "work", "--reload"])).toMatchObject({ code: 0, stdout: "" });
    expect(await qvm(["firewall", "work", "add", "drop", "-r"])).toMatchObject({ code: 0, stdout: "" });
    expect(fake.calls.map(([m]) => m).filter((m) => m.includes("Firewall"))).toEqual(["reloadFirewall", "getFirewall", "setFirewall", "reloadFirewall"]);
  });

  it("refuses a wrong rule or flag in one line that names it, setting nothing", async () => {
    const cases: Array<[string[], number, RegExp]> = [
      // As in Qubes, the second word is the host: "tcp" is a host name, and "80" no protocol.
      [["firewall", "work", "add", "accept", "tcp", "80"], 2, /^qvm: proto "80": must be tcp, udp or icmp \(a rule is .*; see qvm firewall --help\)\n$/],
      [["firewall", "work", "add", "accept", "dstports=80"], 2, /^qvm: dstports "80": only with proto=tcp or proto=udp \(a rule is /],
      [["firewall", "work", "add", "allow"], 2, /^qvm: action "allow": must be accept or drop/],
      [["firewall", "work", "add", "accept", "port=80"], 2, /^qvm: unknown firewall rule element "port"/],
      [["firewall", "work", "add"], 2, /^qvm: add needs a RULE: .* e\.g\. qvm firewall work add accept example\.com tcp 443\n$/],
      [["firewall", "work", "add", "--before", "5", "drop"], 2, /^qvm: --before 5: work has rules 0-0 .*; give 0-1 \(1: at the end\)\n$/],
      [["firewall", "work", "del", "--rule-no", "1"], 2, /^qvm: --rule-no 1: work has rules 0-0/],
      [["firewall", "work", "del"], 2, /^qvm: del needs --rule-no N or the RULE/],
      [["firewall", "work", "del", "drop"], 1, /^qvm: work has no rule "action=drop": `qvm firewall work list --raw` shows/],
      [["firewall", "work", "list", "drop"], 2, /^qvm: list takes no rule/],
      [["firewall", "work", "add", "--raw", "drop"], 2, /^qvm: --raw goes with list, not add\n$/],
      [["firewall", "work", "--rule-no", "0"], 2, /^qvm: --rule-no goes with del, not list\n$/],
      [["firewall", "work", "frob"], 2, /^qvm: unknown action "frob": use list, add, del or reset/],
      [["firewall", "work", "list", "--raw", "--json"], 2, /^qvm: give --raw or --json, not both\n$/],
    ];
    for (const [args, code, stderr] of cases) {
      const r = await qvm(args);
      expect({ args, code: r.code, stderr: r.stderr }).toEqual({ args, code, stderr: expect.stringMatching(stderr) });
    }
    expect(sets()).toEqual([]);
  });
});

describe("qvm pci", () => {
  const dev = (bdf: string, o: Partial<adminV1.PciDevice> = {}): adminV1.PciDevice => ({
    bdf,
    classCode: 0x020000,
    className: "Ethernet controller",
    vendorId: "8086",
    deviceId: "15bd",
    vendorName: "Intel Corporation",
    deviceName: "Ethernet Connection (6) I219-LM",
    driver: "e1000e",
    iommuGroup: 9,
    assignedTo: "",
    present: true,
    ...o,
  });
  beforeEach(() => {
    fake.iommu = true;
    fake.pci = [
      dev("0000:00:14.0", { classCode: 0x0c0330, className: "USB controller", deviceId: "9ded", deviceName: "", driver: "xhci_hcd", iommuGroup: 3 }),
      dev("0000:00:1f.6"),
      dev("0000:02:00.0", { classCode: 0x028000, className: "Network controller", deviceId: "2723", vendorName: "", deviceName: "", driver: "vfio-pci", iommuGroup: 8, assignedTo: "sys-net" }),
      dev("0000:09:00.0", { present: false, classCode: 0, className: "", vendorId: "", deviceId: "", vendorName: "", deviceName: "", driver: "", iommuGroup: -1, assignedTo: "work" }),
    ];
  });
  const calls = (m: string) => sortedCalls(m) as Array<{ domain: string; devices: string[]; persistent?: boolean }>;

  it("lists the host's devices: BDF, class, ids, driver, IOMMU group, domain, names; one domain's; JSON", async () => {
    const r = await qvm(["pci"]);
    expect(r).toMatchObject({ code: 0, stderr: "" });
    expect(r.stdout).toBe(
      [
        "BDF           CLASS                ID         DRIVER    GROUP  USED BY  DESCRIPTION",
        "0000:00:14.0  USB controller       8086:9ded  xhci_hcd  3      -        Intel Corporation",
        "0000:00:1f.6  Ethernet controller  8086:15bd  e1000e    9      -        Intel Corporation Ethernet Connection (6) I219-LM",
        "0000:02:00.0  Network controller   8086:2723  vfio-pci  8      sys-net  -",
        "0000:09:00.0  -                    -          -         -      work     (not present on this host)",
        "",
      ].join("\n"),
    );
    expect((await qvm(["pci", "ls", "sys-net"])).stdout.split("\n").slice(1, -1).map((l) => l.split(" ")[0])).toEqual(["0000:02:00.0"]);
    expect(calls("listPciDevices").at(-1)).toEqual({ domain: "sys-net" });
    expect(JSON.parse((await qvm(["pci", "list", "--json"])).stdout)[1]).toEqual(fake.pci[1]);
    expect((await qvm(["pci", "ls", "nope"])).code).toBe(1);
  });

  it("says when the host has no IOMMU, under the table", async () => {
    fake.iommu = false;
    fake.pci = fake.pci.map((d) => ({ ...d, iommuGroup: -1 }));
    const r = await qvm(["pci"]);
    expect(r.code).toBe(0);
    expect(r.stdout.split("\n")[2]).toMatch(/^0000:00:1f.6 .* e1000e +- +- /);
    expect(r.stderr).toBe("qvm: this host has no IOMMU enabled: no device can be passed through (turn on VT-d or AMD-Vi in the firmware and boot with intel_iommu=on or amd_iommu=on)\n");
  });

  it("assigns with attach --persistent (-p) or assign, in Qubes' name too; a running domain gets it at its next start", async () => {
    expect(await qvm(["pci", "attach", "--persistent", "debian-12", "dom0:00_1f.6"])).toMatchObject({ code: 0, stdout: "", stderr: "" });
    expect(calls("attachPciDevice")).toEqual([{ domain: "debian-12", devices: ["dom0:00_1f.6"], persistent: true }]);
    expect(fake.pci[1]!.assignedTo).toBe("debian-12");
    const r = await qvm(["pci", "assign", "work", "00:14.0"]);
    expect(r).toMatchObject({ code: 0, stdout: "" });
    expect(r.stderr).toBe("qvm: work is running: 0000:00:14.0 arrives at its next start (microvm cannot hot-plug); restart it: qvm shutdown --wait work && qvm start work\n");
    expect(calls("attachPciDevice")[1]).toEqual({ domain: "work", devices: ["00:14.0"], persistent: true });
  });

  it("detaches; a running domain keeps the device until it stops", async () => {
    expect(await qvm(["pci", "detach", "debian-12", "0000:02:00.0"])).toMatchObject({ code: 1, stderr: "qvm: 0000:02:00.0 is not assigned to debian-12\n" });
    const r = await qvm(["pci", "unassign", "sys-net", "0000:02:00.0"]);
    expect(r).toMatchObject({ code: 0, stdout: "", stderr: "qvm: sys-net is running and keeps 0000:02:00.0 until it stops; then the host gets it back\n" });
    expect(calls("detachPciDevice").at(-1)).toEqual({ domain: "sys-net", devices: ["0000:02:00.0"] });
  });

  it("refuses a live attach and usage errors in one line, changing nothing", async () => {
    const cases: Array<[string[], number, RegExp]> = [
      [["pci", "attach", "sys-net", "0000:00:1f.6"], 1, /^qvm: a PCI device cannot be attached live \(microvm has no hot-plug\): assign it with `qvm pci attach --persistent sys-net 0000:00:1f.6`/],
      [["pci", "attach", "--persistent", "sys-net"], 2, /^qvm: attach needs a domain and a device: qvm pci attach --persistent VM DEVICE\.\.\.\n$/],
      [["pci", "assign", "sys-net"], 2, /^qvm: assign needs a domain and a device: qvm pci assign VM DEVICE\.\.\.\n$/],
      [["pci", "frob"], 2, /^qvm: unknown action "frob": use ls, attach, detach, assign or unassign/],
      [["pci", "ls", "--persistent"], 2, /^qvm: --persistent goes with attach, not ls\n$/],
      [["pci", "detach", "--json", "work", "00:14.0"], 2, /^qvm: --json goes with ls, not detach\n$/],
      [["pci", "ls", "work", "sys-net"], 2, /^qvm: ls takes at most one domain/],
      [["pci", "attach", "-p", "work", "eth0"], 2, /^qvm: "eth0" is not a PCI device: name it by its BDF as `qvm pci ls` shows it/],
      [["pci", "attach", "-p", "nope", "00:14.0"], 1, /^qvm: domain "nope" does not exist\n$/],
    ];
    for (const [args, code, stderr] of cases) {
      const r = await qvm(args);
      expect({ args, code: r.code, stderr: r.stderr }).toEqual({ args, code, stderr: expect.stringMatching(stderr) });
    }
    expect(fake.pci.map((d) => d.assignedTo)).toEqual(["", "", "sys-net", "work"]);
  });
});

describe("qvm usb", () => {
  const dev = (backend: string, busid: string, o: Partial<adminV1.UsbDevice> = {}): adminV1.UsbDevice => ({
    backend,
    busid,
    vendorId: "0951",
    productId: "1666",
    description: "Kingston DataTraveler 3.0",
    serial: "60A44C413F12",
    kinds: ["storage"],
    attachedTo: "",
    persistent: false,
    present: true,
    ...o,
  });
  // What a hostile device could call itself: OSC 52 (clipboard write), BEL, C1 CSI, a bidi override, and too much of it.
  const hostile = `Evil\x1b]52;c;QUFBQQ==\x07 \u009b2J\u202e${"x".repeat(80)}`;
  beforeEach(() => {
    fake.domains.push(fakeDomain("sys-usb", { state: "Running", label: "red" }), fakeDomain("vault", { label: "black" }));
    fake.usb = [
      dev("sys-usb", "2-1", { attachedTo: "work" }),
      dev("sys-usb", "2-1.4", { vendorId: "046d", productId: "c52b", description: "Logitech USB Receiver", serial: "", kinds: ["keyboard", "mouse"] }),
      dev("sys-usb", "3-2", { vendorId: "1234", productId: "abcd", description: hostile, kinds: ["other"] }),
      dev("sys-usb", "4-1", { present: false, vendorId: "", productId: "", description: "", serial: "", kinds: [], attachedTo: "vault", persistent: true }),
      dev("work", "1-1", { vendorId: "46f4", productId: "0001", description: "QEMU QEMU USB HARDDRIVE", serial: "1-0000:00:02.0-1" }),
    ];
    fake.usbPlugs = new Map();
  });
  const calls = (m: string) => sortedCalls(m);
  /** No character a terminal acts on but newline: C0, DEL, C1, bidi and other format characters. */
  const UNSAFE = /[\x00-\x09\x0b-\x1f\x7f-\x9f\p{Cf}]/u;

  it("lists BACKEND:BUSID VID:PID DESCRIPTION USED BY, as Qubes; persistent and not-present marked; device text escaped and clipped", async () => {
    const r = await qvm(["usb"]);
    expect(r).toMatchObject({ code: 0, stderr: "" });
    expect(r.stdout).toBe(
      [
        "BACKEND:BUSID  VID:PID    DESCRIPTION                                       USED BY",
        "sys-usb:2-1    0951:1666  Kingston DataTraveler 3.0                         work",
        "sys-usb:2-1.4  046d:c52b  Logitech USB Receiver                             -",
        "sys-usb:3-2    1234:abcd  Evil\\u001b]52;c;QUFBQQ==\\u0007 \\u009b2J\\u202exx…  -",
        "sys-usb:4-1    -          (not present)                                     vault (persistent)",
        "work:1-1       46f4:0001  QEMU QEMU USB HARDDRIVE                           -",
        "",
      ].join("\n"),
    );
    expect(r.stdout).not.toMatch(UNSAFE);
    expect(calls("listUsbDevices")).toEqual([{ backend: "" }]);
    expect(await qvm(["usb", "list"])).toMatchObject({ code: 0, stdout: r.stdout });
    expect(await qvm(["usb", "ls"])).toMatchObject({ code: 0, stdout: r.stdout });
  });

  it("lists one backend's; --json gives the UsbDevice objects, unchanged once parsed, with nothing a terminal acts on", async () => {
    const one = await qvm(["usb", "list", "work"]);
    expect(one.stdout.split("\n").slice(1, -1).map((l) => l.split(" ")[0])).toEqual(["work:1-1"]);
    expect(calls("listUsbDevices")).toEqual([{ backend: "work" }]);
    const j = await qvm(["usb", "list", "--json"]);
    expect(j).toMatchObject({ code: 0, stderr: "" });
    expect(j.stdout).not.toMatch(UNSAFE);
    expect(JSON.parse(j.stdout)).toEqual(fake.usb);
    expect(JSON.parse((await qvm(["usb", "list", "sys-usb", "--json"])).stdout)).toHaveLength(4);
    expect(await qvm(["usb", "list", "nope"])).toMatchObject({ code: 1, stdout: "", stderr: 'qvm: domain "nope" does not exist\n' });
  });

  it("says how to get devices when there are none (stderr; the header still on stdout)", async () => {
    fake.usb = [];
    expect(await qvm(["usb"])).toMatchObject({
      code: 0,
      stdout: "BACKEND:BUSID  VID:PID  DESCRIPTION  USED BY\n",
      stderr: "qvm: no running domain reports USB devices: start the one with the USB controller (qvm start sys-usb)\n",
    });
    expect(await qvm(["usb", "--json"])).toMatchObject({ code: 0, stdout: "[]\n", stderr: "" });
  });

  it("attaches (Qubes' words too: at, a, assign = attach --persistent) and detaches (dt, d, unassign)", async () => {
    expect(await qvm(["usb", "attach", "work", "sys-usb:2-1.4"])).toMatchObject({ code: 0, stdout: "", stderr: "" });
    expect(fake.usb[1]).toMatchObject({ attachedTo: "work", persistent: false });
    expect(await qvm(["usb", "detach", "work", "sys-usb:2-1.4"])).toMatchObject({ code: 0, stdout: "", stderr: "" });
    expect(await qvm(["usb", "attach", "-p", "work", "sys-usb:2-1.4"])).toMatchObject({ code: 0 });
    expect(fake.usb[1]).toMatchObject({ attachedTo: "work", persistent: true });
    expect((await qvm(["usb"])).stdout).toMatch(/^sys-usb:2-1\.4 .* work \(persistent\)$/m);
    expect(await qvm(["usb", "dt", "work", "sys-usb:2-1.4"])).toMatchObject({ code: 0 });
    expect(await qvm(["usb", "assign", "work", "sys-usb:2-1.4"])).toMatchObject({ code: 0 });
    expect(await qvm(["usb", "unassign", "work", "sys-usb:2-1.4"])).toMatchObject({ code: 0 });
    expect(await qvm(["usb", "at", "--persistent", "work", "sys-usb:2-1.4"])).toMatchObject({ code: 0 });
    expect(await qvm(["usb", "d", "work", "sys-usb:2-1.4"])).toMatchObject({ code: 0 });
    const dev = { domain: "work", backend: "sys-usb", busid: "2-1.4" };
    expect(calls("attachUsbDevice")).toEqual([
      { ...dev, persistent: false },
      { ...dev, persistent: true },
      { ...dev, persistent: true },
      { ...dev, persistent: true },
    ]);
    expect(calls("detachUsbDevice")).toEqual([dev, dev, dev, dev]);
    // Detaching an assignment whose device is not there drops it.
    expect(await qvm(["usb", "detach", "vault", "sys-usb:4-1"])).toMatchObject({ code: 0 });
    expect(fake.usb.map((d) => d.busid)).toEqual(["2-1", "2-1.4", "3-2", "1-1"]);
  });

  it("prints qvmd's refusals as one line with its exit code", async () => {
    const cases: Array<[string[], number, string]> = [
      [["usb", "attach", "vault", "sys-usb:2-1.4"], 1, "qvm: vault is not running: start it first (`qvm start vault`); a USB device is attached to a running domain\n"],
      [["usb", "attach", "sys-net", "sys-usb:2-1"], 1, "qvm: sys-usb:2-1 is attached to work: a device goes to one domain at a time; detach it there first (`qvm usb detach work sys-usb:2-1`)\n"],
      [["usb", "attach", "work", "sys-usb:9-9"], 1, "qvm: sys-usb has no USB device 9-9; see `qvm usb list sys-usb`\n"],
      [["usb", "attach", "sys-usb", "sys-usb:2-1.4"], 2, "qvm: sys-usb:2-1.4 is sys-usb's own device: it cannot be attached to its backend; attach it to another domain\n"],
      [["usb", "attach", "nope", "sys-usb:2-1.4"], 1, 'qvm: domain "nope" does not exist\n'],
      [["usb", "detach", "sys-net", "sys-usb:2-1"], 1, "qvm: sys-usb:2-1 is not attached to sys-net; see `qvm usb list`\n"],
    ];
    for (const [args, code, stderr] of cases) {
      const r = await qvm(args);
      expect({ args, code: r.code, stdout: r.stdout, stderr: r.stderr }).toEqual({ args, code, stdout: "", stderr });
    }
    expect(fake.usb.map((d) => d.attachedTo)).toEqual(["work", "", "", "vault", ""]);
  });

  it("refuses bad device names and usage errors in one line (exit 2) before calling qvmd", async () => {
    const cases: Array<[string[], RegExp]> = [
      [["usb", "attach", "work", "sys-usb"], /^qvm: "sys-usb" is not a USB device: name it as `qvm usb` lists it, BACKEND:BUSID \(sys-usb:2-1\)\n$/],
      [["usb", "attach", "work", "2-1"], /^qvm: "2-1" is not a USB device/],
      [["usb", "attach", "work", "sys-usb:0-1"], /^qvm: "sys-usb:0-1" is not a USB device/],
      [["usb", "attach", "work", "sys-usb:2-1:1.0"], /^qvm: "sys-usb:2-1:1.0" is not a USB device/],
      [["usb", "attach", "work", "sys-usb:2_1"], /^qvm: "sys-usb:2_1" is not a USB device/],
      [["usb", "attach", "work", "../etc:2-1"], /^qvm: "..\/etc:2-1" is not a USB device: its backend is not a domain name/],
      [["usb", "detach", "work", ":2-1"], /^qvm: ":2-1" is not a USB device/],
      [["usb", "attach", "work"], /^qvm: attach needs a domain and one device: qvm usb attach \[--persistent\] VM BACKEND:BUSID \(the devices: qvm usb list\)\n$/],
      [["usb", "detach", "work", "sys-usb:2-1", "sys-usb:2-1.4"], /^qvm: detach needs a domain and one device: qvm usb detach VM BACKEND:BUSID/],
      [["usb", "frob"], /^qvm: unknown action "frob": use list, attach, detach, plug, plugs or unplug/],
      [["usb", "list", "sys-usb", "work"], /^qvm: list takes at most one backend/],
      [["usb", "list", "sys-usb:2-1"], /^qvm: list takes a backend domain \(sys-usb\), not a device \("sys-usb:2-1"\)\n$/],
      [["usb", "list", "--persistent"], /^qvm: --persistent goes with attach, not list\n$/],
      [["usb", "detach", "-p", "work", "sys-usb:2-1"], /^qvm: --persistent goes with attach, not detach\n$/],
      [["usb", "attach", "--json", "work", "sys-usb:2-1"], /^qvm: --json goes with list or plugs, not attach\n$/],
      [["usb", "list", "--keyboard"], /^qvm: --keyboard goes with plug, not list\n$/],
      [["usb", "unplug", "work", "usb1", "--read-only"], /^qvm: --read-only goes with plug, not unplug\n$/],
      [["usb", "plug", "work"], /^qvm: plug needs a device: qvm usb plug VM --disk IMAGE \[--read-only\] \| --keyboard \| --tablet \(to list work's: qvm usb plugs work\)\n$/],
      [["usb", "plug", "--keyboard"], /^qvm: plug needs a domain and a device/],
      [["usb", "plug", "work", "--keyboard", "--tablet"], /^qvm: plug one device at a time \(got --keyboard and --tablet\)\n$/],
      [["usb", "plug", "work", "--keyboard", "--read-only"], /^qvm: --read-only goes with --disk, not --keyboard\n$/],
      [["usb", "plug", "work", "stick.img"], /^qvm: plug takes one domain \(got "stick.img"\); the image goes with --disk IMAGE\n$/],
      [["usb", "plug", "work", "--disk", ""], /^qvm: --disk needs a disk image: --disk IMAGE\n$/],
      [["usb", "plugs"], /^qvm: plugs takes one domain: qvm usb plugs VM \[--json\]\n$/],
      [["usb", "unplug", "work"], /^qvm: unplug needs a domain and one plug ID: qvm usb unplug VM ID \(the IDs: qvm usb plugs VM\)\n$/],
      [["device", "usb", "attach", "work", "sys-usb"], /^qvm: "sys-usb" is not a USB device/],
    ];
    for (const [args, stderr] of cases) {
      const r = await qvm(args);
      expect({ args, code: r.code, stdout: r.stdout, stderr: r.stderr }).toEqual({ args, code: 2, stdout: "", stderr: expect.stringMatching(stderr) });
    }
    expect(fake.calls).toEqual([]);
  });

  it("plugs a disk image (relative paths made absolute), a keyboard, a tablet; says whether the domain has it now; lists and unplugs", async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "qvm-usb-"));
    try {
      const r = await qvm(["usb", "plug", "work", "--disk", "stick.img", "--read-only"], { cwd: dir });
      expect(r).toMatchObject({ code: 0, stderr: "", stdout: `usb1 of work: disk ${path.join(dir, "stick.img")} (read-only); work has it now\n` });
      expect(await qvm(["usb", "plug", "work", "--disk=../other/x.raw"], { cwd: dir })).toMatchObject({ code: 0, stdout: `usb2 of work: disk ${path.join(path.dirname(dir), "other/x.raw")}; work has it now\n` });
      expect(await qvm(["usb", "plug", "work", "--disk", "/srv/abs.img"], { cwd: dir })).toMatchObject({ code: 0, stdout: "usb3 of work: disk /srv/abs.img; work has it now\n" });
      expect(await qvm(["usb", "plug", "vault", "--keyboard"])).toMatchObject({ code: 0, stderr: "", stdout: "usb1 of vault: keyboard; it arrives at vault's next start\n" });
      expect(await qvm(["usb", "plug", "vault", "--tablet"])).toMatchObject({ code: 0, stdout: "usb2 of vault: tablet; it arrives at vault's next start\n" });
      expect(calls("plugUsbDevice")).toEqual([
        { domain: "work", kind: "disk", path: path.join(dir, "stick.img"), readOnly: true },
        { domain: "work", kind: "disk", path: path.join(path.dirname(dir), "other/x.raw"), readOnly: false },
        { domain: "work", kind: "disk", path: "/srv/abs.img", readOnly: false },
        { domain: "vault", kind: "keyboard", path: "", readOnly: false },
        { domain: "vault", kind: "tablet", path: "", readOnly: false },
      ]);

      expect(await qvm(["usb", "unplug", "work", "usb2"])).toMatchObject({ code: 0, stdout: "", stderr: "" });
      expect(calls("unplugUsbDevice")).toEqual([{ domain: "work", id: "usb2" }]);
      expect((await qvm(["usb", "plugs", "work"])).stdout).toBe(
        ["ID    KIND  STATE  IMAGE", `usb1  disk  live   ${path.join(dir, "stick.img")} (read-only)`, "usb3  disk  live   /srv/abs.img", ""].join("\n"),
      );
      expect((await qvm(["usb", "plugs", "vault"])).stdout).toBe(["ID    KIND      STATE       IMAGE", "usb1  keyboard  next start  -", "usb2  tablet    next start  -", ""].join("\n"));
      expect(JSON.parse((await qvm(["usb", "plugs", "vault", "--json"])).stdout)).toEqual(fake.usbPlugs.get("vault"));
      expect(await qvm(["usb", "unplug", "work", "usb2"])).toMatchObject({ code: 1, stdout: "", stderr: 'qvm: work has no USB device "usb2"; its USB devices: usb1, usb3 (`qvm usb plugs work`)\n' });
      expect(await qvm(["usb", "plugs", "nope"])).toMatchObject({ code: 1, stderr: 'qvm: domain "nope" does not exist\n' });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("`qvm device usb ...` is `qvm usb ...` (Qubes' qvm-device usb): same output, same calls", async () => {
    const same = async (args: string[]) => {
      fake.calls = [];
      const a = await qvm(["usb", ...args]);
      const aCalls = fake.calls;
      fake.calls = [];
      const b = await qvm(["device", "usb", ...args]);
      expect({ args, ...b }).toMatchObject({ args, code: a.code, stdout: a.stdout, stderr: a.stderr });
      expect(fake.calls).toEqual(aCalls);
      return a;
    };
    expect((await same([])).stdout).toMatch(/^BACKEND:BUSID/);
    await same(["list", "sys-usb", "--json"]);
    await same(["attach", "vault", "sys-usb:2-1.4"]);
    await same(["detach", "sys-net", "sys-usb:2-1"]);
    await same(["plugs", "work"]);
    expect(await qvm(["device", "usb", "attach", "-p", "work", "sys-usb:2-1.4"])).toMatchObject({ code: 0 });
    expect(await qvm(["device", "usb", "plug", "work", "--keyboard"])).toMatchObject({ code: 0, stdout: "usb1 of work: keyboard; work has it now\n" });
    expect(await qvm(["device", "usb", "unplug", "work", "usb1"])).toMatchObject({ code: 0 });
    expect(calls("attachUsbDevice").at(-1)).toEqual({ domain: "work", backend: "sys-usb", busid: "2-1.4", persistent: true });
    expect(calls("unplugUsbDevice")).toEqual([{ domain: "work", id: "usb1" }]);
  });

  it("--help explains the names, the marks and every form, with examples; also as `qvm device usb`", async () => {
    const r = await qvm(["usb", "--help"]);
    expect(r).toMatchObject({ code: 0, stderr: "" });
    for (const text of ["BACKEND:BUSID", "(persistent)", "(not present)", "qubes.USB", "--disk=IMAGE", "--read-only", "--keyboard", "--tablet", "$ qvm usb attach --persistent work sys-usb:2-1", "$ qvm usb plug sys-usb --disk stick.img --read-only", "$ qvm usb unplug sys-usb usb1", "$ qvm device usb"]) {
      expect(r.stdout).toContain(text);
    }
    const d = await qvm(["device", "usb", "--help"]);
    expect(d.code).toBe(0);
    expect(d.stdout).toContain("$ qvm device usb attach --persistent work sys-usb:2-1");
    expect((await qvm(["device", "--help"])).stdout).toContain("device usb");
    expect((await qvm(["usb", "-h"])).stdout).toContain("$ qvm usb plugs sys-usb");
  });
});

describe("without qvmd, and help", () => {
  it("fails fast with one line that says how to start qvmd", async () => {
    const empty = mkdtempSync(path.join(os.tmpdir(), "qvm-nodaemon-"));
    try {
      const r = await qvm(["ls"], { env: { QVM_RUNTIME_DIR: empty } });
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/^qvm: qvmd is not reachable at .*qvmd\.sock: start it with `qvm daemon`[^\n]*\n$/);
      expect(r.ms).toBeLessThan(2500);
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
  });

  it("gives up on a qvmd that accepts the connection but never answers, within seconds", async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "qvm-hung-"));
    const sockets: net.Socket[] = [];
    const hung = net.createServer((s) => sockets.push(s.on("data", () => {})));
    await new Promise<void>((resolve) => hung.listen(path.join(dir, "qvmd.sock"), resolve));
    try {
      const r = await qvm(["ls"], { env: { QVM_RUNTIME_DIR: dir } });
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/^qvm: qvmd at .* did not answer within 3 s[^\n]*\n$/);
      expect(r.ms).toBeLessThan(6000);
    } finally {
      for (const s of sockets) s.destroy();
      hung.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("explains every command", async () => {
    const r = await qvm(["--help"]);
    expect(r.code).toBe(0);
    for (const c of ["check", "clone", "console", "create", "daemon", "features", "firewall", "kill", "ls", "pause", "pci", "policy", "prefs", "remove", "run", "shutdown", "start", "tags", "unpause", "usb"]) {
      expect(r.stdout).toMatch(new RegExp(`^  ${c} +\\S`, "m"));
    }
    expect((await qvm(["run", "--help"])).stdout).toContain("--pass-io");
    expect((await qvm(["nosuch"])).code).toBe(2);
  });

  it("loads neither gRPC nor zod for help or a usage error, and gRPC (not zod) once it talks to qvmd", async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "qvm-startup-"));
    // Records at exit whether grpc-js (which loads Node's http2) or zod (which sets a global) ran.
    const probe = path.join(dir, "probe.cjs");
    writeFileSync(
      probe,
      `process.on("exit", () => require("node:fs").writeFileSync(process.env.QVM_PROBE_OUT, JSON.stringify({ grpc: process.moduleLoadList.some((m) => m.includes("http2")), zod: "__zod_globalConfig" in globalThis })));\n`,
    );
    const loaded = async (args: string[]) => {
      const out = path.join(dir, "out.json");
      await qvm(args, { env: { NODE_OPTIONS: `--require ${probe}`, QVM_PROBE_OUT: out, QVM_CODE_CACHE: "off" } });
      return JSON.parse(readFileSync(out, "utf8")) as { grpc: boolean; zod: boolean };
    };
    try {
      expect(await loaded(["--help"])).toEqual({ grpc: false, zod: false });
      expect(await loaded(["ls", "--help"])).toEqual({ grpc: false, zod: false });
      expect(await loaded(["tags", "work", "frob"])).toEqual({ grpc: false, zod: false });
      expect(await loaded(["usb", "attach", "work", "sys-usb"])).toEqual({ grpc: false, zod: false });
      expect(await loaded(["ls"])).toEqual({ grpc: true, zod: false });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("qvm daemon", () => {
  it("runs qvmd with the directories, passes SIGTERM on once, and exits with its code", async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "qvm-fake-qvmd-"));
    const script = path.join(dir, "qvmd.js");
    // Exits 7 on SIGTERM (or 9 after 10 s, so a failure leaks nothing), then prints its arguments:
    // the handler must be in place before the test sees the output and sends the signal.
    writeFileSync(script, `process.once("SIGTERM", () => process.exit(7)); setTimeout(() => process.exit(9), 10000); console.log(JSON.stringify(process.argv.slice(2)));\n`);
    chmodSync(script, 0o644);
    try {
      const r = await qvm(["daemon", "--data-dir", "/d", "--runtime-dir", "/r"], {
        env: { QVM_QVMD_BUNDLE: script },
        during: (child) => child.stdout?.once("data", () => child.kill("SIGTERM")),
      });
      expect(JSON.parse(r.stdout.split("\n")[0]!)).toEqual(["--foreground", "--data-dir", "/d", "--runtime-dir", "/r"]);
      expect(r.code).toBe(7);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("leaves the data directory to qvmd when none is given ($QVM_DATA_DIR, else its default)", async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "qvm-fake-qvmd-"));
    const script = path.join(dir, "qvmd.js");
    writeFileSync(script, `console.log(JSON.stringify(process.argv.slice(2)));\n`);
    try {
      const r = await qvm(["daemon", "--runtime-dir", "/r"], { env: { QVM_QVMD_BUNDLE: script } });
      expect(JSON.parse(r.stdout.split("\n")[0]!)).toEqual(["--foreground", "--runtime-dir", "/r"]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("says how to build qvmd when its bundle is missing", async () => {
    const r = await qvm(["daemon"], { env: { QVM_QVMD_BUNDLE: "/nonexistent/qvmd.js" } });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^qvm: qvmd is not built .*\n$/);
  });
});

describe("qvm clipboard", () => {
  beforeEach(() => {
    fake.domains.push(fakeDomain("vault", { state: "Running", label: "black" }), fakeDomain("personal", { state: "Running", label: "yellow" }));
    const win = (domain: string, windowId: number, program: string): adminV1.Window => ({ domain, windowId, program, width: 800, height: 600 });
    fake.windows = [win("work", 1, "foot"), win("vault", 2, "foot"), win("vault", 4, "firefox"), win("personal", 3, "gedit")];
    fake.selections = new Map([["work:1", "a link"]]);
    fake.clipboard = { data: Buffer.alloc(0), source: "", copiedAtMs: 0 };
    fake.deniedPastes = new Set();
  });

  it("shows where the content came from and its size, never the content; --json gives the state", async () => {
    expect(await qvm(["clipboard"])).toMatchObject({ code: 0, stdout: "The global clipboard is empty.\n", stderr: "" });
    expect((await qvm(["clipboard", "set", "--text", "hunter2"])).code).toBe(0);
    const r = await qvm(["clipboard", "show"]);
    expect(r.stdout).toBe("The global clipboard holds 7 bytes from dom0 (this desktop), copied at 2026-09-21T14:13:20.000Z.\n");
    expect(r.stdout).not.toContain("hunter2");
    expect(JSON.parse((await qvm(["clipboard", "--json"])).stdout)).toEqual({ source: "dom0", size: 7, copiedAtMs: 1_790_000_000_000 });
  });

  it("copies a domain's only window, pastes into a window chosen with --window, and the paste wipes it", async () => {
    const c = await qvm(["clipboard", "copy", "work"]);
    expect(c).toMatchObject({ code: 0, stderr: "" });
    expect(c.stdout).toBe("Copied 6 bytes from work's window 1 to the global clipboard; paste with `qvm clipboard paste VM` or Ctrl-Shift-V in a window.\n");
    expect(sortedCalls("clipboardCopy")).toEqual([{ domain: "work", from: { $case: "windowId", value: 1 } }]);
    const p = await qvm(["clipboard", "paste", "vault", "--window", "4"]);
    expect(p).toMatchObject({ code: 0, stderr: "", stdout: "Pasted the global clipboard from work into vault's window 4 and wiped it; paste it there with Ctrl-V.\n" });
    expect(fake.selections.get("vault:4")).toBe("a link");
    expect(fake.clipboard.data.length).toBe(0);
    expect((await qvm(["clipboard", "paste", "personal"])).stderr).toBe("qvm: the global clipboard is empty: copy with Ctrl-Shift-C first\n");
  });

  it("without --window, a domain with several windows or none is an error that lists them or says how to open one", async () => {
    fake.clipboard = { data: Buffer.from("x"), source: "dom0", copiedAtMs: 1 };
    expect(await qvm(["clipboard", "paste", "vault"])).toMatchObject({ code: 2, stderr: "qvm: vault has 2 windows: 2 (foot), 4 (firefox); choose one with --window N\n" });
    fake.windows = [];
    expect(await qvm(["clipboard", "copy", "work"])).toMatchObject({ code: 1, stderr: "qvm: work has no window to copy: open one with `qvm run --gui work -- PROGRAM`\n" });
    expect(await qvm(["clipboard", "copy", "nope"])).toMatchObject({ code: 1, stderr: 'qvm: domain "nope" does not exist\n' });
    expect(sortedCalls("clipboardCopy")).toEqual([]);
    expect(sortedCalls("clipboardPaste")).toEqual([]);
  });

  it("a paste the policy refuses says so in Qubes' words and how to look at the policy; the clipboard stays", async () => {
    fake.clipboard = { data: Buffer.from("secret"), source: "vault", copiedAtMs: 1 };
    fake.deniedPastes.add("vault>work");
    const r = await qvm(["clipboard", "paste", "work"]);
    expect(r).toMatchObject({ code: 1, stdout: "", stderr: "qvm: Pasting from vault to work is denied by policies (see `qvm policy check qubes.ClipboardPaste vault work`)\n" });
    expect(fake.clipboard.source).toBe("vault");
    expect(fake.selections.get("work:1")).toBe("a link");
  });

  it("set reads stdin (or --text) as dom0's; take writes the content as it is and wipes it", async () => {
    const text = "line one\nline two, no newline at the end";
    expect(await qvm(["clipboard", "set"], { input: text })).toMatchObject({ code: 0, stdout: "", stderr: "" });
    expect(sortedCalls("setClipboard")).toEqual([{ data: Buffer.from(text) }]);
    const t = await qvm(["clipboard", "take"]);
    expect(t).toMatchObject({ code: 0, stdout: text, stderr: "" });
    expect(fake.clipboard.data.length).toBe(0);
    expect(await qvm(["clipboard", "take"])).toMatchObject({ code: 1, stdout: "", stderr: "qvm: the global clipboard is empty: copy with Ctrl-Shift-C first\n" });
  });

  it("set of more than 64000 bytes is refused by qvmd (which empties the clipboard); qvm sends no more than one byte over", async () => {
    fake.clipboard = { data: Buffer.from("old"), source: "work", copiedAtMs: 1 };
    const r = await qvm(["clipboard", "set"], { input: "a".repeat(200_000) });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^qvm: the text given \(64001 bytes\) is larger than the global clipboard's 64000 bytes: the clipboard was emptied/);
    expect(fake.clipboard.data.length).toBe(0);
    expect((await qvm(["clipboard", "set"], { input: "" })).code).toBe(2);
  });

  it("refuses usage errors in one line, calling nothing", async () => {
    const cases: Array<[string[], RegExp]> = [
      [["clipboard", "frob"], /^qvm: unknown action "frob": use show, copy, paste, set or take/],
      [["clipboard", "copy"], /^qvm: copy needs a domain: qvm clipboard copy VM \[--window N\]\n$/],
      [["clipboard", "paste", "work", "vault"], /^qvm: paste takes one domain \(got "vault"\)\n$/],
      [["clipboard", "show", "--window", "1"], /^qvm: --window goes with copy or paste, not show\n$/],
      [["clipboard", "take", "--text", "x"], /^qvm: --text goes with set, not take\n$/],
      [["clipboard", "copy", "work", "--json"], /^qvm: --json goes with show, not copy\n$/],
      [["clipboard", "set", "hello"], /^qvm: set takes no argument \(got "hello"\); give the text on stdin or with --text\n$/],
      [["clipboard", "copy", "work", "--window", "0"], /^qvm: .*--window/],
    ];
    for (const [args, stderr] of cases) {
      const r = await qvm(args);
      expect({ args, code: r.code, stderr: r.stderr }).toEqual({ args, code: 2, stderr: expect.stringMatching(stderr) });
    }
    expect(fake.calls.filter(([m]) => m !== "getDaemonInfo")).toEqual([]);
  });

  it("--help explains the policy and the examples", async () => {
    const r = await qvm(["clipboard", "--help"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("qubes.ClipboardPaste");
    expect(r.stdout).toContain("qvm clipboard copy work && qvm clipboard paste personal");
    expect(r.stdout).toContain("a qvmd restart empties it");
  });
});
