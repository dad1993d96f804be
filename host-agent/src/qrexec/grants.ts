// One-shot grants: a qrexec call qvmd itself arranged, allowed once without the policy (Qubes'
// USB attach prepends `FRONTEND BACKEND allow,user=root` to qubes.USB+PORT for the length of the
// attach and removes it in `finally`). Here the grant never touches a policy file: it is held in
// memory only, names exactly one call (source, target by name, service, argument, compared
// as strings, nothing resolved), is consumed by the first call that matches, and lapses after
// its time to live. The router checks grants before the policy (router.ts); a call no grant
// names is decided by the policy as always.
import { QvmError } from "@qvm/protocol";
import { systemClock, type Clock } from "../base/clock.js";

/** How long a grant waits for its call. */
export const DEFAULT_GRANT_TTL_MS = 30_000;
/** Grants held at once; more is a bug in whoever adds them (each is revoked when its work ends). */
export const MAX_GRANTS = 256;

export interface GrantSpec {
  /** The calling domain, as the router knows it (its socket). */
  source: string;
  /** The target as the call must name it: a domain name, never a keyword. */
  target: string;
  service: string;
  /** The argument exactly as the call must carry it ("" for none). */
  argument: string;
  /** What it is for, for the log line ("usb attach of sys-usb:2-1 to work"). */
  why: string;
}

/** What the router does with a granted call: run as root, never start the target. */
export interface Granted extends GrantSpec {
  user: "root";
}

interface Entry {
  spec: GrantSpec;
  expiresAt: number;
  used: boolean;
}

/** The handle of one grant: revoke it (a no-op once it was used or lapsed). */
export interface GrantHandle {
  revoke(): void;
  /** Whether a call consumed it. */
  readonly used: boolean;
}

export class QrexecGrants {
  private readonly entries = new Set<Entry>();

  constructor(
    private readonly clock: Clock = systemClock,
    private readonly ttlMs = DEFAULT_GRANT_TTL_MS,
  ) {}

  /** Allows one call exactly like `spec`, once, within the time to live. */
  grant(spec: GrantSpec): GrantHandle {
    this.sweep();
    if (this.entries.size >= MAX_GRANTS) throw new QvmError("RESOURCE_EXHAUSTED", `more than ${MAX_GRANTS} one-shot qrexec grants are waiting; try again shortly`);
    const entry: Entry = { spec: { ...spec }, expiresAt: this.clock.now() + this.ttlMs, used: false };
    this.entries.add(entry);
    const entries = this.entries;
    return {
      revoke: () => void entries.delete(entry),
      get used() {
        return entry.used;
      },
    };
  }

  /**
   * The grant naming exactly this call, consumed; undefined when none does (or it lapsed). The
   * target is matched as the caller wrote it: a grant to "sys-usb" is not used by "@default".
   */
  take(call: { source: string; target: string; service: string; argument: string }): Granted | undefined {
    this.sweep();
    for (const e of this.entries) {
      const s = e.spec;
      if (s.source === call.source && s.target === call.target && s.service === call.service && s.argument === call.argument) {
        this.entries.delete(e);
        e.used = true;
        return { ...s, user: "root" };
      }
    }
    return undefined;
  }

  /** Grants waiting now (for tests and leak checks). */
  get size(): number {
    this.sweep();
    return this.entries.size;
  }

  private sweep(): void {
    const now = this.clock.now();
    for (const e of this.entries) if (now >= e.expiresAt) this.entries.delete(e);
  }
}
