/**
 * `fts upload - NAME`: the data comes from standard input. An upload declares its size before its data
 * (§6.1: the quota is checked and a resume is matched before a byte is sent), so the whole input must be
 * known first. A regular file redirected to standard input, and read from its start, is that already: it is
 * uploaded as it is, through /dev/stdin, resumable like any file. Anything else (a pipe, a socket) is first
 * copied to a private temporary file (a directory of mode 0700 under $TMPDIR, or the system's temporary
 * directory), which is removed when the command ends, also after a failure or Ctrl+C; a dropped connection
 * is resumed from that copy.
 */
import { createWriteStream, fstatSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { FtsError } from '../../protocol/index.js';
import { localFsError } from '../errors.js';

/** Where `fts upload -` reads from. */
export interface StdinFile {
  /** The path to upload. */
  readonly path: string;
  /** True when standard input was copied to a temporary file first. */
  readonly spooled: boolean;
  /** Removes the temporary copy, if any. Never throws. */
  dispose(): Promise<void>;
}

const STDIN_PATH = '/dev/stdin';

/**
 * What the copy gathers before a write (one writev of the pipe's 64 KiB reads): measured on the reference
 * VM, a 1 GB pipe was copied in 1.3 s with this against 2.5 s with the default 16 KiB.
 */
const COPY_BUFFER_BYTES = 1024 * 1024;

export async function stdinFile(): Promise<StdinFile> {
  if (await isWholeRegularFile()) return { path: STDIN_PATH, spooled: false, dispose: async () => undefined };
  const dir = await mkdtemp(path.join(os.tmpdir(), 'fts-stdin-')).catch((err: unknown) => {
    throw localFsError(err, os.tmpdir(), 'IO_ERROR');
  });
  const dispose = (): Promise<void> => rm(dir, { recursive: true, force: true }).catch(() => undefined);
  const file = path.join(dir, 'stdin');
  // Ctrl+C while the input is still coming (the writer of the pipe may not have been interrupted): stop
  // reading, so that the copy is removed and the command ends. The CLI's own handler sets the exit status.
  const stop = (): void => {
    process.stdin.destroy(new FtsError('IO_ERROR', 'interrupted while reading standard input'));
  };
  process.once('SIGINT', stop);
  try {
    await pipeline(process.stdin, createWriteStream(file, { flags: 'wx', mode: 0o600, highWaterMark: COPY_BUFFER_BYTES }));
  } catch (err) {
    await dispose();
    if (err instanceof FtsError) throw err;
    // A read error of the input carries no path; a write error names the copy (a full temporary directory).
    const where = (err as NodeJS.ErrnoException).path === undefined ? 'standard input' : `${file} (the copy of standard input; set TMPDIR to put it elsewhere)`;
    throw localFsError(err, where, 'IO_ERROR');
  } finally {
    process.off('SIGINT', stop);
  }
  return { path: file, spooled: true, dispose };
}

/**
 * Standard input is a regular file positioned at its start (`fts upload - NAME < file`): then /dev/stdin
 * opens that same file whole. One read from elsewhere in it (the shell consumed a part) is copied instead,
 * from where it stands, as a pipe would be.
 */
async function isWholeRegularFile(): Promise<boolean> {
  try {
    if (!fstatSync(0).isFile()) return false;
    const info = await readFile('/proc/self/fdinfo/0', 'utf8');
    return /^pos:\s+0$/m.test(info);
  } catch {
    return false;
  }
}
