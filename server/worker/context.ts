import type { RateLimits } from '../rate-limits.js';
import type { Networks } from '../auth/networks.js';
import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import type { UserTable } from '../auth/users.js';
import type { WorkerMetrics } from '../metrics/worker-metrics.js';
import type { Store } from '../storage/store.js';
import type { GateClient } from './gate-client.js';
import type { UploadHooks } from './upload-hooks.js';

/** What every session of one worker shares. */
export interface WorkerContext {
  readonly config: Config;
  readonly log: Logger;
  readonly store: Store;
  readonly metrics: WorkerMetrics;
  /** Admission, limits and penalties, decided by the primary for the whole cluster. */
  readonly gate: GateClient;
  /** Signs and checks session tokens; the same in every worker (and every node sharing the secret file). */
  readonly secret: Buffer;
  /**
   * Keys the salts and iteration counts of the SCRAM verifiers the server makes itself (unknown users,
   * plaintext entries): stored on the storage, so the same on every node and after restarts.
   */
  readonly saltKey: Buffer;
  /** The current user table; replaced wholesale on reload, never mutated. */
  users: UserTable;
  /** Each user's transfer rates (--max-*-rate, --rates-file); replaced wholesale on reload. */
  rates: RateLimits;
  /** Where each user may log in from (--networks-file); replaced wholesale on reload. */
  networks: Networks;
  /** Runs --upload-hook after each published upload; null without one. */
  readonly hooks: UploadHooks | null;
  /** Set once a drain starts: new requests are refused with SHUTTING_DOWN. */
  draining: boolean;
  /** A session finished a request (or closed); the drain uses it to notice when the worker is idle. */
  onSessionIdle(): void;
  /**
   * Logs a connection refused before its greeting (a limit, a ban): the first of each reason at once, then
   * at most one line a minute per reason, with how many since (a flood at the limit must not flood the log).
   */
  refused(reason: string, remote: string): void;
}
