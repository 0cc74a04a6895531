import type { ErrorCode } from '../../protocol/index.js';
import { HOOK_EVENTS, HOOK_RESULTS, type HookEvent, type HookResult } from '../worker/upload-hooks.js';
import { AggregatorRegistry, Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** One registry's metrics as prom-client serialises them for cluster aggregation. */
export type MetricsJson = Awaited<ReturnType<Registry['getMetricsAsJSON']>>;

/** Operations counted in fts_operations_total: the user-facing ones (auth has its own family). */
export const COUNTED_OPS = ['upload', 'download', 'view', 'delete', 'rename', 'discard', 'list', 'hash'] as const;
export type CountedOp = (typeof COUNTED_OPS)[number];
export type Direction = 'upload' | 'download';

/**
 * Buckets for whole operations, from a small-file metadata call (milliseconds) to a multi-GiB transfer on a
 * slow link (hours). prom-client's defaults stop at 10 s, which is useless for transfers.
 */
export const DURATION_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400];

/** Error codes that say the storage failed, rather than the client or the request. */
export const STORAGE_FAILURE_CODES = ['IO_ERROR', 'NO_SPACE', 'READ_ONLY'] as const satisfies readonly ErrorCode[];

/**
 * The error codes that say the server failed rather than the request or its user (a missing file, a bad
 * name, a quota): its storage, or a bug. Created at 0 for every op, so an alert on them works from the first
 * failure.
 */
export const SERVER_FAULT_CODES = [...STORAGE_FAILURE_CODES, 'INTERNAL'] as const satisfies readonly ErrorCode[];

export function isServerFault(code: string): boolean {
  return (SERVER_FAULT_CODES as readonly string[]).includes(code);
}

/** The `code` label of a request cut by its client leaving: nothing was sent, and the server did not fail. */
export const DISCONNECTED_CODE = 'disconnected';

export function isCountedOp(op: string): op is CountedOp {
  return (COUNTED_OPS as readonly string[]).includes(op);
}

/**
 * The fts_* metrics of one worker. Labels are bounded enums: never a user, a file name or an address.
 * Every known label set is created at 0 so that rates work from the first scrape.
 */
export class WorkerMetrics {
  readonly registry = new Registry();
  private readonly connections: Counter;
  private readonly sessions: Gauge;
  private readonly auth: Counter<'result'>;
  private readonly operations: Counter<'op' | 'result'>;
  private readonly operationErrors: Counter<'op' | 'code'>;
  private readonly quotaRefusals: Counter;
  private readonly bytes: Counter<'direction'>;
  private readonly duration: Histogram<'op'>;
  private readonly transfers: Gauge<'direction'>;
  private readonly locksCompromised: Counter;
  private readonly damagedFiles: Counter;
  private readonly throttledSeconds: Counter<'direction'>;
  private readonly uploadHooks: Counter<'event' | 'result'>;

  constructor() {
    const registers = [this.registry];
    this.connections = new Counter({ name: 'fts_connections_total', help: 'TCP connections accepted', registers });
    this.sessions = new Gauge({ name: 'fts_sessions_active', help: 'Authenticated sessions open now', registers });
    this.auth = new Counter({ name: 'fts_auth_attempts_total', help: 'Authentication attempts by result', labelNames: ['result'], registers });
    this.operations = new Counter({ name: 'fts_operations_total', help: 'Completed operations by type and result', labelNames: ['op', 'result'], registers });
    this.operationErrors = new Counter({ name: 'fts_operation_errors_total', help: `Operations that failed, by type and error code (PROTOCOL.md; ${DISCONNECTED_CODE}: the client left mid-request). ${SERVER_FAULT_CODES.join(', ')} are the server's failures; the rest are refusals of the request`, labelNames: ['op', 'code'], registers });
    this.bytes = new Counter({ name: 'fts_transfer_bytes_total', help: 'File payload bytes moved by uploads and downloads', labelNames: ['direction'], registers });
    this.duration = new Histogram({ name: 'fts_operation_duration_seconds', help: 'Duration of operations', labelNames: ['op'], buckets: DURATION_BUCKETS, registers });
    this.transfers = new Gauge({ name: 'fts_transfers_active', help: 'Uploads and downloads in flight', labelNames: ['direction'], registers });
    this.quotaRefusals = new Counter({ name: 'fts_quota_refusals_total', help: 'Uploads (and offset requests) refused with QUOTA_EXCEEDED', registers });
    this.throttledSeconds = new Counter({ name: 'fts_throttled_seconds_total', help: 'Seconds transfers waited for their session rate limit (--max-upload-rate, --max-download-rate)', labelNames: ['direction'], registers });
    this.uploadHooks = new Counter({ name: 'fts_upload_hooks_total', help: 'Runs of --upload-hook by the operation that called for it (upload, delete, rename, download: --hook-events) and result: ok, failed, timeout, killed (by a stop), dropped (queue full), unrun (the worker stopped first)', labelNames: ['event', 'result'], registers });
    this.damagedFiles = new Counter({ name: 'fts_damaged_files_total', help: 'Files a hash with read found no longer holding the bytes verified at their upload (bit rot on the storage; each is also logged at error, event damaged)', registers });
    this.locksCompromised = new Counter({ name: 'fts_lock_compromised_total', help: 'Per-name locks broken by another holder while held (clock skew, a stalled process)', registers });
    for (const result of ['success', 'failure']) this.auth.inc({ result }, 0);
    for (const event of HOOK_EVENTS) for (const result of HOOK_RESULTS) this.uploadHooks.inc({ event, result }, 0);
    for (const op of COUNTED_OPS) {
      for (const result of ['ok', 'error']) this.operations.inc({ op, result }, 0);
      for (const code of SERVER_FAULT_CODES) this.operationErrors.inc({ op, code }, 0);
      this.duration.zero({ op });
    }
    for (const direction of ['upload', 'download']) {
      this.bytes.inc({ direction }, 0);
      this.transfers.set({ direction }, 0);
      this.throttledSeconds.inc({ direction }, 0);
    }
    collectDefaultMetrics({ register: this.registry });
    // Constructed in every process: in a worker this installs prom-client's IPC responder, so the stock
    // AggregatorRegistry.clusterMetrics() works too. Our primary uses its own bounded query (see primary/metrics).
    AggregatorRegistry.setRegistries([this.registry]);
    new AggregatorRegistry();
  }

  connection(): void {
    this.connections.inc();
  }

  authAttempt(ok: boolean): void {
    this.auth.inc({ result: ok ? 'success' : 'failure' });
  }

  sessionOpened(): void {
    this.sessions.inc();
  }

  sessionClosed(): void {
    this.sessions.dec();
  }

  /** A completed operation; `failure` is its error code (DISCONNECTED_CODE when its client left), null if it succeeded. */
  operation(op: CountedOp, failure: ErrorCode | typeof DISCONNECTED_CODE | null, seconds: number): void {
    this.operations.inc({ op, result: failure === null ? 'ok' : 'error' });
    if (failure !== null) this.operationErrors.inc({ op, code: failure });
    this.duration.observe({ op }, seconds);
  }

  uploadHook(event: HookEvent, result: HookResult): void {
    this.uploadHooks.inc({ event, result });
  }

  quotaRefused(): void {
    this.quotaRefusals.inc();
  }

  transferBytes(direction: Direction, n: number): void {
    this.bytes.inc({ direction }, n);
  }

  transferStarted(direction: Direction): void {
    this.transfers.inc({ direction });
  }

  transferEnded(direction: Direction): void {
    this.transfers.dec({ direction });
  }

  throttled(direction: Direction, seconds: number): void {
    this.throttledSeconds.inc({ direction }, seconds);
  }

  fileDamaged(): void {
    this.damagedFiles.inc();
  }

  lockCompromised(): void {
    this.locksCompromised.inc();
  }

  snapshot(): Promise<MetricsJson> {
    return this.registry.getMetricsAsJSON();
  }
}
