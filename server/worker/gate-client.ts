import { canonicalIp } from '../../protocol/index.js';
import { isFtsMessage, type PrimaryToWorker, type WorkerQuestion, type WorkerToPrimary } from '../ipc.js';

/** A question the primary does not answer in this long is answered locally (fail open: keep serving). */
const ASK_TIMEOUT_MS = 1_000;

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
 * against abuse, and must not turn a primary hiccup into an outage.
 */
export class GateClient {
  private nextId = 1;
  private readonly pending = new Map<number, (data: unknown) => void>();

  constructor() {
    process.on('message', (msg: unknown) => {
      if (!isFtsMessage(msg)) return;
      const m = msg as PrimaryToWorker;
      if (m.type !== 'fts:answer') return;
      this.pending.get(m.reqId)?.(m.data);
    });
  }

  private ask<T>(question: WorkerQuestion, fallback: T): Promise<T> {
    if (!process.send || !process.connected) return Promise.resolve(fallback);
    const reqId = this.nextId++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => settle(fallback), ASK_TIMEOUT_MS);
      const settle = (value: T): void => {
        clearTimeout(timer);
        this.pending.delete(reqId);
        resolve(value);
      };
      this.pending.set(reqId, (data) => settle(data as T));
      process.send?.({ type: 'fts:ask', reqId, question } satisfies WorkerToPrimary);
    });
  }

  admit(conn: string, ip: string): Promise<Admission> {
    return this.ask<Admission>({ kind: 'admit', conn, ip }, { ok: true });
  }

  penalty(ip: string, points: number): Promise<{ delayMs: number; banned: boolean }> {
    return this.ask({ kind: 'penalty', ip, points }, { delayMs: 0, banned: false });
  }

  banned(ip: string): Promise<{ banned: boolean; retryAfterSeconds?: number }> {
    return this.ask({ kind: 'banned', ip }, { banned: false });
  }

  authenticated(conn: string): void {
    if (process.connected) process.send?.({ type: 'fts:conn', conn, event: 'authenticated' } satisfies WorkerToPrimary);
  }

  closed(conn: string): void {
    if (process.connected) process.send?.({ type: 'fts:conn', conn, event: 'closed' } satisfies WorkerToPrimary);
  }
}
