import { crc32c } from './crc32c.js';
import { FRAME_DATA, FRAME_HEADER, type Header } from './frames.js';
import { DATA_CRC_BYTES, FRAME_PREFIX_BYTES, MAX_CHUNK_BYTES } from './limits.js';

/** Pure encoder: message in, bytes out. */
export function encodeHeader(header: Header): Buffer {
  const json = JSON.stringify(header);
  const bodyLength = Buffer.byteLength(json, 'utf8');
  const frame = Buffer.allocUnsafe(FRAME_PREFIX_BYTES + bodyLength);
  frame[0] = FRAME_HEADER;
  frame.writeUInt32BE(bodyLength, 1);
  frame.write(json, FRAME_PREFIX_BYTES, 'utf8');
  return frame;
}

/**
 * The 9-byte prefix of a data frame (type, length, CRC32C). It is returned apart from the payload so that
 * senders can hand both buffers to writev without copying the payload.
 */
export function encodeDataPrefix(payload: Uint8Array): Buffer {
  if (payload.length === 0 || payload.length > MAX_CHUNK_BYTES) {
    throw new RangeError(`data frame payload must be 1..${MAX_CHUNK_BYTES} bytes, got ${payload.length}`);
  }
  const prefix = Buffer.allocUnsafe(FRAME_PREFIX_BYTES + DATA_CRC_BYTES);
  prefix[0] = FRAME_DATA;
  prefix.writeUInt32BE(DATA_CRC_BYTES + payload.length, 1);
  prefix.writeUInt32BE(crc32c(payload), FRAME_PREFIX_BYTES);
  return prefix;
}

/** A whole data frame as one buffer (convenient for tests; hot paths use encodeDataPrefix). */
export function encodeData(payload: Uint8Array): Buffer {
  return Buffer.concat([encodeDataPrefix(payload), payload]);
}
