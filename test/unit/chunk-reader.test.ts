import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { mkdtemp, open, rm, statfs, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { AlignedSlabs } from '../../protocol/aligned-slabs.js';
import { setDirectIo } from '../../protocol/direct-io.js';
import { PayloadPool } from '../../protocol/payload-pool.js';
import { ChunkReader, FileShrank } from '../../protocol/chunk-reader.js';

const MiB = 1024 * 1024;

/** What the callers do with a read's error: wrap it (the server in an FtsError, the client in a local error). */
class Mapped extends Error {}
const failure = (err: unknown): Error => new Mapped('mapped', { cause: err });

/** Real files in a temporary directory, read as a download reads them, checked byte for byte. */
describe('ChunkReader (download reads: O_DIRECT for large files where the file system allows it)', function () {
  let dir: string;
  let direct: boolean;
  const source = randomBytes(9 * MiB + 12_345);

  before(async function () {
    dir = await mkdtemp(path.join(os.tmpdir(), 'fts-chunks-'));
    await writeFile(path.join(dir, 'big'), source);
    direct = await supportsDirect(dir);
  });
  after(async function () {
    setDirectIo(true);
    await rm(dir, { recursive: true, force: true });
  });

  /**
   * Reads the test file (declared `declared` bytes long) from `from` to `to` through reader.chunks() in
   * chunks of at most 1 MiB, checks that every chunk has what the file has there, releases every chunk, and
   * returns the chunk lengths and whether direct reads were in use at open and at the end.
   */
  async function readAll(
    pool: PayloadPool,
    from: number,
    { to = source.length, declared = source.length }: { to?: number; declared?: number } = {},
  ): Promise<{ lengths: number[]; directAtOpen: boolean; directAfter: boolean }> {
    const fh = await open(path.join(dir, 'big'), 'r');
    const reader = await ChunkReader.open(fh, declared, declared - from, pool, failure);
    const directAtOpen = reader.direct;
    const lengths: number[] = [];
    try {
      let at = from;
      for await (const { data, memory } of reader.chunks(from, to, MiB)) {
        expect(data.length).to.be.within(1, MiB);
        expect(data.equals(source.subarray(at, at + data.length)), `bytes at ${at}`).to.equal(true);
        pool.release(memory);
        lengths.push(data.length);
        at += data.length;
      }
      expect(at).to.equal(to);
      return { lengths, directAtOpen, directAfter: reader.direct };
    } finally {
      await reader.close();
      await fh.close();
    }
  }

  it('reads a large file from the start: directly where supported, full chunks and an unaligned tail', async function () {
    const pool = new PayloadPool(2 * MiB, 2, new AlignedSlabs(2 * MiB, 4));
    const { lengths, directAtOpen } = await readAll(pool, 0);
    expect(directAtOpen).to.equal(direct);
    expect(lengths).to.deep.equal([...Array<number>(9).fill(MiB), 12_345]);
  });

  it('a resume at an unaligned offset reads up to the next 4 KiB boundary first, then whole chunks', async function () {
    const pool = new PayloadPool(2 * MiB, 2, new AlignedSlabs(2 * MiB, 4));
    const { lengths } = await readAll(pool, 5000);
    const total = lengths.reduce((a, b) => a + b, 0);
    expect(total).to.equal(source.length - 5000);
    if (direct) expect(lengths[0]).to.equal(8192 - 5000);
  });

  it('a read that gets no aligned memory (arena all in use) goes through the page cache; direct reads go on with the next', async function () {
    // Memory one byte past an allocation: never in an arena, never page-aligned.
    let unaligned = 1;
    const real = new PayloadPool(2 * MiB, 2, new AlignedSlabs(2 * MiB, 4));
    const pool = {
      take: (n: number, forFile: boolean) => (unaligned-- > 0 ? Buffer.alloc(n + 1).subarray(1) : real.take(n, forFile)),
      release: (b: Buffer) => real.release(b),
    } as unknown as PayloadPool;
    const { lengths, directAfter } = await readAll(pool, 0);
    expect(lengths).to.deep.equal([...Array<number>(9).fill(MiB), 12_345]);
    expect(directAfter, 'still direct after the unaligned chunk and the small tail').to.equal(direct);
  });

  it('the last piece of a resume\'s hashed prefix (under 64 KiB, no aligned memory) does not turn direct reads off', async function () {
    const pool = new PayloadPool(2 * MiB, 2, new AlignedSlabs(2 * MiB, 4));
    const { directAfter } = await readAll(pool, 0, { to: 4 * MiB + 1234 });
    expect(directAfter).to.equal(direct);
  });

  it('a caller that stops after the first chunk leaves no read running: the chunk read ahead goes back to the pool', async function () {
    const real = new PayloadPool(2 * MiB, 2, new AlignedSlabs(2 * MiB, 4));
    let out = 0;
    const pool = {
      take: (n: number, forFile: boolean) => {
        out++;
        return real.take(n, forFile);
      },
      release: (b: Buffer) => {
        out--;
        real.release(b);
      },
    } as unknown as PayloadPool;
    const fh = await open(path.join(dir, 'big'), 'r');
    const reader = await ChunkReader.open(fh, source.length, source.length, pool, failure);
    try {
      for await (const { memory } of reader.chunks(0, source.length, MiB)) {
        pool.release(memory);
        expect(out, 'the next chunk is being read ahead').to.equal(1);
        break;
      }
      expect(out, 'the read-ahead was awaited and given back').to.equal(0);
    } finally {
      await reader.close();
      await fh.close();
    }
  });

  it('an EINVAL from a direct read into aligned memory falls back to the page cache for the rest of the file', async function () {
    if (!direct) this.skip();
    const pool = new PayloadPool(2 * MiB, 2, new AlignedSlabs(2 * MiB, 4));
    const fh = await open(path.join(dir, 'big'), 'r');
    const reader = await ChunkReader.open(fh, source.length, source.length, pool, failure);
    // The device wants another alignment: every read on any descriptor but the ordinary one fails.
    const proto = Object.getPrototypeOf(fh) as { read: (...a: unknown[]) => Promise<unknown> };
    const read = proto.read;
    proto.read = function (this: unknown, ...a: unknown[]) {
      if (this === fh) return read.apply(this, a);
      return Promise.reject(Object.assign(new Error('EINVAL: invalid argument, read'), { code: 'EINVAL' }));
    };
    try {
      const { data, memory } = await reader.read(0, MiB);
      expect(data.equals(source.subarray(0, MiB))).to.equal(true);
      pool.release(memory);
      expect(reader.direct, 'fell back').to.equal(false);
    } finally {
      proto.read = read;
      await reader.close();
      await fh.close();
    }
  });

  it('a file on another file system than its directory (a symbolic link to tmpfs) is not read directly', async function () {
    if (!direct) this.skip();
    let shm: string;
    try {
      shm = await mkdtemp('/dev/shm/fts-chunks-');
    } catch {
      this.skip();
    }
    try {
      if ((await statfs(shm)).type !== 0x01021994) this.skip(); // TMPFS_MAGIC
      await writeFile(path.join(shm, 'big'), source);
      await symlink(path.join(shm, 'big'), path.join(dir, 'link'));
      const pool = new PayloadPool(2 * MiB, 2, new AlignedSlabs(2 * MiB, 4));
      const fh = await open(path.join(dir, 'link'), 'r');
      const reader = await ChunkReader.open(fh, source.length, source.length, pool, failure); // the link is in an ext4/xfs/btrfs directory
      try {
        expect(reader.direct).to.equal(false);
      } finally {
        await reader.close();
        await fh.close();
      }
    } finally {
      await rm(path.join(dir, 'link'), { force: true });
      await rm(shm, { recursive: true, force: true });
    }
  });

  it('below 8 MiB to read, or with direct I/O turned off (--direct-io off), only the page cache is used', async function () {
    const pool = new PayloadPool(2 * MiB, 2, new AlignedSlabs(2 * MiB, 4));
    const fh = await open(path.join(dir, 'big'), 'r');
    try {
      const near = await ChunkReader.open(fh, source.length, 8 * MiB - 1, pool, failure);
      expect(near.direct).to.equal(false);
      setDirectIo(false);
      const off = await ChunkReader.open(fh, source.length, source.length, pool, failure);
      expect(off.direct).to.equal(false);
    } finally {
      setDirectIo(true);
      await fh.close();
    }
    expect((await readAll(pool, MiB + 1)).lengths.reduce((a, b) => a + b, 0)).to.equal(source.length - MiB - 1);
  });

  it('a file shorter than its size at open fails (FileShrank, through the caller\'s mapping) instead of giving short data', async function () {
    const pool = new PayloadPool(2 * MiB, 2, new AlignedSlabs(2 * MiB, 4));
    const err = await readAll(pool, 0, { to: source.length + MiB, declared: source.length + MiB }).then(() => null, (e: unknown) => e);
    expect(err).to.be.instanceOf(Mapped);
    expect((err as Mapped).cause).to.be.instanceOf(FileShrank);
  });

  it('a read error reaches the caller through its mapping', async function () {
    const pool = new PayloadPool(2 * MiB, 2, new AlignedSlabs(2 * MiB, 4));
    const fh = await open(path.join(dir, 'big'), 'r');
    const reader = await ChunkReader.open(fh, source.length, 1, pool, failure); // small: the ordinary descriptor
    await fh.close(); // reads now fail with EBADF
    const err = await reader.read(0, MiB).then(() => null, (e: unknown) => e);
    expect(err).to.be.instanceOf(Mapped);
    expect(((err as Mapped).cause as NodeJS.ErrnoException).code).to.equal('EBADF');
  });
});

/** Whether `dir` is on a file system the reader uses O_DIRECT on, and takes it. */
async function supportsDirect(dir: string): Promise<boolean> {
  if (![0xef53, 0x58465342, 0x9123683e].includes((await statfs(dir)).type)) return false;
  try {
    await (await open(path.join(dir, 'big'), constants.O_RDONLY | constants.O_DIRECT)).close();
    return true;
  } catch {
    return false;
  }
}
