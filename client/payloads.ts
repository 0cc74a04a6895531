import { framePayloadPool } from '../protocol/payload-pool.js';

/**
 * Received data-frame payloads of every connection in this process. A file download gives each payload
 * back once it is written to LOCAL.part (32 aligned slabs let large downloads write with O_DIRECT, see
 * protocol/direct-writer.ts); downloadBuffer and view give theirs back once copied into the result, and
 * frames that are dropped are given back at once.
 */
export const clientPayloads = framePayloadPool(32);
