// Display tickets (docs/gui.md): a window's sandboxed frame has an opaque origin, so it can send
// no cookie and has no access to the page's token. The page asks for a ticket over its
// authenticated WebSocket; the ticket lets exactly one WebSocket from that frame reach exactly
// that (domain, window), within a short time, and only while the page that asked is connected.
import { createHash, randomBytes } from "node:crypto";

/** How long a ticket is valid after it is minted. */
export const TICKET_TTL_MS = 30_000;
/** Unused tickets one page may hold at once; the oldest is dropped for a new one. */
export const MAX_TICKETS_PER_OWNER = 16;

export interface Ticket<Owner> {
  domain: string;
  window: number;
  owner: Owner;
  expires: number;
}

export interface TicketBookOptions {
  ttlMs?: number;
  now?: () => number;
}

export class TicketBook<Owner> {
  /** Keyed by the ticket's SHA-256: a lookup's timing says nothing about the ticket itself. */
  private readonly byHash = new Map<string, Ticket<Owner>>();
  private readonly ttlMs: number;
  private readonly now: () => number;

  constructor(opts: TicketBookOptions = {}) {
    this.ttlMs = opts.ttlMs ?? TICKET_TTL_MS;
    this.now = opts.now ?? Date.now;
  }

  /** A new ticket for (domain, window), for `owner` (the page's session) only. */
  mint(domain: string, window: number, owner: Owner): string {
    this.sweep();
    const mine = [...this.byHash].filter(([, t]) => t.owner === owner);
    // Map order is insertion order: the first are the oldest.
    for (const [h] of mine.slice(0, Math.max(0, mine.length - MAX_TICKETS_PER_OWNER + 1))) this.byHash.delete(h);
    const ticket = randomBytes(32).toString("base64url");
    this.byHash.set(hash(ticket), { domain, window, owner, expires: this.now() + this.ttlMs });
    return ticket;
  }

  /** The live ticket's binding, without using it up (the frame's page load). */
  peek(ticket: string): Ticket<Owner> | undefined {
    const t = this.byHash.get(hash(ticket));
    return t && t.expires > this.now() ? t : undefined;
  }

  /** Uses the ticket up, whatever happens next: a second use, or a use after expiry, finds nothing. */
  take(ticket: string): Ticket<Owner> | undefined {
    const h = hash(ticket);
    const t = this.byHash.get(h);
    this.byHash.delete(h);
    return t && t.expires > this.now() ? t : undefined;
  }

  /** Drops every ticket of `owner` (its page disconnected). */
  revoke(owner: Owner): void {
    for (const [h, t] of this.byHash) if (t.owner === owner) this.byHash.delete(h);
  }

  get size(): number {
    return this.byHash.size;
  }

  private sweep(): void {
    const now = this.now();
    for (const [h, t] of this.byHash) if (t.expires <= now) this.byHash.delete(h);
  }
}

function hash(ticket: string): string {
  return createHash("sha256").update(ticket).digest("base64");
}
