/**
 * The one table of error codes. Every error a client can see on the wire, and every error the CLI
 * reports, carries one of these codes. Codes are stable: never rename or reuse one.
 *
 * fatal: the server closes the connection after sending the error (the session does not survive).
 * exit:  the exit code the `fts` CLI uses when this error ends a command.
 */
export const ERROR_CODES = {
  PROTOCOL_ERROR: { fatal: true, exit: 1, message: 'malformed frame; the byte stream cannot be resynchronised' },
  FRAME_TOO_LARGE: { fatal: true, exit: 1, message: 'frame length exceeds the advertised limit' },
  BAD_REQUEST: { fatal: false, exit: 1, message: 'the request header is not a valid request' },
  UNKNOWN_OP: { fatal: false, exit: 1, message: 'unknown operation' },
  AUTH_REQUIRED: { fatal: false, exit: 3, message: 'log in first' },
  AUTH_FAILED: { fatal: true, exit: 3, message: 'authentication failed' },
  UNSUPPORTED_MECHANISM: { fatal: false, exit: 3, message: 'authentication mechanism not supported' },
  ALREADY_AUTHENTICATED: { fatal: false, exit: 1, message: 'this session is already authenticated' },
  BAD_NAME: { fatal: false, exit: 1, message: 'illegal file name' },
  NOT_FOUND: { fatal: false, exit: 4, message: 'no such file' },
  NOT_A_FILE: { fatal: false, exit: 1, message: 'not a regular file' },
  ALREADY_EXISTS: { fatal: false, exit: 1, message: 'a file of that name already exists' },
  PERMISSION_DENIED: { fatal: false, exit: 1, message: 'the server does not let you do that' },
  CHECKSUM_MISMATCH: { fatal: false, exit: 1, message: 'received bytes do not match the declared SHA-256' },
  CHUNK_CORRUPT: { fatal: false, exit: 1, message: 'a data frame failed its CRC32C check' },
  OFFSET_MISMATCH: { fatal: false, exit: 1, message: 'offset does not match the staged upload' },
  LOCKED: { fatal: false, exit: 1, message: 'the file is locked by another operation; retry' },
  NO_SPACE: { fatal: false, exit: 1, message: 'no space left on the server' },
  QUOTA_EXCEEDED: { fatal: false, exit: 1, message: 'the upload would exceed your storage quota' },
  FILE_TOO_LARGE: { fatal: false, exit: 1, message: 'the file is larger than the server accepts' },
  READ_ONLY: { fatal: false, exit: 1, message: 'server storage is read-only' },
  IO_ERROR: { fatal: false, exit: 1, message: 'server I/O error' },
  SHUTTING_DOWN: { fatal: true, exit: 1, message: 'server is shutting down' },
  LOGIN_TIMEOUT: { fatal: true, exit: 1, message: 'login not completed in time' },
  IDLE_TIMEOUT: { fatal: true, exit: 1, message: 'session idle for too long' },
  TRANSFER_STALLED: { fatal: true, exit: 1, message: 'no transfer progress for too long' },
  TOO_MANY_CONNECTIONS: { fatal: true, exit: 1, message: 'connection limit reached' },
  RATE_LIMITED: { fatal: true, exit: 1, message: 'this address is banned after too many failures' },
  KICKED: { fatal: true, exit: 1, message: 'session ended by an administrator' },
  TLS_REQUIRED: { fatal: true, exit: 1, message: 'this server requires TLS; connect with TLS (fts --tls)' },
  INTERNAL: { fatal: false, exit: 1, message: 'internal server error' },
} as const satisfies Record<string, { fatal: boolean; exit: number; message: string }>;
// Frozen, entries too: FtsError reads `fatal` from here, and no importer may change what a code means.
for (const entry of Object.values(ERROR_CODES)) Object.freeze(entry);
Object.freeze(ERROR_CODES);

export type ErrorCode = keyof typeof ERROR_CODES;

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && Object.hasOwn(ERROR_CODES, value);
}
