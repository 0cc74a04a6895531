import { framePayloadPool } from '../../protocol/payload-pool.js';

/**
 * The worker's pool for every connection's payloads, received (uploads) and sent (downloads). 48 aligned
 * slabs (96 MiB of address space, resident only as far as used) cover the in-flight payloads of ~16
 * concurrent large uploads (fewer fast ones: a fast upload's batches grow to 4 MiB, see
 * storage/staging-writes.ts), or ~24 large downloads (each holds a send and a read-ahead: up to two slabs);
 * beyond that, payloads come from ordinary memory, written and read through the page cache.
 */
export const workerPayloads = framePayloadPool(48);
