import type { SessionInfo } from '../protocol/index.js';
import type { MetricsJson } from './metrics/worker-metrics.js';

/**
 * Messages between the primary and its workers. Every type starts with "fts:" because prom-client shares
 * the same channel with its own "prom-client:*" messages; both sides ignore types they do not know.
 */
export type PrimaryToWorker =
  /** Stop accepting, let in-flight requests finish until `deadline` (epoch ms), then exit. */
  | { type: 'fts:drain'; deadline: number }
  /** Stop now: cut every connection (partial uploads stay staged for a resume, never published), then exit. */
  | { type: 'fts:abort' }
  /**
   * The first message a worker waits for before it serves: the users, quota and permissions file texts (validated
   * by the primary), the token-signing secret and the SCRAM salt key (both hex). Secrets travel here, not
   * in the worker's environment, which any process of the same user can read in /proc/PID/environ for as
   * long as the worker runs.
   */
  | { type: 'fts:init'; users: string; quotas: string | null; permissions: string | null; rates: string | null; networks: string | null; secret: string; saltKey: string; port: number }
  /**
   * The users, quota, permissions, rates and networks file texts (null without --quota-file,
   * --permissions-file, --rates-file, --networks-file), validated by the primary. Sent on reload to every
   * worker that has had its fts:init; the worker answers `{ applied: true }` once they are in force, so that
   * `fts-admin reload` returns only when every worker uses them.
   */
  | { type: 'fts:users'; reqId: number; text: string; quotas: string | null; permissions: string | null; rates: string | null; networks: string | null }
  /** Re-read the TLS certificate and key (already validated by the primary). */
  | { type: 'fts:reload-tls' }
  | { type: 'fts:query'; reqId: number; what: 'stats' | 'sessions' | 'metrics' }
  | { type: 'fts:kick'; reqId: number; session: string }
  | { type: 'fts:answer'; reqId: number; data: unknown };

export interface WorkerStats {
  pid: number;
  connections: number;
  sessions: number;
  transfers: number;
  /** Upload hook runs running and waiting (--upload-hook); absent without one. */
  hooks?: number;
}

/** Questions a worker asks the primary (the cluster-wide authority on connections and bans). */
export type WorkerQuestion =
  | { kind: 'admit'; conn: string; ip: string }
  | { kind: 'penalty'; ip: string; points: number }
  | { kind: 'banned'; ip: string }
  /** The connection logged in as `user`: may it be one more of the user's sessions (--max-sessions-per-user)? */
  | { kind: 'login'; conn: string; user: string };

export type WorkerToPrimary =
  | { type: 'fts:ask'; reqId: number; question: WorkerQuestion }
  | { type: 'fts:conn'; conn: string; event: 'closed' }
  /** The connection logged in as `user` without asking (no per-user limit, or the primary did not answer). */
  | { type: 'fts:conn'; conn: string; event: 'logged-in'; user: string }
  /** Sent once the worker's message handler is installed: the primary answers with fts:init (or fts:abort). */
  | { type: 'fts:need-init' }
  /** The worker's listener is up. */
  | { type: 'fts:listening'; address: string; port: number }
  | { type: 'fts:reply'; reqId: number; data: WorkerStats | SessionInfo[] | { found: boolean } | { applied: true } | MetricsJson }
  /** The worker cannot start (its listener failed): the reason, for the primary's one stderr line. */
  | { type: 'fts:startup-failed'; reason: string }
  /** Sent just before a worker exits on purpose, so its counters outlive it (they must never go backwards). */
  | { type: 'fts:final-metrics'; metrics: MetricsJson }
  /** A connection refused before its greeting by the worker itself (counted in fts_rejections_total). */
  | { type: 'fts:rejected'; reason: 'proxy_header' }
  /** The worker's log output failed (log.ts whenLogOutputLost): the server must drain. */
  | { type: 'fts:log-output-lost'; reason: string };

export function isFtsMessage(msg: unknown): msg is { type: `fts:${string}` } {
  return typeof msg === 'object' && msg !== null && typeof (msg as { type?: unknown }).type === 'string' && (msg as { type: string }).type.startsWith('fts:');
}
