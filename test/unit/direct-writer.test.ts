import { expect } from 'chai';
import { createHash, randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { mkdtemp, open, readFile, rm, statfs, type FileHandle } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { AlignedSlabs, directIoPrefix } from '../../protocol/aligned-slabs.js';
import { DirectWriter } from '../../protocol/direct-writer.js';
import { PayloadPool } from '../../protocol/payload-pool.js';

const MiB = 1024 * 1024;

/** Real files in a temporary directory: what a receiver does with payloads, checked byte for byte. */
describe('DirectWriter (O_DIRECT where aligned, the page cache otherwise)', function () {
  let dir: string;
  const pool = new PayloadPool(2 * MiB, 2, new AlignedSlabs(2 * MiB, 4));

  before(async function () {
    dir = await mkdtemp(path.join(os.tmpdir(), 'fts-direct-'));
  });
  after(async function () {
    await rm(dir, { recursive: true, force: true });
  });

  /** Whether the temporary directory is on a file system the writer uses O_DIRECT on, and takes it. */
  async function supportsDirect(): Promise<boolean> {
    if (![0xef53, 0x58465342, 0x9123683e].includes((await statfs(dir)).type)) return false;
    try {
      await (await open(path.join(dir, 'probe'), constants.O_CREAT | constants.O_WRONLY | constants.O_DIRECT)).close();
      return true;
    } catch {
      return false;
    }
  }

  /** Writes `source` in frames of `frame` bytes (the last one shorter) through `writer`, as a receiver does. */
  async function receive(writer: DirectWriter, source: Buffer, frame: number): Promise<number> {
    let aligned = 0;
    for (let at = 0; at < source.length; at += frame) {
      const payload = pool.take(Math.min(frame, source.length - at));
      source.copy(payload, 0, at, at + payload.length);
      if (directIoPrefix([payload], at) === 1) aligned++;
      await writer.writeAt([payload], at);
      pool.release(payload);
    }
    return aligned;
  }

  /** Opens `name` in the temporary directory, runs `body` on it, closes it and returns what it holds. */
  async function inFile(name: string, body: (fh: FileHandle) => Promise<void>): Promise<Buffer> {
    const file = path.join(dir, name);
    const fh = await open(file, 'w+');
    try {
      await body(fh);
    } finally {
      await fh.close();
    }
    return readFile(file);
  }

  it('writes full aligned frames and an unaligned tail into one correct file', async function () {
    const source = randomBytes(9 * MiB + 12_345);
    const stored = await inFile('mixed', async (fh) => {
      const writer = await DirectWriter.forFile(fh, source.length);
      const direct = await supportsDirect();
      expect(writer.direct).to.equal(direct);
      const aligned = await receive(writer, source, MiB);
      expect(aligned, 'the nine full frames qualify for O_DIRECT').to.equal(9);
      expect(writer.direct, 'no direct write was refused').to.equal(direct);
      await writer.settle();
      await fh.sync();
      await writer.closeDirect();
      expect(writer.direct).to.equal(false);
    });
    expect(stored.equals(source)).to.equal(true);
  });

  it('writes frames of odd sizes (unaligned positions) through the page cache, correctly', async function () {
    const source = randomBytes(3 * MiB + 7);
    const stored = await inFile('odd', async (fh) => {
      // Declared large (as if more were to come), so the direct descriptor exists and is passed over.
      const writer = await DirectWriter.forFile(fh, 9 * MiB);
      expect(await receive(writer, source, 100_003)).to.equal(0);
      await writer.settle();
      await writer.closeDirect();
    });
    expect(stored.equals(source)).to.equal(true);
  });

  it('a file below the direct threshold (8 MiB to come) never opens a direct descriptor', async function () {
    const source = randomBytes(2 * MiB);
    const stored = await inFile('small', async (fh) => {
      const writer = await DirectWriter.forFile(fh, source.length);
      expect(writer.direct).to.equal(false);
      await receive(writer, source, MiB);
    });
    expect(stored.equals(source)).to.equal(true);
  });

  it('a file of unknown size (null) is written through the page cache until 8 MiB have come, then as a large one', async function () {
    const source = randomBytes(11 * MiB + 5);
    const stored = await inFile('unknown', async (fh) => {
      const writer = await DirectWriter.forFile(fh, null);
      expect(writer.direct, 'nothing opened for what may stay short').to.equal(false);
      await receive(writer, source.subarray(0, 8 * MiB), MiB);
      expect(writer.direct, 'still none: it opens at the first write past 8 MiB').to.equal(false);
      const payload = pool.take(source.length - 8 * MiB);
      source.copy(payload, 0, 8 * MiB);
      await writer.writeAt([payload], 8 * MiB);
      pool.release(payload);
      expect(writer.direct).to.equal(await supportsDirect());
      await writer.settle();
      await fh.sync();
      await writer.closeDirect();
    });
    expect(stored.equals(source)).to.equal(true);
  });

  it('a short file of unknown size never opens a direct descriptor', async function () {
    const source = randomBytes(MiB + 1);
    const stored = await inFile('unknown-short', async (fh) => {
      const writer = await DirectWriter.forFile(fh, null);
      await receive(writer, source, 64 * 1024);
      expect(writer.direct).to.equal(false);
    });
    expect(stored.equals(source)).to.equal(true);
  });

  it('keeps a large file correct across its background syncs (one every 64 MiB)', async function () {
    this.timeout(120_000);
    const block = randomBytes(MiB);
    const expected = createHash('sha256');
    const stored = await inFile('large', async (fh) => {
      const writer = await DirectWriter.forFile(fh, 130 * MiB);
      for (let i = 0; i < 130; i++) {
        const payload = pool.take(MiB);
        block.copy(payload);
        payload.writeUInt32BE(i, 0); // every block differs: a misplaced one changes the digest
        expected.update(payload);
        await writer.writeAt([payload], i * MiB);
        pool.release(payload);
      }
      await writer.settle();
      await fh.sync();
      await writer.closeDirect();
    });
    expect(createHash('sha256').update(stored).digest('hex')).to.equal(expected.digest('hex'));
  });

  it('a failed background sync fails every later write and settle(), and marks the writer failed', async function () {
    this.timeout(60_000);
    const file = path.join(dir, 'failing-sync');
    const real = await open(file, 'w+');
    // The real descriptor, except that fdatasync reports a writeback error (as EIO from a dying disk would).
    const fh = Object.create(real) as typeof real;
    fh.datasync = () => Promise.reject(Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' }));
    try {
      const writer = await DirectWriter.forFile(fh, 65 * MiB);
      const payload = pool.take(MiB);
      payload.fill(7);
      for (let i = 0; i < 64; i++) await writer.writeAt([payload], i * MiB); // the 64th starts a sync
      const settled = await writer.settle().then(() => null, (err: unknown) => err);
      expect((settled as NodeJS.ErrnoException | null)?.code).to.equal('EIO');
      expect(writer.failed).to.equal(true);
      const later = await writer.writeAt([payload], 64 * MiB).then(() => null, (err: unknown) => err);
      expect((later as NodeJS.ErrnoException | null)?.code, 'a write after the failed sync').to.equal('EIO');
      pool.release(payload);
      await writer.closeDirect();
    } finally {
      await real.close();
    }
  });
});
