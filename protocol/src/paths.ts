// Where the daemon and its clients meet. Part of the contract between qvmd and every client.
import path from "node:path";

export const DEFAULT_RUNTIME_DIR = "/run/qvm";
export const DEFAULT_DATA_DIR = "/var/lib/qvm";
export const ADMIN_SOCKET_NAME = "qvmd.sock";
/** Members of this group may use the admin socket (mode 0660). */
export const ADMIN_GROUP = "qvm";

export function runtimeDirFromEnv(env: NodeJS.ProcessEnv = process.env): string {
  return env.QVM_RUNTIME_DIR || DEFAULT_RUNTIME_DIR;
}

export function adminSocketPath(runtimeDir: string = runtimeDirFromEnv()): string {
  return path.join(runtimeDir, ADMIN_SOCKET_NAME);
}
