/**
 * Words for the errno codes an operator or a user is likely to meet, instead of a bare "EISDIR" or libuv's
 * "ENOENT: no such file or directory, open '…'" (which also leaks a path into a client's reply). The one
 * table: fts-server's start-up lines use it, and so can the client's and the admin tool's messages.
 */
const ERRNO_WORDS: Readonly<Record<string, string>> = {
  ENOENT: 'no such file or directory',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EISDIR: 'is a directory',
  ENOTDIR: 'not a directory',
  ELOOP: 'too many levels of symbolic links',
  ENOSPC: 'no space left on device',
  EDQUOT: 'disk quota exceeded',
  EROFS: 'read-only file system',
  EEXIST: 'file exists',
  ENAMETOOLONG: 'file name too long',
  EMFILE: 'too many open files',
  ENFILE: 'too many open files in the system',
  EIO: 'input/output error',
  // listen(): the only addresses a server binds are its own, so these two read as what the operator must fix.
  EADDRINUSE: 'the port is in use',
  EADDRNOTAVAIL: 'no such local address',
  ECONNREFUSED: 'connection refused',
  ECONNRESET: 'connection reset by peer',
  ECONNABORTED: 'connection aborted',
  EPIPE: 'broken pipe',
  ETIMEDOUT: 'timed out',
  ENOTFOUND: 'host not found',
  EAI_AGAIN: 'temporary failure in name resolution',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
};

/** The `code` property of a Node system error ('ENOENT', …), if there is one. */
export function errnoOf(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err) {
    const code = (err as { code: unknown }).code;
    if (typeof code === 'string') return code;
  }
  return undefined;
}

/** "is a directory" for an errno-style error, else the error's own message. */
export function errnoWords(err: unknown): string {
  const code = errnoOf(err);
  if (code !== undefined && ERRNO_WORDS[code] !== undefined) return ERRNO_WORDS[code];
  return err instanceof Error ? err.message : String(err);
}

/**
 * "is a directory (EISDIR)": the words, and the code to search for. An error without words in the table
 * keeps its own message (which names its code).
 */
export function errnoReason(err: unknown): string {
  const code = errnoOf(err);
  return code !== undefined && ERRNO_WORDS[code] !== undefined ? `${ERRNO_WORDS[code]} (${code})` : errnoWords(err);
}
