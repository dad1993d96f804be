// What a window runs: the kiosk configuration and each process's command line and environment.
import { describe, expect, it } from "vitest";
import {
  SOCAT_READY,
  asUser,
  closeRequestLaunch,
  findDisplaySocket,
  programLaunch,
  resizeLaunch,
  socatLaunch,
  swayConfig,
  swayLaunch,
  vsockListen,
  wayvncLaunch,
  windowPaths,
} from "./commands.js";

const user = { name: "user", uid: 1000, gid: 1000, home: "/home/user", shell: "/bin/bash" };
const paths = windowPaths("/run/qvm-gui", 3);
const SETPRIV = ["setpriv", "--reuid=1000", "--regid=1000", "--init-groups", "--"];

describe("a window's sway configuration", () => {
  it("is a kiosk: no Xwayland, no swaybg, no swaynag, no borders, one output of the size asked", () => {
    const lines = swayConfig(800, 600)
      .split("\n")
      .filter((l) => l && !l.startsWith("#"));
    expect(lines).toEqual([
      "xwayland disable",
      "swaybg_command -",
      "swaynag_command -",
      "default_border none",
      "default_floating_border none",
      "focus_on_window_activation focus",
      "output HEADLESS-1 resolution 800x600 position 0 0",
    ]);
  });

  it("has no bar, no key bindings and starts nothing: the program is started by the agent", () => {
    expect(swayConfig(64, 64)).not.toMatch(/^\s*(bar|bindsym|bindcode|exec|exec_always|include)\b/m);
  });
});

describe("a window's processes", () => {
  it("puts each window's files in its own runtime directory", () => {
    expect(paths).toEqual({
      runtimeDir: "/run/qvm-gui/win-3",
      swayConfig: "/run/qvm-gui/win-3/sway.config",
      wayvncConfig: "/run/qvm-gui/win-3/wayvnc.config",
      swaySocket: "/run/qvm-gui/win-3/sway-ipc.sock",
      vncSocket: "/run/qvm-gui/win-3/vnc.sock",
    });
  });

  it("runs everything as the user through setpriv, in the user's home", () => {
    expect(asUser(user, ["x"])).toEqual([...SETPRIV, "x"]);
    for (const l of [swayLaunch(user, paths), wayvncLaunch(user, paths, "wayland-1"), programLaunch(user, paths, "wayland-1", ["foot"])]) {
      expect([l.file, ...l.args].slice(0, 5)).toEqual(SETPRIV);
      expect(l.cwd).toBe("/home/user");
      expect(l.env).toMatchObject({ HOME: "/home/user", USER: "user", LOGNAME: "user", XDG_RUNTIME_DIR: "/run/qvm-gui/win-3", LANG: "C.UTF-8" });
    }
  });

  it("starts sway headless with the pixman renderer, no input devices and a known IPC socket", () => {
    const l = swayLaunch(user, paths);
    expect(l.args.slice(4)).toEqual(["sway", "--config", "/run/qvm-gui/win-3/sway.config"]);
    expect(l.env).toMatchObject({ WLR_BACKENDS: "headless", WLR_HEADLESS_OUTPUTS: "1", WLR_RENDERER: "pixman", WLR_LIBINPUT_NO_DEVICES: "1", SWAYSOCK: paths.swaySocket });
    expect(l.env.WAYLAND_DISPLAY).toBeUndefined();
  });

  it("starts the program's argv as it is, with no shell, on the window's display", () => {
    const argv = ["sh", "-c", "echo $HOME; rm -rf / # not quoted anywhere", "'", '"', "a b"];
    const l = programLaunch(user, paths, "wayland-1", argv);
    expect(l.args.slice(4)).toEqual(argv);
    expect(l.env).toMatchObject({ WAYLAND_DISPLAY: "wayland-1", XDG_SESSION_TYPE: "wayland", MOZ_ENABLE_WAYLAND: "1" });
    // The program is not told where its compositor's IPC socket is.
    expect(l.env.SWAYSOCK).toBeUndefined();
  });

  it("serves RFB on the Unix socket only, with the agent's (empty) wayvnc configuration", () => {
    const l = wayvncLaunch(user, paths, "wayland-1");
    expect(l.args.slice(4)).toEqual(["wayvnc", "--config=/run/qvm-gui/win-3/wayvnc.config", "--max-fps=30", "--unix-socket", "/run/qvm-gui/win-3/vnc.sock"]);
    expect(l.env.WAYLAND_DISPLAY).toBe("wayland-1");
  });

  it("offers the socket on the window's vsock port, two viewers at most", () => {
    expect(vsockListen(20003)).toBe("VSOCK-LISTEN:20003,reuseaddr,fork,max-children=2");
    const l = socatLaunch(user, paths, vsockListen(20003));
    expect(l.args.slice(4)).toEqual(["socat", "-d", "-d", "VSOCK-LISTEN:20003,reuseaddr,fork,max-children=2", "UNIX-CONNECT:/run/qvm-gui/win-3/vnc.sock"]);
    expect(SOCAT_READY.test("2026/11/30 10:34:04 socat[10065] N listening on AF=40 cid:4294967295 port:20003")).toBe(true);
    expect(SOCAT_READY.test("2026/11/30 10:34:04 socat[10065] W ioctl(-1, IOCTL_VM_SOCKETS_GET_LOCAL_CID, ...)")).toBe(false);
  });

  it("resizes the output and asks every view to close through swaymsg on the window's socket", () => {
    expect(resizeLaunch(user, paths, 1234, 567).args.slice(4)).toEqual(["swaymsg", "--socket", paths.swaySocket, "--", "output HEADLESS-1 resolution 1234x567"]);
    expect(closeRequestLaunch(user, paths).args.slice(4)).toEqual(["swaymsg", "--socket", paths.swaySocket, "--", '[workspace=".*"] kill']);
  });

  it("finds the display socket sway made, not its lock file", () => {
    expect(findDisplaySocket(["sway.config", "wayland-1.lock"])).toBeUndefined();
    expect(findDisplaySocket(["sway-ipc.sock", "wayland-1.lock", "wayland-1"])).toBe("wayland-1");
  });
});
