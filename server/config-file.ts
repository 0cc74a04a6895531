/**
 * Reading a file the operator names (the users file, the rules files, the TLS certificate and key, the
 * cluster secret) without letting a wrong one hang or
 * swamp the process reading it (the primary; a worker for its TLS pair): a FIFO would block the read for ever (and every reload queued behind it, and the exit),
 * /dev/zero would never end. Only a regular file of reasonable size is read.
 */
import { constants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { errnoReason } from '../protocol/index.js';

/** Far above any users or rules file (hundreds of thousands of users with SCRAM verifiers). */
/** "readable by group or others (mode 644)" for a secret's mode (readConfigFile's) that lets them read it, else null. */
export function exposedMode(mode: number): string | null {
  return (mode & 0o077) === 0 ? null : `readable by group or others (mode ${(mode & 0o777).toString(8)})`;
}

export const MAX_CONFIG_FILE_BYTES = 64 * 1024 * 1024;

const TOO_LARGE = `is larger than ${MAX_CONFIG_FILE_BYTES / 2 ** 20} MiB`;

export class ConfigFileUnusable extends Error {
  override name = 'ConfigFileUnusable';
}

/**
 * The bytes of `file` and its permission bits, from one open file (a file replaced by rename meanwhile is
 * judged as the one read). ConfigFileUnusable, with the reason in words, for anything else.
 */
export async function readConfigFile(file: string): Promise<{ bytes: Buffer; mode: number }> {
  let fh: FileHandle | null = null;
  try {
    // O_NONBLOCK: opening a FIFO for reading would wait for a writer; a regular file ignores the flag.
    fh = await open(file, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
    const st = await fh.stat();
    if (st.isDirectory()) throw Object.assign(new Error('is a directory'), { code: 'EISDIR' });
    if (!st.isFile()) throw new ConfigFileUnusable('is not a regular file (a FIFO, socket or device)');
    if (st.size > MAX_CONFIG_FILE_BYTES) throw new ConfigFileUnusable(TOO_LARGE);
    // Read to its end into one buffer (short reads fill it in turn), within the limit, even if it grew
    // since the stat: then the buffer grows.
    let buffer = Buffer.allocUnsafe(st.size + 1);
    let total = 0;
    for (;;) {
      if (total === buffer.length) {
        if (total > MAX_CONFIG_FILE_BYTES) throw new ConfigFileUnusable(TOO_LARGE);
        const grown = Buffer.allocUnsafe(Math.min(buffer.length * 2, MAX_CONFIG_FILE_BYTES + 1));
        buffer.copy(grown, 0, 0, total);
        buffer = grown;
      }
      const { bytesRead } = await fh.read(buffer, total, buffer.length - total, total);
      if (bytesRead === 0) break;
      total += bytesRead;
    }
    // The loop ends only with room left in a buffer of at most the limit + 1: total is within the limit.
    return { bytes: buffer.subarray(0, total), mode: st.mode & 0o777 };
  } catch (err) {
    if (err instanceof ConfigFileUnusable) throw err;
    throw new ConfigFileUnusable(errnoReason(err));
  } finally {
    await fh?.close().catch(() => undefined);
  }
}
