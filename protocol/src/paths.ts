// Where the daemon and its clients meet, read from the environment: the Node-side helpers around
// the default directories of the contracts (contracts/dirs.ts).
import path from "node:path";
import { ADMIN_SOCKET_NAME, DEFAULT_RUNTIME_DIR, RUNTIME_DIR_ENV } from "./contracts/index.js";

export function runtimeDirFromEnv(env: NodeJS.ProcessEnv = process.env): string {
  return env[RUNTIME_DIR_ENV] || DEFAULT_RUNTIME_DIR;
}

export function adminSocketPath(runtimeDir: string = runtimeDirFromEnv()): string {
  return path.join(runtimeDir, ADMIN_SOCKET_NAME);
}
