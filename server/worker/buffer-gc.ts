import v8 from 'node:v8';
import vm from 'node:vm';

/**
 * Keeps a transfer's garbage from growing the worker's RSS.
 *
 * Every socket read (64 KiB) arrives in a fresh Buffer whose bytes live outside the JS heap. V8 frees them
 * only when a garbage collection finds their small JS wrappers dead, and it schedules collections by
 * JS-heap allocation, which a transfer barely does: it lets up to 64 MiB of dead buffers pile up before
 * external-memory pressure forces a collection. So a single upload grew the worker by 30–55 MiB. Payloads
 * are copied out of the reads into the recycled pool (payload-pool.ts), so the reads die at once; a
 * young-generation collection (a scavenge, well under a millisecond on our small heaps) after every few
 * MiB received frees them while they are still young and bounds the pile to about that much.
 *
 * Measured (bench rss-growth, 2 GiB upload): every 2 MiB +2 MiB RSS, every 8 MiB +6 MiB, at a CPU cost
 * within noise. Collecting much more often than the pool recycles is counterproductive: buffers still in
 * flight survive two scavenges, get promoted, and then wait for a full collection (every 1 MiB without the
 * pool: +74 MiB).
 */
const COLLECT_EVERY_BYTES = 4 * 1024 * 1024;

type Collect = (options: { type: 'minor' }) => void;

function loadCollector(): Collect | null {
  try {
    // Exposes gc() to contexts created from now on, without a command-line flag; the main context is not
    // changed, so no code in the worker sees a global gc().
    v8.setFlagsFromString('--expose-gc');
    const gc: unknown = vm.runInNewContext('gc');
    return typeof gc === 'function' ? (gc as Collect) : null;
  } catch {
    return null;
  }
}

const collect = loadCollector();
let churn = 0;

/** Records `bytes` moved through fresh buffers; collects young garbage every COLLECT_EVERY_BYTES. */
export function noteBufferChurn(bytes: number): void {
  churn += bytes;
  if (churn < COLLECT_EVERY_BYTES) return;
  churn = 0;
  collect?.({ type: 'minor' });
}
