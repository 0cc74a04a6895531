import { canonicalIp } from '../../protocol/index.js';
import { isFtsMessage, type PrimaryToWorker, type WorkerQuestion, type WorkerToPrimary } from '../ipc.js';

/**
 * A question the primary does not answer in this long is answered locally: fail open (keep serving), except
 * for an address this worker has been told is banned (see GateClient.knownBans).
 */
const ASK_TIMEOUT_MS = 1_000;
/** Bans a worker remembers at most; past it the oldest is forgotten. */
const MAX_KNOWN_BANS = 10_000;

export type Admission = { ok: true } | { ok: false; reason: string; retryAfterSeconds?: number };

/**
 * Penalty points, by what the address did. A failed login is also delayed (see Gatekeeper.penalty).
 * `fts-server --help` lists them from here, so that the help cannot drift from what is counted.
 */
export const PENALTY = { authFailure: 2, badName: 1, unknownMechanism: 1, protocolViolation: 3 } as const;

/**
 * One address, one key for limits and bans, however it was written (`::ffff:127.0.0.2` and `127.0.0.2`; a
 * PROXY header's uncompressed IPv6): the form `fts-admin bans` shows and `unban` takes.
 */
export function normaliseIp(address: string | undefined): string {
  return address ? canonicalIp(address) : 'unknown';
}

/**
 * The worker's side of the primary's Gatekeeper: asks whether a connection may proceed and reports
 * penalties. If the primary is slow or gone the answer is "allowed, no delay": limits are a defence
 * against abuse, and must not turn a primary hiccup into an outage. A ban the primary has announced to this
 * worker still holds then, until it ends: otherwise whoever can slow the primary down lifts every ban.
 */
/** What GateClient uses of a cluster worker's process. */
export interface GateChannel {
  send?: (message: WorkerToPrimary) => boolean;
  readonly connected?: boolean;
  on(event: 'message', listener: (message: unknown) => void): unknown;
}

export class GateClient {
  private nextId = 1;
  private readonly pending = new Map<number, (data: unknown) => void>();
  /** Banned addresses the primary named in its answers, with when each ban ends (ms since the epoch). */
  private readonly knownBans = new Map<string, number>();

  /** @param channel the IPC channel to the primary: the worker's own process (a fake one in tests). */
  constructor(
    private readonly channel: GateChannel = process,
    private readonly askTimeoutMs = ASK_TIMEOUT_MS,
  ) {
    channel.on('message', (msg: unknown) => {
      if (!isFtsMessage(msg)) return;
      const m = msg as PrimaryToWorker;
      if (m.type !== 'fts:answer') return;
      this.pending.get(m.reqId)?.(m.data);
    });
  }

  private ask<T>(question: WorkerQuestion, fallback: () => T): Promise<T> {
    const channel = this.channel;
    if (!channel.send || !channel.connected) return Promise.resolve(fallback());
    const reqId = this.nextId++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => settle(fallback()), this.askTimeoutMs);
      const settle = (value: T): void => {
        clearTimeout(timer);
        this.pending.delete(reqId);
        resolve(value);
      };
      this.pending.set(reqId, (data) => settle(data as T));
      channel.send?.({ type: 'fts:ask', reqId, question } satisfies WorkerToPrimary);
    });
  }

  async admit(conn: string, ip: string): Promise<Admission> {
    const answer = await this.ask<Admission>({ kind: 'admit', conn, ip }, () => {
      const ban = this.knownBan(ip);
      return ban.banned ? { ok: false, reason: 'banned', retryAfterSeconds: ban.retryAfterSeconds } : { ok: true };
    });
    // Refused for another reason (a limit): that says nothing about a ban.
    if (answer.ok) this.remember(ip, false);
    else if (answer.reason === 'banned') this.remember(ip, true, answer.retryAfterSeconds);
    return answer;
  }

  async penalty(ip: string, points: number): Promise<{ delayMs: number; banned: boolean }> {
    const { delayMs, banned, retryAfterSeconds } = await this.ask<{ delayMs: number; banned: boolean; retryAfterSeconds?: number }>({ kind: 'penalty', ip, points }, () => ({
      delayMs: 0,
      banned: this.knownBan(ip).banned,
    }));
    this.remember(ip, banned, retryAfterSeconds);
    return { delayMs, banned };
  }

  async banned(ip: string): Promise<{ banned: boolean; retryAfterSeconds?: number }> {
    const answer = await this.ask({ kind: 'banned', ip }, () => this.knownBan(ip));
    this.remember(ip, answer.banned, answer.retryAfterSeconds);
    return answer;
  }

  /** Keeps what the primary said of `ip`: banned for `retryAfterSeconds` more, or not banned (lifted, over). */
  private remember(ip: string, banned: boolean, retryAfterSeconds?: number): void {
    if (!banned) {
      this.knownBans.delete(ip);
      return;
    }
    if (retryAfterSeconds === undefined || retryAfterSeconds <= 0) return;
    // Re-inserted, so the map stays in the order bans were announced; bans all last --ban-duration, so the
    // first entry is about the first to end, and the one to forget when the map is full.
    this.knownBans.delete(ip);
    if (this.knownBans.size >= MAX_KNOWN_BANS) {
      const first = this.knownBans.keys().next();
      if (!first.done) this.knownBans.delete(first.value);
    }
    this.knownBans.set(ip, Date.now() + retryAfterSeconds * 1000);
  }

  /** A ban the primary announced for `ip` that still runs, as the primary would answer `banned`. */
  private knownBan(ip: string): { banned: boolean; retryAfterSeconds?: number } {
    const until = this.knownBans.get(ip);
    const left = until === undefined ? 0 : until - Date.now();
    if (left <= 0) {
      this.knownBans.delete(ip);
      return { banned: false };
    }
    return { banned: true, retryAfterSeconds: Math.ceil(left / 1000) };
  }

  /**
   * The connection logged in as `user`: may it be one more of the user's sessions (a per-user limit is
   * set)? A primary that does not answer in time lets it in (fail open, as for admissions), and is then told
   * so, so that it counts the session even if it refused it late.
   */
  login(conn: string, user: string): Promise<Admission> {
    return this.ask<Admission>({ kind: 'login', conn, user }, () => {
      this.loggedIn(conn, user);
      return { ok: true };
    });
  }

  /** The connection logged in as `user` without asking (no per-user limit): counted by the primary. */
  loggedIn(conn: string, user: string): void {
    if (this.channel.connected) this.channel.send?.({ type: 'fts:conn', conn, event: 'logged-in', user } satisfies WorkerToPrimary);
  }

  closed(conn: string): void {
    if (this.channel.connected) this.channel.send?.({ type: 'fts:conn', conn, event: 'closed' } satisfies WorkerToPrimary);
  }
}
