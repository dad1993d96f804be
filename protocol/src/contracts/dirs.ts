// Where qvmd keeps its state and where clients find it, by default. Part of the contract between
// qvmd and every client: `qvm daemon` passes the same defaults qvmd falls back to. The helpers
// that read the environment and join paths live in protocol/src/paths.ts (they need Node).

/** Sockets and per-domain runtime files; gone at reboot. */
export const DEFAULT_RUNTIME_DIR = "/run/qvm";
/** Domains, volumes, policy and logs; kept. */
export const DEFAULT_DATA_DIR = "/var/lib/qvm";
/** Overrides DEFAULT_RUNTIME_DIR for qvmd and every client. */
export const RUNTIME_DIR_ENV = "QVM_RUNTIME_DIR";
/** Overrides DEFAULT_DATA_DIR for qvmd (only qvmd resolves it; `qvm daemon` passes no default). */
export const DATA_DIR_ENV = "QVM_DATA_DIR";
/** The admin API's socket, in the runtime directory. */
export const ADMIN_SOCKET_NAME = "qvmd.sock";
/** Members of this group may use the admin socket (mode 0660). */
export const ADMIN_GROUP = "qvm";
