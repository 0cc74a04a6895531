import { createHash } from 'node:crypto';
import type { Request } from '../../../protocol/index.js';
import { ChunkReader } from '../../../protocol/chunk-reader.js';
import { DIRECT_MIN_BYTES } from '../../../protocol/direct-io.js';
import type { HandlerResult, SessionIo } from '../session-io.js';
import { workerPayloads } from '../payloads.js';
import { recentReads } from '../recent-reads.js';
import { hashRange, readFailure } from './download.js';

type HashRequest = Extract<Request, { op: 'hash' }>;

/**
 * The SHA-256 of one version of a file (§6.11): the one open on our descriptor, whatever happens to the
 * name meanwhile. The digest recorded when this very version was uploaded is answered without reading the
 * file (as a download announces it); any other file is read and hashed now, as a download would read it.
 * Needs the permission to read (`r`), since the digest tells whether a guess of the content is right.
 */
export async function hash(req: HashRequest, io: SessionIo): Promise<HandlerResult> {
  const file = await io.userStore().openRead(req.name);
  try {
    let sha256 = await file.recordedDigest();
    if (sha256 === null) {
      const digest = createHash('sha256');
      const again = file.size >= DIRECT_MIN_BYTES && recentReads.note(file.version);
      const reader = await ChunkReader.open(file.handle, file.size, file.size, workerPayloads, readFailure, again);
      try {
        await hashRange(reader, 0, file.size, digest, () => io.working());
      } finally {
        void reader.close(); // never rejects
      }
      sha256 = digest.digest('hex');
    }
    return { reply: { name: req.name, size: file.size, mtime: file.mtime, sha256 }, audit: { file: req.name, sha256 } };
  } finally {
    await file.close();
  }
}
