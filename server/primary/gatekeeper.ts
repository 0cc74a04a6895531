/**
 * The cluster-wide authority on who may connect, kept in the primary so that counts are exact across all
 * workers: total and per-IP connection limits, a budget for unauthenticated connections with random early
 * drop (OpenSSH MaxStartups start:rate:full), and scored bans per source address (SFTPGo's defender).
 * Pure bookkeeping: no sockets, no timers; time is passed in, so it is unit-testable.
 */

import type { BanInfo, ScoredAddress } from '../../protocol/index.js';

export interface GateLimits {
  maxConnections: number;
  maxPerIp: number;
  /** Sessions (logged-in connections) one user may have at once; 0 = no limit. */
  maxSessionsPerUser: number;
  /** MaxStartups: random early drop of unauthenticated connections from `start`, at `rate`%, up to `full`. */
  startups: { start: number; rate: number; full: number };
  /** Score at which an address is banned; 0 disables bans. */
  banThreshold: number;
  /** Scores older than this are forgotten. */
  banWindowMs: number;
  banDurationMs: number;
  /** Addresses that earn no penalty points (--ban-exempt), so are never banned. */
  exempt: (ip: string) => boolean;
}

export type RejectReason = 'max_connections' | 'per_ip_limit' | 'startups' | 'banned' | 'per_user_limit';
export const REJECT_REASONS: readonly RejectReason[] = ['max_connections', 'per_ip_limit', 'startups', 'banned', 'per_user_limit'];

export type Admission = { ok: true } | { ok: false; reason: RejectReason; retryAfterSeconds?: number };

interface Conn {
  ip: string;
  worker: number;
  /** The user it logged in as; null until then. */
  user: string | null;
}

/**
 * An address's recent penalty points, in one-second buckets (oldest first), and their running total: a
 * flood of penalties costs O(1) each and at most one bucket per second of the window, however many arrive.
 */
interface Score {
  points: Array<{ second: number; points: number }>;
  total: number;
  bannedUntil: number;
}

/** Drops the buckets that left the window, keeping the running total. */
function expire(score: Score, cutoffMs: number): void {
  let gone = 0;
  while (gone < score.points.length && score.points[gone]!.second * 1000 <= cutoffMs) score.total -= score.points[gone++]!.points;
  if (gone > 0) score.points.splice(0, gone);
}

/** The longest delay before a failed login's answer. */
const MAX_DELAY_MS = 5_000;

/** The delay before a failed login's answer from an exempt address: vsftpd's fixed one, still no free guesses. */
export const EXEMPT_DELAY_MS = 1_000;

export class Gatekeeper {
  private readonly conns = new Map<string, Conn>();
  private readonly perIp = new Map<string, number>();
  private readonly perUser = new Map<string, number>();
  private readonly scores = new Map<string, Score>();
  private unauthenticated = 0;

  constructor(
    private readonly limits: GateLimits,
    private readonly random: () => number = Math.random,
  ) {}

  get connections(): number {
    return this.conns.size;
  }

  /** Whether `ip` is banned now, and for how much longer. */
  banStatus(ip: string, now: number): { banned: boolean; retryAfterSeconds?: number } {
    const until = this.scores.get(ip)?.bannedUntil ?? 0;
    return until > now ? { banned: true, retryAfterSeconds: Math.ceil((until - now) / 1000) } : { banned: false };
  }

  activeBans(now: number): number {
    let n = 0;
    for (const s of this.scores.values()) if (s.bannedUntil > now) n++;
    return n;
  }

  /** The addresses banned now, longest remaining first (fts-admin bans). */
  bans(now: number): BanInfo[] {
    const list: BanInfo[] = [];
    for (const [address, s] of this.scores) if (s.bannedUntil > now) list.push({ address, secondsLeft: Math.ceil((s.bannedUntil - now) / 1000) });
    return list.sort((a, b) => b.secondsLeft - a.secondsLeft || (a.address < b.address ? -1 : 1));
  }

  /**
   * The addresses banned now or with penalty points in the window (fts-admin bans --points): banned first,
   * longest remaining first, then by points, most first, so that an attack building up is at the top.
   */
  scored(now: number): ScoredAddress[] {
    const list: ScoredAddress[] = [];
    for (const [address, s] of this.scores) {
      expire(s, now - this.limits.banWindowMs);
      const secondsLeft = s.bannedUntil > now ? Math.ceil((s.bannedUntil - now) / 1000) : 0;
      if (secondsLeft > 0 || s.total > 0) list.push({ address, secondsLeft, points: s.total });
    }
    return list.sort((a, b) => b.secondsLeft - a.secondsLeft || b.points - a.points || (a.address < b.address ? -1 : 1));
  }

  /**
   * Lifts the ban on `ip` and forgets its penalty points (fts-admin unban), so its next failed login
   * starts from nothing and without a delay. An address that is not banned but has points (its failed
   * logins are answered ever more slowly) is forgiven too. Null when it had neither.
   */
  unban(ip: string, now: number): { banned: boolean; points: number } | null {
    const score = this.scores.get(ip);
    if (score === undefined) return null;
    expire(score, now - this.limits.banWindowMs);
    const banned = score.bannedUntil > now;
    this.scores.delete(ip);
    // A ban resets the points (penalty), so `total` is what had accrued since, banned or not.
    return banned || score.total > 0 ? { banned, points: score.total } : null;
  }

  admit(id: string, ip: string, worker: number, now: number): Admission {
    const score = this.scores.get(ip);
    if (score && score.bannedUntil > now) return { ok: false, reason: 'banned', retryAfterSeconds: Math.ceil((score.bannedUntil - now) / 1000) };
    if (this.conns.size >= this.limits.maxConnections) return { ok: false, reason: 'max_connections' };
    if ((this.perIp.get(ip) ?? 0) >= this.limits.maxPerIp) return { ok: false, reason: 'per_ip_limit' };
    const { start, rate, full } = this.limits.startups;
    if (this.unauthenticated >= full) return { ok: false, reason: 'startups' };
    if (this.unauthenticated >= start) {
      // Linear from rate% at `start` to 100% at `full`, as in sshd(8).
      const p = rate / 100 + (1 - rate / 100) * ((this.unauthenticated - start) / Math.max(1, full - start));
      if (this.random() < p) return { ok: false, reason: 'startups' };
    }
    this.conns.set(id, { ip, worker, user: null });
    this.perIp.set(ip, (this.perIp.get(ip) ?? 0) + 1);
    this.unauthenticated++;
    return { ok: true };
  }

  /**
   * A connection's login as `user` succeeded: it becomes one of the user's sessions, unless the user has as
   * many as --max-sessions-per-user already (then it is refused, and stays unauthenticated until it closes).
   * A connection this gatekeeper does not know (admitted by its worker while the primary did not answer) is
   * let in uncounted, as its admission was. `admitted`: the worker let the login in without asking (no limit
   * is set, or the primary did not answer in time), so it is counted whatever the limit.
   */
  login(id: string, user: string, admitted = false): Admission {
    const c = this.conns.get(id);
    if (!c || c.user !== null) return { ok: true };
    const sessions = this.perUser.get(user) ?? 0;
    if (!admitted && this.limits.maxSessionsPerUser > 0 && sessions >= this.limits.maxSessionsPerUser) return { ok: false, reason: 'per_user_limit' };
    c.user = user;
    this.perUser.set(user, sessions + 1);
    this.unauthenticated--;
    return { ok: true };
  }

  /** Sessions `user` has open now. */
  sessionsOf(user: string): number {
    return this.perUser.get(user) ?? 0;
  }

  closed(id: string): void {
    const c = this.conns.get(id);
    if (!c) return;
    this.conns.delete(id);
    if (c.user === null) this.unauthenticated--;
    else {
      const sessions = (this.perUser.get(c.user) ?? 1) - 1;
      if (sessions <= 0) this.perUser.delete(c.user);
      else this.perUser.set(c.user, sessions);
    }
    const left = (this.perIp.get(c.ip) ?? 1) - 1;
    if (left <= 0) this.perIp.delete(c.ip);
    else this.perIp.set(c.ip, left);
  }

  /** A worker died: its connections died with it. */
  workerGone(worker: number): void {
    for (const [id, c] of this.conns) if (c.worker === worker) this.closed(id);
  }

  /**
   * Adds to an address's score (failed logins, traversal attempts, protocol violations). Returns the
   * delay to impose before answering, growing with the score, and whether the address is now banned.
   */
  penalty(ip: string, points: number, now: number): { delayMs: number; banned: boolean; started: boolean } {
    if (this.limits.exempt(ip)) return { delayMs: points > 0 ? EXEMPT_DELAY_MS : 0, banned: false, started: false };
    const score = this.scores.get(ip) ?? { points: [], total: 0, bannedUntil: 0 };
    this.scores.set(ip, score);
    // Already banned: nothing to add up (a banned address's connections keep sending refused requests).
    if (score.bannedUntil > now) return { delayMs: MAX_DELAY_MS, banned: true, started: false };
    expire(score, now - this.limits.banWindowMs);
    const second = Math.floor(now / 1000);
    const last = score.points[score.points.length - 1];
    if (last !== undefined && last.second === second) last.points += points;
    else score.points.push({ second, points });
    score.total += points;
    const total = score.total;
    if (this.limits.banThreshold > 0 && total >= this.limits.banThreshold) {
      score.bannedUntil = now + this.limits.banDurationMs;
      score.points = [];
      score.total = 0;
    }
    const banned = score.bannedUntil > now;
    // vsftpd waits 1 s after a failed login; we grow from there, capped so a client is never held long.
    const delayMs = Math.min(MAX_DELAY_MS, Math.round(total * 500));
    return { delayMs, banned, started: banned };
  }

  /** Forgets expired scores and bans; call now and then so the map cannot grow without bound. */
  prune(now: number): void {
    for (const [ip, s] of this.scores) {
      expire(s, now - this.limits.banWindowMs);
      if (s.points.length === 0 && s.bannedUntil <= now) this.scores.delete(ip);
    }
  }
}
