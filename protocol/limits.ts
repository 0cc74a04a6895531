/**
 * Every wire limit lives here so that the server, the client and the docs agree.
 * The decoder checks these before it buffers or allocates anything.
 */

/** Protocol identifier sent in the greeting. A client must refuse a major version it does not know. */
export const PROTOCOL = 'fts/1';

/** Frame prefix: 1 type byte + 4 length bytes (unsigned, big-endian). */
export const FRAME_PREFIX_BYTES = 5;

/** Data frame body starts with a CRC32C of the payload. */
export const DATA_CRC_BYTES = 4;

/** Default and hard ceiling for one header frame body (JSON text). */
export const DEFAULT_MAX_HEADER_BYTES = 16 * 1024;
export const MIN_MAX_HEADER_BYTES = 1024;
export const HARD_MAX_HEADER_BYTES = 1024 * 1024;

/**
 * Longest session token (ASCII characters) either side accepts. An auth header carrying one must fit the
 * smallest header limit a server may set (MIN_MAX_HEADER_BYTES) with room to spare; fts tokens are ~250 at
 * most (a 64-character user name).
 */
export const MAX_TOKEN_CHARS = 512;

/** Largest payload of one data frame. Bounds per-connection buffering to about this much. */
export const MAX_CHUNK_BYTES = 1024 * 1024;

/** Chunk size senders use by default; any size from 1 to MAX_CHUNK_BYTES is legal on the wire. */
export const DEFAULT_CHUNK_BYTES = 1024 * 1024;

/** `view` returns at most this many bytes from the start of a file. */
export const VIEW_BYTES = 1024;

/** File names are 1..255 bytes of UTF-8 (the common NAME_MAX of Linux filesystems). */
export const MAX_NAME_BYTES = 255;

/** Largest file size a header may declare: the largest integer JSON and JavaScript carry exactly. */
export const MAX_FILE_SIZE = Number.MAX_SAFE_INTEGER;

/** Request ids are unsigned 32-bit integers chosen by the client. */
export const MAX_REQUEST_ID = 0xffff_ffff;

/** Default TCP port: unprivileged, unassigned by IANA. */
export const DEFAULT_PORT = 5421;
