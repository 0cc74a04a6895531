import { expect } from 'chai';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { FtsError } from '../../protocol/index.js';
import { hashInto } from '../../client/upload.js';

const MiB = 1024 * 1024;

/**
 * The client's prefix hashing (a resume's kept bytes), on real files: large prefixes are read with O_DIRECT
 * where the file system allows it, small ones and whole-file digests the ordinary way; the results agree.
 */
describe('hashInto (hashing a prefix of a local file)', function () {
  let dir: string;
  let file: string;
  const data = randomBytes(20 * MiB + 777);
  const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

  before(async function () {
    dir = await mkdtemp(path.join(os.tmpdir(), 'fts-hash-'));
    file = path.join(dir, 'data.bin');
    await writeFile(file, data);
  });
  after(async function () {
    await rm(dir, { recursive: true, force: true });
  });

  async function hashed(limit: number, stop?: () => boolean): Promise<{ read: number; sha256: string }> {
    const fh = await open(file, 'r');
    try {
      const hash = createHash('sha256');
      const read = await hashInto(fh, hash, limit, file, stop);
      return { read, sha256: hash.digest('hex') };
    } finally {
      await fh.close();
    }
  }

  it('large, small and unaligned prefixes, and the whole file, hash to the digest of exactly those bytes', async function () {
    for (const limit of [12 * MiB + 123, 8 * MiB, 8 * MiB - 1, 3 * MiB + 5, data.length]) {
      const r = await hashed(limit);
      expect(r.read, `limit ${limit}`).to.equal(limit);
      expect(r.sha256, `limit ${limit}`).to.equal(sha(data.subarray(0, limit)));
    }
    const whole = await hashed(Number.MAX_SAFE_INTEGER);
    expect(whole).to.deep.equal({ read: data.length, sha256: sha(data) });
  });

  it('a file shorter than the prefix asked for reports fewer bytes than asked', async function () {
    const r = await hashed(data.length + 9 * MiB);
    expect(r.read).to.be.below(data.length + 9 * MiB);
  });

  it('stop() ends a long pass with IO_ERROR', async function () {
    let reads = 0;
    const err = await hashed(data.length, () => ++reads > 2).then(() => null, (e: unknown) => e);
    expect(err).to.be.instanceOf(FtsError);
    expect((err as FtsError).code).to.equal('IO_ERROR');
    expect((err as FtsError).message).to.contain('hashing stopped');
  });
});
