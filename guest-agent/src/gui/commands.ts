// What a window runs, as data: the kiosk sway configuration, and the command line and environment
// of each process (sway, the program, wayvnc, socat, swaymsg, and the clipboard's clients in
// clipboard.ts). Pure functions; window.ts runs them.
//
// Per window, as the domain's user, in its own runtime directory (XDG_RUNTIME_DIR):
//   sway     headless (no GPU, no input devices), one output HEADLESS-1 of the requested size,
//            no bar, no borders, no key bindings, no swaybg, no Xwayland
//   program  the requested argv, started by the agent with WAYLAND_DISPLAY set: no shell, so
//            nothing is quoted into a sway `exec` line
//   wayvnc   serves the output as RFB on a Unix socket in the runtime directory, nothing on TCP
//   socat    offers that socket on the window's vsock port, which the host dials
import type { GuestUser } from "../users.js";

/** The headless backend's only output. */
export const WINDOW_OUTPUT = "HEADLESS-1";
/** wayvnc's frame-rate cap (its default; lower it if encoding under emulation costs too much). */
export const WINDOW_MAX_FPS = 30;
/** Connections socat serves at once on a window's port (a reconnecting page while the old one closes). */
export const MAX_VIEWERS_PER_WINDOW = 2;
export const SWAY_CONFIG = "sway.config";
export const WAYVNC_CONFIG = "wayvnc.config";
export const SWAY_IPC_SOCKET = "sway-ipc.sock";
export const VNC_SOCKET = "vnc.sock";
const PATH = "/usr/local/bin:/usr/bin:/bin";

export interface Launch {
  file: string;
  args: string[];
  env: Record<string, string>;
  cwd: string;
}

export interface WindowPaths {
  /** The window's XDG_RUNTIME_DIR: owned by the user, mode 0700. */
  runtimeDir: string;
  swayConfig: string;
  wayvncConfig: string;
  swaySocket: string;
  vncSocket: string;
}

export function windowPaths(runtimeRoot: string, windowId: number): WindowPaths {
  const runtimeDir = `${runtimeRoot}/win-${windowId}`;
  return {
    runtimeDir,
    swayConfig: `${runtimeDir}/${SWAY_CONFIG}`,
    wayvncConfig: `${runtimeDir}/${WAYVNC_CONFIG}`,
    swaySocket: `${runtimeDir}/${SWAY_IPC_SOCKET}`,
    vncSocket: `${runtimeDir}/${VNC_SOCKET}`,
  };
}

/** The output's size as sway's `output … resolution` takes it. */
const resolution = (width: number, height: number) => `${Math.trunc(width)}x${Math.trunc(height)}`;

/**
 * A kiosk: one output of the given size, nothing drawn but the program. The file holds only
 * numbers the agent checked, so nothing from the request needs quoting.
 */
export function swayConfig(width: number, height: number): string {
  return [
    "# Written by the qvm agent for one window (docs/gui.md). The program is started separately.",
    "xwayland disable",
    "swaybg_command -",
    "swaynag_command -",
    "default_border none",
    "default_floating_border none",
    "focus_on_window_activation focus",
    `output ${WINDOW_OUTPUT} resolution ${resolution(width, height)} position 0 0`,
    "",
  ].join("\n");
}

/** Runs argv as the user (with the user's supplementary groups), as Exec does. */
export function asUser(user: GuestUser, argv: string[]): string[] {
  return ["setpriv", `--reuid=${user.uid}`, `--regid=${user.gid}`, "--init-groups", "--", ...argv];
}

function baseEnv(user: GuestUser, paths: WindowPaths): Record<string, string> {
  return {
    PATH,
    HOME: user.home,
    USER: user.name,
    LOGNAME: user.name,
    SHELL: user.shell,
    // foot refuses a locale that is not UTF-8; C.UTF-8 is built into bookworm's libc.
    LANG: "C.UTF-8",
    XDG_RUNTIME_DIR: paths.runtimeDir,
  };
}

const launch = (user: GuestUser, argv: string[], env: Record<string, string>): Launch => {
  const full = asUser(user, argv);
  return { file: full[0]!, args: full.slice(1), env, cwd: user.home };
};

export function swayLaunch(user: GuestUser, paths: WindowPaths): Launch {
  return launch(user, ["sway", "--config", paths.swayConfig], {
    ...baseEnv(user, paths),
    SWAYSOCK: paths.swaySocket,
    WLR_BACKENDS: "headless",
    WLR_HEADLESS_OUTPUTS: "1",
    WLR_RENDERER: "pixman",
    WLR_LIBINPUT_NO_DEVICES: "1",
  });
}

/** The program, on the window's compositor. `display` is the socket sway made (wayland-N). */
export function programLaunch(user: GuestUser, paths: WindowPaths, display: string, argv: string[]): Launch {
  return launch(user, argv, {
    ...baseEnv(user, paths),
    WAYLAND_DISPLAY: display,
    XDG_SESSION_TYPE: "wayland",
    // Firefox ESR 115 draws with X11 unless told otherwise, and there is no X server.
    MOZ_ENABLE_WAYLAND: "1",
  });
}

/** wayvnc on a Unix socket only; its own (empty) configuration, so none in the user's home applies. */
export function wayvncLaunch(user: GuestUser, paths: WindowPaths, display: string): Launch {
  return launch(user, ["wayvnc", `--config=${paths.wayvncConfig}`, `--max-fps=${WINDOW_MAX_FPS}`, "--unix-socket", paths.vncSocket], {
    ...baseEnv(user, paths),
    WAYLAND_DISPLAY: display,
  });
}

/** Another client of the window's compositor (wl-paste, wl-copy): as the user, on the window's display. */
export function clientLaunch(user: GuestUser, paths: WindowPaths, display: string, argv: string[]): Launch {
  return launch(user, argv, { ...baseEnv(user, paths), WAYLAND_DISPLAY: display });
}

/**
 * socat's listening address for a window: the vsock port in a domain. Tests give a Unix socket
 * instead (a host has no vsock loopback).
 */
export type ListenAddress = (port: number) => string;
export const vsockListen: ListenAddress = (port) => `VSOCK-LISTEN:${port},reuseaddr,fork,max-children=${MAX_VIEWERS_PER_WINDOW}`;

/** Relays each connection on the window's port to wayvnc's socket; `-d -d` logs "listening on" when ready. */
export function socatLaunch(user: GuestUser, paths: WindowPaths, listen: string): Launch {
  return launch(user, ["socat", "-d", "-d", listen, `UNIX-CONNECT:${paths.vncSocket}`], baseEnv(user, paths));
}

/** socat's notice once it listens (socat 1.7.4: "N listening on AF=40 cid:… port:…"). */
export const SOCAT_READY = /\bN listening on /;

function swaymsg(user: GuestUser, paths: WindowPaths, command: string): Launch {
  // As the user: the IPC socket is in a directory the user controls, so the agent never
  // connects to it with root's rights.
  return launch(user, ["swaymsg", "--socket", paths.swaySocket, "--", command], baseEnv(user, paths));
}

export function resizeLaunch(user: GuestUser, paths: WindowPaths, width: number, height: number): Launch {
  return swaymsg(user, paths, `output ${WINDOW_OUTPUT} resolution ${resolution(width, height)}`);
}

/** A close request (xdg_toplevel.close) to every view: sway 1.7 has no `[all]`, every view is on a workspace. */
export function closeRequestLaunch(user: GuestUser, paths: WindowPaths): Launch {
  return swaymsg(user, paths, '[workspace=".*"] kill');
}

/** The Wayland socket sway made in the window's runtime directory ("wayland-1"), if any yet. */
export function findDisplaySocket(names: string[]): string | undefined {
  return names.filter((n) => /^wayland-\d+$/.test(n)).sort()[0];
}
