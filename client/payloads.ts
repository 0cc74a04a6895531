import { MAX_CHUNK_BYTES } from '../protocol/limits.js';
import { framePayloadPool } from '../protocol/payload-pool.js';

/**
 * Reads of a local file being uploaded: several frames' worth at a time, since each read is a thread-pool
 * hand-off and, for a large file, a device round trip (see sendFile in upload.ts).
 */
export const UPLOAD_READ_BYTES = 4 * MAX_CHUNK_BYTES;

/**
 * Received data-frame payloads of every connection in this process, and the reads of files being
 * uploaded. A file download gives each payload back once it is written to LOCAL.part (the aligned slabs,
 * 96 MiB of address space of which only what is used becomes resident, let large downloads write and large
 * uploads read with O_DIRECT, see protocol/direct-writer.ts and chunk-reader.ts; a large download holds up
 * to ~17 MiB of them, an upload 8); downloadBuffer and view give theirs back once copied into the result,
 * and frames that are dropped are given back at once. A slab holds two upload reads.
 */
export const clientPayloads = framePayloadPool(12, 2 * UPLOAD_READ_BYTES);
