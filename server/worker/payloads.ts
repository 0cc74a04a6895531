import { framePayloadPool } from '../../protocol/payload-pool.js';

/** The worker's pool for every connection's payloads, received (uploads) and sent (downloads). */
export const workerPayloads = framePayloadPool();
