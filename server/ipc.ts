/**
 * Messages between the primary and its workers. Every type starts with "fts:" because prom-client shares
 * the same channel with its own "prom-client:*" messages; both sides ignore types they do not know.
 */
export type PrimaryToWorker =
  /** Stop accepting, let in-flight requests finish until `deadline` (epoch ms), then exit. */
  | { type: 'fts:drain'; deadline: number }
  /** Stop now: cut every connection (partial uploads are discarded, never published), then exit. */
  | { type: 'fts:abort' };

export type WorkerToPrimary =
  /** The worker's listener is up. */
  | { type: 'fts:listening'; address: string; port: number }
  /** Progress of a drain, for the primary's log. */
  | { type: 'fts:drain-progress'; sessions: number; busy: number };

export function isFtsMessage(msg: unknown): msg is { type: `fts:${string}` } {
  return typeof msg === 'object' && msg !== null && typeof (msg as { type?: unknown }).type === 'string' && (msg as { type: string }).type.startsWith('fts:');
}
