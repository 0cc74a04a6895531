import { constants } from 'node:fs';
import { open, statfs, type FileHandle } from 'node:fs/promises';

/**
 * When to bypass the page cache (O_DIRECT) for a file's data, shared by the direct writer and the chunk
 * reader (server and client). Policy, the on/off setting and the one open; the reads and writes are the
 * callers'.
 */

/**
 * Files with at least this many bytes still to move are worth the extra open of a direct descriptor;
 * below it, the page cache is cheaper than the open.
 */
export const DIRECT_MIN_BYTES = 8 * 1024 * 1024;

/**
 * File systems (statfs f_type) where O_DIRECT is what it should be: a local block device, read and written
 * without the page cache. Elsewhere it is not used: on NFS, SMB or FUSE every direct transfer can become a
 * synchronous round trip to the server, and tmpfs has no device to bypass to.
 */
const DIRECT_IO_FILE_SYSTEMS = new Set([
  0xef53, // ext2/3/4
  0x58465342, // xfs
  0x9123683e, // btrfs
]);

/** Off for the whole process (the server's --direct-io off, the client's FTS_DIRECT_IO=off); on by default. */
let enabled = true;

/** Sets whether this process uses direct I/O at all (once, before the first transfer). */
export function setDirectIo(on: boolean): void {
  enabled = on;
}

/**
 * The value of the on/off settings (--direct-io, FTS_DIRECT_IO): true for on, false for off, null for
 * anything else (the caller reports it as an error rather than guess).
 */
export function parseDirectIoSetting(raw: string): boolean | null {
  const v = raw.trim().toLowerCase();
  return v === 'on' ? true : v === 'off' ? false : null;
}

/**
 * A second descriptor of the file open on `handle`, with O_DIRECT and `access` (O_RDONLY or O_WRONLY), when
 * `bytes` (still to move) reach DIRECT_MIN_BYTES and the open file is on a local block file system;
 * otherwise, or when the open fails, undefined (the caller uses `handle` and the page cache). The file
 * system is asked of the open file itself (statfs follows the /proc/self/fd link to it), not of its
 * directory: a symbolic link (a client's local file linked to NFS or tmpfs) or a bind-mounted file may be
 * elsewhere. Opened through /proc/self/fd, so it is the same file whatever has happened to its name since.
 */
export async function openDirect(handle: FileHandle, bytes: number, access: number): Promise<FileHandle | undefined> {
  const O_DIRECT = constants.O_DIRECT as number | undefined;
  if (!enabled || bytes < DIRECT_MIN_BYTES || O_DIRECT === undefined) return undefined;
  const self = `/proc/self/fd/${handle.fd}`;
  try {
    if (!DIRECT_IO_FILE_SYSTEMS.has((await statfs(self)).type)) return undefined;
    return await open(self, access | O_DIRECT);
  } catch {
    // No /proc, or no direct I/O for this file after all: the page cache it is.
    return undefined;
  }
}
