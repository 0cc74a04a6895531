import { framePayloadPool } from '../protocol/payload-pool.js';

/**
 * Received data-frame payloads of every connection in this process. A file download gives each payload
 * back once it is written to LOCAL.part; payloads kept in memory (downloadBuffer, view) are simply never
 * given back, and their slab is left to the GC.
 */
export const clientPayloads = framePayloadPool();
