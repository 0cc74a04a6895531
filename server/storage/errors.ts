import { errnoOf, FtsError, type ErrorCode } from '../../protocol/index.js';

/**
 * Translates a filesystem error into the FtsError a client may see.
 *
 * The message is built from `what` (the caller passes the client's own file name, never a path) and a
 * fixed phrase per code, because Node's own error messages contain absolute server paths
 * ("ENOENT: no such file or directory, open '/srv/fts/alice/x'"). The original error is kept as `cause`
 * for the server's logs only; reply builders send `code` and `message`, never `cause`.
 */
export function fsError(err: unknown, what: string): FtsError {
  if (err instanceof FtsError) return err;
  const [code, detail] = describe(err);
  return new FtsError(code, `${what}: ${detail}`, {}, { cause: err });
}

/**
 * A failure of the directory fsync after a rename or unlink: the change is made, and visible, but not known
 * to be durable. The code is fsError's; the message says what happened, so that nobody is told "nothing
 * was published" about a file that is in place.
 */
export function notDurable(err: unknown, what: string, done: 'published' | 'deleted' | 'renamed' | 'discarded'): FtsError {
  const [code, detail] = err instanceof FtsError ? [err.code, err.message] : describe(err);
  return new FtsError(code, `${what}: ${done}, but syncing its directory failed (${detail}); the change may not survive a crash`, {}, { cause: err });
}

/** The code and the path-free phrase for a file-system error. */
function describe(err: unknown): [ErrorCode, string] {
  const errno = errnoOf(err);
  const [code, phrase] = classify(errno);
  // For the catch-all, the errno name helps an operator and reveals nothing about the server's layout.
  return [code, code === 'IO_ERROR' && errno !== undefined ? `${phrase} (${errno})` : phrase];
}


function classify(errno: string | undefined): [ErrorCode, string] {
  switch (errno) {
    case 'ENOENT':
      return ['NOT_FOUND', 'no such file'];
    // Names are single components and every fs call on a name uses O_NOFOLLOW, lstat or rename, so these
    // can only come from the final component: a symlink (ELOOP under O_NOFOLLOW) or a directory.
    case 'ELOOP':
    case 'EISDIR':
    // open(2) of a UNIX socket fails with ENXIO (and of some devices with ENODEV): not a file we serve.
    case 'ENXIO':
    case 'ENODEV':
      return ['NOT_A_FILE', 'not a regular file'];
    case 'ENOSPC':
    case 'EDQUOT':
      return ['NO_SPACE', 'no space left on the server'];
    case 'EROFS':
      return ['READ_ONLY', 'server storage is read-only'];
    // A legal name is at most 255 bytes, but some filesystems (eCryptfs, some NFS exports) allow less.
    case 'ENAMETOOLONG':
      return ['BAD_NAME', 'name is too long for the server storage'];
    // ENOTDIR would mean the user directory or the storage root is not a directory (we never append a
    // trailing slash to a name), which is a server fault, not something about the client's file.
    default:
      return ['IO_ERROR', 'server I/O error'];
  }
}
