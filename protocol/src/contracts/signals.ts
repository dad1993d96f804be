// Signal names in the Exec protocols (admin API and guest agent). Two lists, because a process
// can die of more signals than a caller may send it: a program that crashes reports SIGSEGV
// although nobody may send one.

/**
 * The signals a caller may send to a process started through Exec. The guest agent accepts
 * exactly these and qvmd refuses any other before it reaches the guest, naming this list.
 * (Stopping, continuing, ending and the user signals; not the fault signals that mean a bug.)
 */
export const EXEC_SIGNALS = ["SIGTERM", "SIGKILL", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGSTOP", "SIGCONT", "SIGWINCH"] as const;
export type ExecSignal = (typeof EXEC_SIGNALS)[number];

export function isExecSignal(v: unknown): v is ExecSignal {
  return typeof v === "string" && (EXEC_SIGNALS as readonly string[]).includes(v);
}

/** Linux's signals 1-31 by name: what an exit status may report as the signal a process died of. */
export const EXIT_SIGNALS = [
  "SIGHUP", "SIGINT", "SIGQUIT", "SIGILL", "SIGTRAP", "SIGABRT", "SIGBUS", "SIGFPE", "SIGKILL", "SIGUSR1", "SIGSEGV",
  "SIGUSR2", "SIGPIPE", "SIGALRM", "SIGTERM", "SIGSTKFLT", "SIGCHLD", "SIGCONT", "SIGSTOP", "SIGTSTP", "SIGTTIN",
  "SIGTTOU", "SIGURG", "SIGXCPU", "SIGXFSZ", "SIGVTALRM", "SIGPROF", "SIGWINCH", "SIGIO", "SIGPWR", "SIGSYS",
] as const;
export type ExitSignal = (typeof EXIT_SIGNALS)[number];

export function isExitSignal(v: unknown): v is ExitSignal {
  return typeof v === "string" && (EXIT_SIGNALS as readonly string[]).includes(v);
}
