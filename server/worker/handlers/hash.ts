import { createHash } from 'node:crypto';
import type { Request } from '../../../protocol/index.js';
import { ChunkReader } from '../../../protocol/chunk-reader.js';
import type { ReadableFile } from '../../storage/store.js';
import { DIRECT_MIN_BYTES } from '../../../protocol/direct-io.js';
import type { HandlerResult, SessionIo } from '../session-io.js';
import { workerPayloads } from '../payloads.js';
import { recentReads } from '../recent-reads.js';
import { hashRange, readFailure } from './download.js';

type HashRequest = Extract<Request, { op: 'hash' }>;

/**
 * The SHA-256 of one version of a file (§6.11): the one open on our descriptor, whatever happens to the
 * name meanwhile. The digest recorded when this very version was uploaded is answered without reading the
 * file (as a download announces it) unless the client asks for a reading (`read`); any other file is read and
 * hashed now, as a download would read it.
 * Needs the permission to read (`r`), since the digest tells whether a guess of the content is right.
 */
export async function hash(req: HashRequest, io: SessionIo): Promise<HandlerResult> {
  const store = io.userStore();
  const file = await store.openRead(req.name);
  try {
    const recorded = await file.recordedDigest();
    const answered = req.read ? null : recorded;
    const read = answered === null;
    const sha256 = answered ?? (await readDigest(file, req.name, io));
    // The record belongs to this very version (inode, size, mtime, ctime): bytes that no longer hash to it
    // changed under the file system's feet (bit rot, or a write that restored the times).
    const damaged = recorded !== null && recorded !== sha256;
    if (damaged) io.log.error({ event: 'damaged', user: store.user, file: req.name, recorded, sha256 }, 'a file no longer has the bytes verified at its upload');
    return { reply: { name: req.name, size: file.size, mtime: file.mtime, sha256, read, ...(damaged ? { damaged } : {}) }, audit: { file: req.name, bytes: read ? file.size : 0, sha256 } };
  } finally {
    await file.close();
  }
}

/** Reads the whole file and hashes it, as a download would read it. */
async function readDigest(file: ReadableFile, name: string, io: SessionIo): Promise<string> {
  const digest = createHash('sha256');
  const again = file.size >= DIRECT_MIN_BYTES && recentReads.note(file.version);
  const reader = await ChunkReader.open(file.handle, file.size, file.size, workerPayloads, readFailure, again);
  try {
    await hashRange(reader, 0, file.size, digest, (position) => {
      io.working();
      io.progress(position, name); // what fts-admin sessions shows while a large file is read
    });
  } finally {
    void reader.close(); // never rejects
  }
  return digest.digest('hex');
}
