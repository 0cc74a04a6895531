import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, rmdirSync, utimesSync } from 'node:fs';
import { lstat, mkdir, mkdtemp, readdir, readFile, rename, rm, stat, symlink, truncate, utimes, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { FtsError } from '../../protocol/index.js';
import { RECORD_MIN_BYTES, recordDigest, recordedDigest } from '../../server/storage/digest-records.js';
import { fsError, notDurable } from '../../server/storage/errors.js';
import { spareWriteBatchBytes } from '../../server/storage/staging.js';
import { SMALL_PARTIAL_BYTES } from '../../server/storage/staging-sweep.js';
import { lockTarget } from '../../server/storage/paths.js';
import { abandonedLocksBroken, DEFAULT_LOCK_WAIT_SECONDS, onLockCompromised, setLockWaitSeconds, sweepAbandonedLocks, withLock, withLocks, type LockCompromise } from '../../server/storage/locks.js';
import { makeDirectories } from '../../server/storage/private-dir.js';
import { Store, sweepStaging, type UserStore } from '../../server/storage/store.js';
import { loadSaltKey } from '../../server/storage/salt-key.js';
import { exists, waitUntil } from '../helpers/lifecycle-util.js';
import { whileLocked, withLockWait } from '../helpers/common.js';

const sha = (data: Buffer): string => createHash('sha256').update(data).digest('hex');

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    expect(err).to.be.instanceOf(FtsError);
    return (err as FtsError).code;
  }
  throw new Error('expected the promise to reject');
}

/** Uploads `data` in chunks of `chunk` bytes and commits. */
async function put(us: UserStore, name: string, data: Buffer, chunk = 7): Promise<{ mtime: number }> {
  const up = await us.beginUpload(name, data.length, { sha256: sha(data) });
  for (let i = 0; i < data.length; i += chunk) await up.write(data.subarray(i, i + chunk));
  return up.commit();
}

function hasMkfifo(): boolean {
  try {
    execFileSync('mkfifo', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

describe('storage', () => {
  let tmp: string;
  let root: string;
  let store: Store;
  let alice: UserStore;

  const stagingFiles = async (): Promise<string[]> => readdir(path.join(root, '.fts', 'staging', 'alice')).catch(() => []);
  const userFiles = async (): Promise<string[]> => (await readdir(path.join(root, 'alice'))).sort();

  beforeEach(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'fts-store-'));
    root = path.join(tmp, 'storage');
    store = new Store(root);
    await store.init();
    await loadSaltKey(root); // what the primary's start makes: Store.user looks for it
    alice = await store.user('alice');
  });

  afterEach(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  describe('Store', () => {
    it('refuses a relative root', () => {
      expect(() => new Store('relative/root')).to.throw(/absolute/);
    });

    it('creates the layout with private modes', async () => {
      expect((await stat(root)).mode & 0o777).to.equal(0o700);
      expect((await stat(path.join(root, '.fts', 'staging'))).isDirectory()).to.equal(true);
      expect((await stat(path.join(root, '.fts', 'locks'))).isDirectory()).to.equal(true);
      expect((await stat(path.join(root, '.fts', 'digests'))).mode & 0o777).to.equal(0o700);
      expect((await stat(path.join(root, '.fts', 'partial-names'))).mode & 0o777).to.equal(0o700);
      expect((await stat(path.join(root, 'alice'))).mode & 0o777).to.equal(0o700);
      // The writability probe cleaned up after itself; the space reserve (space-reserve.ts) stays, private.
      const reserve = [0, 1, 2, 3].map((i) => `space-reserve.${i}`);
      expect((await readdir(path.join(root, '.fts'))).sort()).to.deep.equal(['digests', 'locks', 'partial-names', 'scram-salt-key', ...reserve, 'staging']);
      for (const file of reserve) {
        const st = await stat(path.join(root, '.fts', file));
        expect([st.isFile(), st.size, st.mode & 0o777], file).to.deep.equal([true, 16 * 1024, 0o600]);
      }
    });

    it('init fails clearly when the root is not a directory', async () => {
      const file = path.join(tmp, 'plainfile');
      await writeFile(file, 'x');
      let error: unknown;
      try {
        await new Store(file).init();
      } catch (err) {
        error = err;
      }
      expect(error).to.be.instanceOf(Error);
      expect((error as Error).message).to.include(file);
    });

    it('init fails clearly when staging/ or locks/ cannot be written (every upload or delete would fail), and leaves no probe', async function () {
      // chattr +i refuses writes even to root; where it is not supported (tmpfs, no e2fsprogs) this is skipped.
      for (const sub of ['staging', 'locks']) {
        const dir = path.join(root, '.fts', sub);
        try {
          execFileSync('chattr', ['+i', dir], { stdio: 'ignore' });
        } catch {
          this.skip();
        }
        try {
          const error = await new Store(root).init().then(() => null, (err: unknown) => err);
          expect(error, sub).to.be.instanceOf(Error);
          expect((error as Error).message).to.include(`probe in ${dir} (is it writable?) failed`);
        } finally {
          execFileSync('chattr', ['-i', dir]);
        }
        expect((await readdir(dir)).filter((n) => n.startsWith('.probe-')), `probes left in ${sub}`).to.deep.equal([]);
      }
      await new Store(root).init(); // and starts once it can
      for (const sub of ['staging', 'locks']) expect((await readdir(path.join(root, '.fts', sub))).filter((n) => n.startsWith('.probe-'))).to.deep.equal([]);
    });

    it('refuses a user directory that is a symlink', async () => {
      const elsewhere = path.join(tmp, 'elsewhere');
      await mkdir(elsewhere);
      await symlink(elsewhere, path.join(root, 'mallory'));
      expect(await codeOf(store.user('mallory'))).to.equal('IO_ERROR');
    });

    it('returns the same UserStore for the same user', async () => {
      expect(await store.user('alice')).to.equal(alice);
    });

    it('checks the user directory at every login: one replaced by a symlink is refused, one removed is made again', async () => {
      await store.user('carol');
      const carolDir = path.join(root, 'carol');
      const elsewhere = path.join(tmp, 'carol-elsewhere');
      await mkdir(elsewhere);
      await rename(carolDir, path.join(tmp, 'carol-moved'));
      await symlink(elsewhere, carolDir);
      expect(await codeOf(store.user('carol'))).to.equal('IO_ERROR');
      expect(await codeOf(store.user('carol')), 'still refused at the next login').to.equal('IO_ERROR');
      await rm(carolDir);
      const again = await store.user('carol');
      expect((await lstat(carolDir)).isDirectory()).to.equal(true);
      await put(again, 'x', Buffer.from('x'));
      expect(await readdir(elsewhere)).to.deep.equal([]);
      expect(await readdir(carolDir)).to.deep.equal(['x']);
    });
  });

  describe('upload', () => {
    it('publishes exactly the bytes written', async () => {
      const data = Buffer.from('hello, world\n'.repeat(1000));
      const before = Date.now();
      const { mtime } = await put(alice, 'greeting.txt', data, 4096);
      expect(await readFile(path.join(root, 'alice', 'greeting.txt'))).to.deep.equal(data);
      expect(Number.isInteger(mtime)).to.equal(true);
      expect(mtime).to.be.within(before - 2000, Date.now() + 2000);
      expect((await stat(path.join(root, 'alice', 'greeting.txt'))).mode & 0o777).to.equal(0o600);
      expect(await stagingFiles()).to.deep.equal([]);
    });

    it('publishes an empty file', async () => {
      await put(alice, 'empty', Buffer.alloc(0));
      expect((await stat(path.join(root, 'alice', 'empty'))).size).to.equal(0);
    });

    it('keeps partial data out of the user directory until commit', async () => {
      const data = Buffer.from('partial data');
      const up = await alice.beginUpload('p.txt', data.length, { sha256: sha(data) });
      await up.write(data.subarray(0, 5));
      expect(up.received).to.equal(5);
      expect(await userFiles()).to.deep.equal([]);
      expect(await stagingFiles()).to.have.length(1);
      await up.write(data.subarray(5));
      await up.commit();
      expect(await userFiles()).to.deep.equal(['p.txt']);
    });

    it('publishes nothing and leaves no staging file on a checksum mismatch', async () => {
      const data = Buffer.from('the real bytes');
      const up = await alice.beginUpload('x', data.length, { sha256: sha(Buffer.from('other bytes!!!')) });
      await up.write(data);
      expect(await codeOf(up.commit())).to.equal('CHECKSUM_MISMATCH');
      expect(await userFiles()).to.deep.equal([]);
      expect(await stagingFiles()).to.deep.equal([]);
    });

    it('publishes nothing on a size mismatch (short or long)', async () => {
      const data = Buffer.from('0123456789');
      const short = await alice.beginUpload('short', data.length, { sha256: sha(data) });
      await short.write(data.subarray(0, 9));
      expect(await codeOf(short.commit())).to.equal('CHECKSUM_MISMATCH');

      const long = await alice.beginUpload('long', data.length, { sha256: sha(data) });
      await long.write(data);
      await long.write(Buffer.from('!'));
      expect(long.received).to.equal(11);
      expect(await codeOf(long.commit())).to.equal('CHECKSUM_MISMATCH');

      expect(await userFiles()).to.deep.equal([]);
      expect(await stagingFiles()).to.deep.equal([]);
    });

    it('regression (fixed): a staging file that only looked gone for a moment is never published short: OFFSET_MISMATCH at the bytes it holds, kept for a resume', async () => {
      // The staging file is renamed away and back, as a lookup that failed for a moment (an unsearchable
      // directory, an NFS timeout) looked to the upload: it took its file for taken over and stopped
      // writing, yet the commit renamed the short file into place and answered ok (its digest covers the
      // bytes received, not the bytes stored).
      const MiB = 1024 * 1024;
      const data = randomBytes(4 * MiB);
      const tag = { sha256: sha(data) };
      const up = await alice.beginUpload('blink.bin', data.length, tag);
      await up.write(data.subarray(0, MiB));
      await up.writesDone();
      const [file] = await stagingFiles();
      const staged = path.join(root, '.fts', 'staging', 'alice', file!);
      await rename(staged, `${staged}.away`);
      await new Promise((resolve) => setTimeout(resolve, 1_100)); // past the once-a-second check
      await up.write(data.subarray(MiB, 2 * MiB)); // written, then the check finds no file under the name
      await up.writesDone();
      await rename(`${staged}.away`, staged);
      await up.write(data.subarray(2 * MiB));
      const err = await up.commit().then(
        () => null,
        (e: unknown) => e,
      );
      expect(err, 'the commit').to.be.instanceOf(FtsError);
      expect([(err as FtsError).code, (err as FtsError).details['offset']]).to.deep.equal(['OFFSET_MISMATCH', 2 * MiB]);
      expect(await userFiles(), 'nothing published').to.deep.equal([]);
      expect(await alice.stagedOffset('blink.bin', data.length, tag), 'the prefix is kept').to.equal(2 * MiB);
      const resumed = await alice.beginUpload('blink.bin', data.length, tag, 2 * MiB);
      await resumed.write(data.subarray(2 * MiB));
      await resumed.commit();
      expect((await readFile(path.join(root, 'alice', 'blink.bin'))).equals(data)).to.equal(true);
    });

    it('keeps verified bytes that could not be published (the name stayed locked): a retry resumes at offset = size', async () => {
      const data = Buffer.from('verified, durable, not published');
      const tag = { sha256: sha(data) };
      expect(await whileLocked(root, 'alice', 'blocked', () => codeOf(put(alice, 'blocked', data)))).to.equal('LOCKED');
      expect(await alice.stagedOffset('blocked', data.length, tag)).to.equal(data.length);
      await (await alice.beginUpload('blocked', data.length, tag, data.length)).commit();
      expect((await readFile(path.join(root, 'alice', 'blocked'))).equals(data)).to.equal(true);
      expect(await stagingFiles()).to.deep.equal([]);
    });

    it('a resume whose prefix copy is stopped by its caller (the client left) keeps the partial file as it was and leaves no copy', async () => {
      const MiB = 1024 * 1024;
      const data = Buffer.alloc(3 * MiB, 7);
      const tag = { sha256: sha(data) };
      const first = await alice.beginUpload('cut', data.length, tag);
      await first.write(data.subarray(0, 2 * MiB + 512));
      await first.release();
      const before = await stagingFiles();
      expect(before).to.have.length(1);
      const offset = await alice.stagedOffset('cut', data.length, tag);
      expect(offset, 'more than one copy piece is staged').to.be.greaterThan(MiB);
      let calls = 0;
      const left = new Error('the client left');
      const err = await alice.beginUpload('cut', data.length, tag, offset, () => {
        calls++;
        throw left;
      }).then(() => null, (e: unknown) => e);
      expect(err, 'the caller\'s error comes back as it is').to.equal(left);
      expect(calls, 'the copy stopped at the first piece').to.equal(1);
      expect(await stagingFiles(), 'the partial file stays, the copy is gone').to.deep.equal(before);
      expect(await alice.stagedOffset('cut', data.length, tag)).to.equal(offset);
    });

    it('a resume copies a large staged prefix (read and written with O_DIRECT where supported) and publishes exactly the file', async () => {
      const MiB = 1024 * 1024;
      const data = randomBytes(20 * MiB + 999);
      const tag = { sha256: sha(data) };
      const first = await alice.beginUpload('large-resume', data.length, tag);
      for (let at = 0; at < 12 * MiB + 4321; at += MiB) await first.write(Buffer.from(data.subarray(at, Math.min(at + MiB, 12 * MiB + 4321))));
      await first.release();
      const offset = await alice.stagedOffset('large-resume', data.length, tag);
      expect(offset).to.equal(12 * MiB + 4321);
      let pieces = 0;
      const second = await alice.beginUpload('large-resume', data.length, tag, offset, () => {
        pieces++;
      });
      expect(pieces, 'copied piece by piece').to.be.greaterThan(1);
      expect(await stagingFiles(), 'the old partial file is gone').to.have.length(1);
      for (let at = offset; at < data.length; at += MiB) await second.write(Buffer.from(data.subarray(at, Math.min(at + MiB, data.length))));
      await second.commit();
      expect((await readFile(path.join(root, 'alice', 'large-resume'))).equals(data)).to.equal(true);
      expect(await stagingFiles()).to.deep.equal([]);
    });

    it('records a digest only for the file it was given: a name that holds another file by now gets none', async () => {
      const target = path.join(root, 'alice', 'big.bin');
      await writeFile(target, Buffer.alloc(0));
      await truncate(target, RECORD_MIN_BYTES);
      const st = await stat(target, { bigint: true });
      const digest = 'ab'.repeat(32);
      await recordDigest(root, 'alice', 'big.bin', target, { ino: st.ino + 1n, size: st.size, mtimeNs: st.mtimeNs }, digest);
      expect(await recordedDigest(root, 'alice', 'big.bin', st), 'another publish\'s file').to.equal(null);
      await recordDigest(root, 'alice', 'big.bin', target, st, digest);
      expect(await recordedDigest(root, 'alice', 'big.bin', st)).to.equal(digest);
    });

    it("publishes into a user directory that was removed while the server ran (made again, mode 0700)", async () => {
      const data = Buffer.from('after the directory went away');
      await rm(path.join(root, 'alice'), { recursive: true });
      await put(alice, 'back.txt', data);
      expect((await readFile(path.join(root, 'alice', 'back.txt'))).equals(data)).to.equal(true);
      expect((await stat(path.join(root, 'alice'))).mode & 0o777).to.equal(0o700);
    });

    it('concurrent large uploads in small pieces (batches growing while writes run) stage exactly their bytes, and give back what their batches borrowed', async function () {
      this.timeout(60_000);
      const MiB = 1024 * 1024;
      const spare = spareWriteBatchBytes();
      let lowest = spare;
      const files = [0, 1, 2, 3].map(() => randomBytes(10 * MiB + 123));
      const ups = await Promise.all(files.map((data, i) => alice.beginUpload(`big${i}`, data.length, { sha256: sha(data) })));
      // 0 and 1 are published, 2 is kept for a resume after 7 MiB + 5, 3 is aborted after 5 MiB.
      const stops = [Infinity, Infinity, 7 * MiB + 5, 5 * MiB];
      await Promise.all(ups.map(async (up, i) => {
        const data = files[i]!;
        const end = Math.min(data.length, stops[i]!);
        for (let at = 0; at < end; at += 192 * 1024) {
          await up.write(Buffer.from(data.subarray(at, Math.min(at + 192 * 1024, end))));
          lowest = Math.min(lowest, spareWriteBatchBytes());
        }
      }));
      // Pieces arrive within microtasks, a write takes at least an event-loop turn: the batches did grow.
      expect(lowest).to.be.lessThan(spare);
      await Promise.all([ups[0]!.commit(), ups[1]!.commit(), ups[2]!.release(), ups[3]!.abort()]);
      for (const i of [0, 1]) expect((await readFile(path.join(root, 'alice', `big${i}`))).equals(files[i]!), `big${i}`).to.equal(true);
      expect(await alice.stagedOffset('big2', files[2]!.length, { sha256: sha(files[2]!) })).to.equal(7 * MiB + 5);
      expect(await alice.stagedOffset('big3', files[3]!.length, { sha256: sha(files[3]!) })).to.equal(0);
      expect(spareWriteBatchBytes()).to.equal(spare);
    });

    it('release while a write() waits for the disk keeps every byte written so far, once (writes never overlap)', async () => {
      const MiB = 1024 * 1024;
      const data = randomBytes(8 * MiB);
      const tag = { sha256: sha(data) };
      const up = await alice.beginUpload('waiting', data.length, tag);
      // The first MiB starts a write; the next ones gather behind it until the batch is full and write() waits.
      let at = 0;
      let waiting: Promise<void> | null = null;
      while (waiting === null && at < data.length) {
        let settled = false;
        const w = up.write(Buffer.from(data.subarray(at, at + MiB))).finally(() => {
          settled = true;
        });
        at += MiB;
        // A write() that returns at once has settled after these two turns (its body, then the finally);
        // one that waits for the disk cannot have: a write takes at least an event-loop turn.
        await Promise.resolve();
        await Promise.resolve();
        if (!settled) waiting = w;
      }
      expect(at, 'write() waited with a full batch').to.be.within(4 * MiB, 6 * MiB);
      await Promise.all([waiting, up.release()]);
      expect(await alice.stagedOffset('waiting', data.length, tag)).to.equal(at);
      const kept = await readFile(path.join(root, '.fts', 'staging', 'alice', (await stagingFiles())[0]!));
      expect(kept.equals(data.subarray(0, at))).to.equal(true);
    });

    it('abort leaves nothing behind and is idempotent', async () => {
      const data = Buffer.from('abc');
      const up = await alice.beginUpload('a', data.length, { sha256: sha(data) });
      await up.write(data);
      await Promise.all([up.abort(), up.abort()]);
      await up.abort();
      expect(await userFiles()).to.deep.equal([]);
      expect(await stagingFiles()).to.deep.equal([]);
    });

    it('refuses a bad name before creating anything', async () => {
      expect(await codeOf(alice.beginUpload('../bob/x', 1, { sha256: sha(Buffer.from('x')) }))).to.equal('BAD_NAME');
      expect(await codeOf(alice.beginUpload('x', -1, { sha256: sha(Buffer.from('x')) }))).to.equal('BAD_REQUEST');
      expect(await codeOf(alice.beginUpload('x', 1, { sha256: 'ABC' }))).to.equal('BAD_REQUEST');
      expect(await stagingFiles()).to.deep.equal([]);
    });

    it('replaces an existing file atomically; an open reader keeps the old version', async () => {
      const v1 = Buffer.from('version one');
      const v2 = Buffer.from('version two, longer');
      await put(alice, 'doc', v1);
      const reader = await alice.openRead('doc');
      await put(alice, 'doc', v2);
      expect(await readFile(path.join(root, 'alice', 'doc'))).to.deep.equal(v2);
      const old = Buffer.alloc(reader.size);
      await reader.handle.read(old, 0, old.length, 0);
      expect(old).to.deep.equal(v1);
      await reader.close();
      await reader.close();
      expect(await userFiles()).to.deep.equal(['doc']);
    });

    it('replaces a symlink with the file, never writing through it', async () => {
      const target = path.join(tmp, 'outside.txt');
      await writeFile(target, 'outside');
      await symlink(target, path.join(root, 'alice', 'link'));
      await put(alice, 'link', Buffer.from('inside'));
      expect(await readFile(target, 'utf8')).to.equal('outside');
      expect((await lstat(path.join(root, 'alice', 'link'))).isFile()).to.equal(true);
    });

    it('eight concurrent commits to one name leave exactly one complete version', async function () {
      this.timeout(30_000);
      const versions = Array.from({ length: 8 }, (_, i) => Buffer.alloc(64 * 1024 + i, String.fromCharCode(65 + i)));
      const uploads = await Promise.all(versions.map((v) => alice.beginUpload('race', v.length, { sha256: sha(v) })));
      await Promise.all(uploads.map((u, i) => u.write(versions[i] as Buffer)));
      const results = await Promise.all(uploads.map((u) => u.commit()));
      const final = await readFile(path.join(root, 'alice', 'race'));
      // The versions differ in length, so the published one is known; its commit reported the mtime of
      // exactly the file now under the name (each commit reports its own file's mtime, not a successor's).
      const winner = versions.findIndex((v) => v.equals(final));
      expect(winner, 'the published file is one complete version').to.be.at.least(0);
      const published = await stat(path.join(root, 'alice', 'race'), { bigint: true });
      expect(results[winner]!.mtime, "the winner's reported mtime").to.equal(Number(published.mtimeNs / 1_000_000n));
      for (const r of results) expect(Number.isSafeInteger(r.mtime), 'every commit reports an integer mtime').to.equal(true);
      expect(await userFiles()).to.deep.equal(['race']);
      expect(await stagingFiles()).to.deep.equal([]);
    });
  });

  describe('openRead', () => {
    it('returns size and integer mtime', async () => {
      await put(alice, 'f', Buffer.from('12345'));
      const f = await alice.openRead('f');
      expect(f.size).to.equal(5);
      expect(Number.isInteger(f.mtime)).to.equal(true);
      await f.close();
    });

    it('NOT_FOUND when missing, BAD_NAME for an illegal name', async () => {
      expect(await codeOf(alice.openRead('missing'))).to.equal('NOT_FOUND');
      expect(await codeOf(alice.openRead('../../etc/passwd'))).to.equal('BAD_NAME');
    });

    it('refuses a symlink, a directory and a FIFO with NOT_A_FILE', async function () {
      await writeFile(path.join(tmp, 'secret'), 'secret');
      await symlink(path.join(tmp, 'secret'), path.join(root, 'alice', 'link'));
      await mkdir(path.join(root, 'alice', 'dir'));
      expect(await codeOf(alice.openRead('link'))).to.equal('NOT_A_FILE');
      expect(await codeOf(alice.openRead('dir'))).to.equal('NOT_A_FILE');
      if (hasMkfifo()) {
        execFileSync('mkfifo', [path.join(root, 'alice', 'fifo')]);
        // Without O_NONBLOCK this open would wait forever for a writer.
        expect(await codeOf(alice.openRead('fifo'))).to.equal('NOT_A_FILE');
      }
    });

    it('error messages never contain server paths', async () => {
      await symlink(path.join(tmp, 'nowhere'), path.join(root, 'alice', 'link'));
      for (const name of ['missing', 'link']) {
        const err = await alice.openRead(name).then(
          () => expect.fail(`openRead(${name}) should fail`),
          (e: unknown) => e as Error,
        );
        expect(err.message).to.include(name);
        expect(err.message).not.to.include(tmp);
      }
    });
  });

  describe('delete', () => {
    it('removes a file', async () => {
      await put(alice, 'gone', Buffer.from('x'));
      await alice.delete('gone');
      expect(await userFiles()).to.deep.equal([]);
    });

    it('NOT_FOUND when missing', async () => {
      expect(await codeOf(alice.delete('never'))).to.equal('NOT_FOUND');
    });

    it('refuses a symlink and leaves it and its target intact', async () => {
      const target = path.join(tmp, 'keep.txt');
      await writeFile(target, 'keep');
      await symlink(target, path.join(root, 'alice', 'link'));
      expect(await codeOf(alice.delete('link'))).to.equal('NOT_A_FILE');
      expect(await readFile(target, 'utf8')).to.equal('keep');
      expect((await lstat(path.join(root, 'alice', 'link'))).isSymbolicLink()).to.equal(true);
    });

    it('refuses a directory', async () => {
      await mkdir(path.join(root, 'alice', 'sub'));
      expect(await codeOf(alice.delete('sub'))).to.equal('NOT_A_FILE');
    });

    it('waits for a lock held on the same name', async () => {
      await put(alice, 'busy', Buffer.from('x'));
      const order: string[] = [];
      let release!: () => void;
      const held = withLock(root, 'alice', 'busy', async () => {
        order.push('locked');
        await new Promise<void>((resolve) => {
          release = resolve;
        });
        order.push('unlocking');
      });
      // withLock runs fn once it holds the lock; bounded, so a lock never taken fails here instead of hanging.
      await waitUntil('the lock to be held', () => order.length > 0, 5_000, 5);
      const deleting = alice.delete('busy').then(() => order.push('deleted'));
      await new Promise((r) => setTimeout(r, 100));
      expect(order).to.deep.equal(['locked']);
      release();
      await Promise.all([held, deleting]);
      expect(order).to.deep.equal(['locked', 'unlocking', 'deleted']);
    });
  });

  describe('rename', () => {
    const content = async (name: string): Promise<string> => readFile(path.join(root, 'alice', name), 'utf8');

    it('moves the file: same bytes, size and mtime under the new name, nothing left under the old one', async () => {
      await put(alice, 'draft', Buffer.from('text'));
      const before = await stat(path.join(root, 'alice', 'draft'));
      await alice.rename('draft', 'final', false);
      expect(await userFiles()).to.deep.equal(['final']);
      expect(await content('final')).to.equal('text');
      const after = await stat(path.join(root, 'alice', 'final'));
      expect([after.ino, after.size, after.mtimeMs]).to.deep.equal([before.ino, before.size, before.mtimeMs]);
    });

    it('ALREADY_EXISTS without overwrite (both files untouched); with overwrite the target is replaced', async () => {
      await put(alice, 'a', Buffer.from('aaa'));
      await put(alice, 'b', Buffer.from('bb'));
      expect(await codeOf(alice.rename('a', 'b', false))).to.equal('ALREADY_EXISTS');
      expect([await content('a'), await content('b')]).to.deep.equal(['aaa', 'bb']);
      await alice.rename('a', 'b', true);
      expect(await userFiles()).to.deep.equal(['b']);
      expect(await content('b')).to.equal('aaa');
    });

    it('NOT_FOUND for a missing source, checked before the target (a repeated rename reads NOT_FOUND)', async () => {
      await put(alice, 'b', Buffer.from('b'));
      expect(await codeOf(alice.rename('never', 'b', false))).to.equal('NOT_FOUND');
      expect(await codeOf(alice.rename('never', 'other', true))).to.equal('NOT_FOUND');
      expect(await userFiles()).to.deep.equal(['b']);
    });

    it('a file renamed to its own name stays as it is; a missing one is NOT_FOUND', async () => {
      await put(alice, 'same', Buffer.from('s'));
      await alice.rename('same', 'same', false);
      expect(await userFiles()).to.deep.equal(['same']);
      expect(await codeOf(alice.rename('none', 'none', true))).to.equal('NOT_FOUND');
    });

    it('moves and replaces only what fts serves: a symlink, a directory or a hard-linked file on either side is NOT_A_FILE and left alone', async () => {
      const outside = path.join(tmp, 'outside.txt');
      await writeFile(outside, 'keep');
      await symlink(outside, path.join(root, 'alice', 'link'));
      await mkdir(path.join(root, 'alice', 'sub'));
      await put(alice, 'plain', Buffer.from('p'));
      await put(alice, 'linked', Buffer.from('l'));
      execFileSync('ln', [path.join(root, 'alice', 'linked'), path.join(tmp, 'second-link')]);
      for (const overwrite of [true, false]) {
        // Also without overwrite: ALREADY_EXISTS would suggest an overwrite that would be refused too.
        for (const [from, to] of [['link', 'x'], ['sub', 'x'], ['linked', 'x'], ['plain', 'link'], ['plain', 'sub'], ['plain', 'linked']] as const) {
          expect(await codeOf(alice.rename(from, to, overwrite)), `${from} -> ${to}, overwrite ${overwrite}`).to.equal('NOT_A_FILE');
        }
      }
      expect(await userFiles()).to.deep.equal(['link', 'linked', 'plain', 'sub']);
      expect(await readFile(outside, 'utf8')).to.equal('keep');
      expect((await lstat(path.join(root, 'alice', 'link'))).isSymbolicLink()).to.equal(true);
      expect(await content('plain')).to.equal('p');
    });

    it('BAD_NAME for an illegal name on either side, before anything is touched', async () => {
      await put(alice, 'ok', Buffer.from('o'));
      for (const [from, to] of [['ok', '../escape'], ['../ok', 'x'], ['ok', '.'], ['ok', 'a/b']] as const) {
        expect(await codeOf(alice.rename(from, to, true)), `${from} -> ${to}`).to.equal('BAD_NAME');
      }
      expect(await userFiles()).to.deep.equal(['ok']);
      expect(await readdir(tmp)).to.deep.equal(['storage']);
    });

    it('carries the digest recorded at upload to the new name; the replaced file\'s record goes', async function () {
      this.timeout(20_000);
      const big = randomBytes(RECORD_MIN_BYTES);
      await put(alice, 'big', big, 1 << 20);
      await put(alice, 'other', randomBytes(RECORD_MIN_BYTES), 1 << 20);
      await alice.rename('big', 'other', true);
      const [entry] = await alice.list(true);
      expect(entry).to.deep.include({ name: 'other', size: big.length, sha256: sha(big) });
      expect(await readdir(path.join(root, '.fts', 'digests', 'alice'))).to.have.length(1);
      const handle = await alice.openRead('other');
      try {
        expect(await handle.recordedDigest()).to.equal(sha(big));
      } finally {
        await handle.close();
      }
    });

    it('waits for a lock held on either name', async () => {
      await put(alice, 'from', Buffer.from('f'));
      for (const held of ['from', 'to']) {
        const [src, dst] = held === 'from' ? ['from', 'to'] : ['to', 'from'];
        const order: string[] = [];
        let release!: () => void;
        const holding = withLock(root, 'alice', held, async () => {
          order.push('locked');
          await new Promise<void>((resolve) => {
            release = resolve;
          });
          order.push('unlocking');
        });
        await waitUntil('the lock to be held', () => order.length > 0, 5_000, 5);
        const renaming = alice.rename(src, dst, false).then(() => order.push('renamed'));
        await new Promise((r) => setTimeout(r, 100));
        expect(order, held).to.deep.equal(['locked']);
        release();
        await Promise.all([holding, renaming]);
        expect(order, held).to.deep.equal(['locked', 'unlocking', 'renamed']);
      }
      expect(await userFiles()).to.deep.equal(['from']);
    });

    it('renames in opposite directions at once never deadlock (locks in byte order): one wins, the other finds nothing', async function () {
      this.timeout(20_000);
      for (let round = 0; round < 10; round++) {
        await put(alice, 'x', Buffer.from('x'));
        const results = await Promise.allSettled([alice.rename('x', 'y', true), alice.rename('y', 'x', true)]);
        expect(results.filter((r) => r.status === 'fulfilled').length, `round ${round}`).to.be.at.least(1);
        for (const r of results) if (r.status === 'rejected') expect((r.reason as FtsError).code).to.equal('NOT_FOUND');
        expect(await userFiles()).to.have.length(1);
        await alice.delete((await userFiles())[0]!);
      }
    });

    it('waits for both locks within one --lock-timeout in all (LOCKED before the stall timeout), not one per name', async function () {
      this.timeout(20_000);
      await put(alice, 'first', Buffer.from('f'));
      setLockWaitSeconds(3);
      // By name: the two holds take their locks in whichever order their mkdirs finish.
      const releases = new Map<string, () => void>();
      const hold = (name: string): Promise<void> =>
        withLock(root, 'alice', name, () => new Promise<void>((resolve) => releases.set(name, resolve)));
      try {
        const holdingFirst = hold('first');
        const holdingSecond = hold('second');
        await waitUntil('both locks to be held', () => releases.size === 2, 5_000, 5);
        const started = Date.now();
        const renaming = codeOf(alice.rename('first', 'second', false));
        // 'first' comes free after 2.5 s and is taken; 'second' stays held. One budget for both ends the wait
        // at ~3 s; a budget per lock would wait until ~5.5 s.
        await new Promise((r) => setTimeout(r, 2_500));
        releases.get('first')!();
        await holdingFirst;
        expect(await renaming).to.equal('LOCKED');
        expect(Date.now() - started, 'ms waited for the two locks').to.be.below(4_500);
        releases.get('second')!();
        await holdingSecond;
      } finally {
        for (const release of releases.values()) release();
        setLockWaitSeconds(DEFAULT_LOCK_WAIT_SECONDS);
      }
      expect(await userFiles()).to.deep.equal(['first']);
    });

    it('withLocks takes each name once, in UTF-8 byte order, holding the earlier ones while it waits for a later one', async () => {
      const locked = async (name: string): Promise<boolean> => stat(`${lockTarget(root, 'alice', name)}.lock`).then(() => true, () => false);
      let release!: () => void;
      let held = false;
      const holding = withLock(root, 'alice', 'z', async () => {
        held = true;
        await new Promise<void>((resolve) => {
          release = resolve;
        });
      });
      await waitUntil('the lock to be held', () => held, 5_000, 5);
      let inside: boolean[] = [];
      const all = withLocks(root, 'alice', ['\u00e9', 'z', 'a', 'z'], async () => {
        inside = await Promise.all(['a', 'z', '\u00e9'].map(locked));
      });
      await waitUntil("the lock of 'a' to be taken", () => locked('a'), 5_000, 5);
      // 'a' (0x61) is held while 'z' (0x7a) waits; U+00E9 (0xc3 0xa9) comes last, so it is not taken yet.
      expect(await locked('\u00e9')).to.equal(false);
      release();
      await Promise.all([holding, all]);
      expect(inside).to.deep.equal([true, true, true]);
      expect(await Promise.all(['a', 'z', '\u00e9'].map(locked))).to.deep.equal([false, false, false]);
    });
  });

  describe('makeDirectories', () => {
    it('creates what is missing (0700), is a no-op on what exists, and concurrent calls on one path all succeed', async () => {
      const deep = path.join(tmp, 'a', 'b', 'c', 'd');
      await Promise.all(Array.from({ length: 8 }, () => makeDirectories(deep)));
      for (const d of [path.join(tmp, 'a'), path.join(tmp, 'a', 'b'), deep]) expect((await stat(d)).mode & 0o777, d).to.equal(0o700);
      await makeDirectories(deep);
      await makeDirectories(path.join(deep, '..', 'e'));
      expect((await stat(path.join(tmp, 'a', 'b', 'c', 'e'))).isDirectory()).to.equal(true);
    });

    it('names the real cause: ENOTDIR for a file in the way, ENOENT (not a hang) under /proc', async () => {
      await writeFile(path.join(tmp, 'file'), 'x');
      const errno = (p: Promise<unknown>): Promise<string | undefined> => p.then(() => undefined, (e: NodeJS.ErrnoException) => e.code);
      expect(await errno(makeDirectories(path.join(tmp, 'file', 'sub', 'deeper')))).to.equal('ENOTDIR');
      expect(await errno(makeDirectories(`/proc/fts-unit-${process.pid}/x`))).to.equal('ENOENT');
    });
  });

  describe('list', () => {
    it('lists only regular files, sorted by UTF-8 bytes', async function () {
      // JavaScript's UTF-16 order puts '😀' (D83D…) before '\uFB01', UTF-8 byte order puts it after
      // (F0… > EF…), so this set tells the two orders apart.
      // A leading U+FEFF is part of a name (a BOM-stripping decoder would list '\uFEFFb' as a second 'b').
      const names = ['b', 'a', 'B', '😀', '\uFB01', 'é', ' space', '%2e%2e', '...', '\uFEFFb', 'x\uFEFF'];
      for (const n of names) await put(alice, n, Buffer.from(n));
      await symlink(path.join(root, 'alice', 'a'), path.join(root, 'alice', 'zlink'));
      await mkdir(path.join(root, 'alice', 'zdir'));
      if (hasMkfifo()) execFileSync('mkfifo', [path.join(root, 'alice', 'zfifo')]);
      // An upload in progress must not show.
      const pending = await alice.beginUpload('pending', 3, { sha256: sha(Buffer.from('abc')) });
      await pending.write(Buffer.from('ab'));

      const expected = [...names].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y)));
      expect(expected.indexOf('\uFB01')).to.be.lessThan(expected.indexOf('😀'));

      const short = await alice.list(false);
      expect(short).to.deep.equal(expected.map((name) => ({ name })));

      const long = await alice.list(true);
      expect(long.map((e) => e.name)).to.deep.equal(expected);
      for (const e of long) {
        expect(e.size).to.equal(Buffer.byteLength(e.name));
        expect(Number.isInteger(e.mtime)).to.equal(true);
      }
      await pending.abort();
    });

    it('never shows staging or lock artifacts', async () => {
      await put(alice, 'x.lock', Buffer.from('not a lock'));
      const held = withLock(root, 'alice', 'x', async () => (await alice.list(true)).map((e) => e.name));
      expect(await held).to.deep.equal(['x.lock']);
    });

    it('is empty for a new user', async () => {
      expect(await (await store.user('bob')).list(true)).to.deep.equal([]);
    });
  });

  describe('locks', () => {
    /** What a holder that stopped refreshing leaves: alice's lock directory of `name`, last refreshed `ageMs` ago. */
    async function lockLeft(name: string, ageMs: number): Promise<string> {
      const lockDir = `${lockTarget(root, 'alice', name)}.lock`;
      await mkdir(lockDir, { recursive: true });
      const then = new Date(Date.now() - ageMs);
      await utimes(lockDir, then, then);
      return lockDir;
    }

    it('an abandoned lock (not refreshed for 10 s) is broken by one waiter only: waiters that all saw it never hold the name together', async function () {
      this.timeout(60_000);
      const before = abandonedLocksBroken();
      let lockDir = '';
      for (let round = 0; round < 20; round++) {
        // What a holder killed by SIGKILL leaves: its lock directory, last refreshed 20 s ago.
        lockDir = await lockLeft('t', 20_000);
        let inside = 0;
        let most = 0;
        let done = 0;
        await Promise.all(
          Array.from({ length: 6 }, () =>
            withLock(root, 'alice', 't', async () => {
              most = Math.max(most, ++inside);
              await new Promise((resolve) => setTimeout(resolve, 15));
              inside--;
              done++;
            }),
          ),
        );
        expect({ round, most, done }).to.deep.equal({ round, most: 1, done: 6 });
      }
      expect(abandonedLocksBroken() - before, 'one break per abandoned lock').to.equal(20);
      const leftovers = (await readdir(path.dirname(lockDir))).filter((n) => n.startsWith(path.basename(lockDir)));
      expect(leftovers, 'nothing left beside the lock').to.deep.equal([]);
    });

    it('a waiter killed while it broke an abandoned lock does not keep the lock from being broken: its right is passed over', async function () {
      this.timeout(20_000);
      const lockDir = await lockLeft('wedged', 60_000);
      const past = new Date(Date.now() - 60_000);
      // What a waiter killed between taking the right to break it and breaking it leaves: its right.
      const st = await lstat(lockDir, { bigint: true });
      const right = `${lockDir}.${st.ino}-${st.mtimeNs}.breaking.0`;
      await mkdir(right);
      await utimes(right, past, past);
      expect(await withLockWait(3, () => withLock(root, 'alice', 'wedged', async () => 'taken'))).to.equal('taken');
      // A right held by a live waiter (fresh) is respected: the abandoned lock is left to it.
      await lockLeft('wedged', 30_000);
      const again = await lstat(lockDir, { bigint: true });
      const live = `${lockDir}.${again.ino}-${again.mtimeNs}.breaking.0`;
      await mkdir(live);
      expect(await withLockWait(1, () => codeOf(withLock(root, 'alice', 'wedged', async () => 'taken')))).to.equal('LOCKED');
      await rm(lockDir, { recursive: true });
      await rm(live, { recursive: true });
      await rm(right, { recursive: true });
    });

    it('the start-up sweep removes abandoned locks and the rights of dead breakers, and leaves live locks and live rights alone', async function () {
      const past = new Date(Date.now() - 60_000);
      const abandoned = await lockLeft('gone-holder', 60_000);
      const live = await lockLeft('live-holder', 2_000);
      // A waiter that died while breaking a lock that has since been broken and released: its right is dead.
      const deadRight = `${lockTarget(root, 'alice', 'other')}.lock.123-456.breaking.0`;
      await mkdir(deadRight);
      await utimes(deadRight, past, past);
      // An old right to break a lock that is still there: its breaker died; the sweep passes it over as a
      // waiter does, breaks the lock, and then removes the right.
      const passedOver = await lockLeft('dead-breaker', 60_000);
      const seen = await lstat(passedOver, { bigint: true });
      const oldRight = `${passedOver}.${seen.ino}-${seen.mtimeNs}.breaking.0`;
      await mkdir(oldRight);
      await utimes(oldRight, past, past);
      // A fresh right (a live breaker, maybe slow): its lock is left to it, and the right stays.
      const wedged = await lockLeft('wedged-still', 60_000);
      const st = await lstat(wedged, { bigint: true });
      const standing = `${wedged}.${st.ino}-${st.mtimeNs}.breaking.0`;
      await mkdir(standing);
      const problems: string[] = [];
      const removed = await sweepAbandonedLocks(root, (where) => problems.push(where));
      expect(problems).to.deep.equal([]);
      expect(await exists(abandoned), 'abandoned lock').to.equal(false);
      expect(await exists(deadRight), 'dead right').to.equal(false);
      expect(await exists(live), 'live lock').to.equal(true);
      expect(await exists(passedOver), 'a lock whose breaker died').to.equal(false);
      expect(await exists(oldRight), "the dead breaker's right").to.equal(false);
      expect(await exists(wedged), 'a lock a live breaker holds the right to').to.equal(true);
      expect(await exists(standing), "the live breaker's right").to.equal(true);
      expect(removed).to.equal(4);
      const leftovers = await readdir(path.dirname(abandoned));
      expect(leftovers.sort()).to.deep.equal([path.basename(live), path.basename(wedged), path.basename(standing)].sort());
      for (const dir of [live, wedged, standing]) await rm(dir, { recursive: true });
    });

    it('a lock refreshed within 10 s is not broken: a waiter gets LOCKED once its wait is over', async function () {
      this.timeout(10_000);
      // A live holder in another process: its lock directory, refreshed 5 s ago.
      const lockDir = await lockLeft('held', 5_000);
      expect(await withLockWait(1, () => codeOf(withLock(root, 'alice', 'held', async () => 'taken')))).to.equal('LOCKED');
      expect((await lstat(lockDir)).isDirectory(), 'the holder\'s lock is still there').to.equal(true);
      await rm(lockDir, { recursive: true });
    });

    it('a compromised lock is reported, never thrown', async function () {
      this.timeout(10_000);
      const events: LockCompromise[] = [];
      const off = onLockCompromised((e) => events.push(e));
      try {
        const lockDir = `${lockTarget(root, 'alice', 'f')}.lock`;
        const result = await withLock(root, 'alice', 'f', async () => {
          // Someone else removes our lock; the next refresh (every 2 s: `update` in locks.ts) notices. Wait
          // for that report itself (bounded) rather than sleep a little longer than one refresh period.
          await rm(lockDir, { recursive: true });
          await waitUntil('the compromised lock to be reported', () => events.length > 0, 8_000, 20);
          return 'done';
        });
        expect(result).to.equal('done');
        expect(events).to.have.length(1);
        expect(events[0]?.lockfile).to.equal(lockDir);
      } finally {
        off();
      }
    });

    it("a holder whose lock was broken and taken meanwhile (it stalled, or its clock is behind) leaves the new holder's lock in place and reports it (regression)", async function () {
      this.timeout(60_000);
      const events: LockCompromise[] = [];
      const off = onLockCompromised((e) => events.push(e));
      const lockDir = `${lockTarget(root, 'alice', 'stalled')}.lock`;
      /**
       * What a successor leaves: its own lock directory, made at least STALE_MS after the holder's last
       * refresh (only then is a lock broken), so with its own mtime even where it gets the same inode.
       */
      const takeOver = (): void => {
        rmdirSync(lockDir);
        mkdirSync(lockDir);
        const later = new Date(Date.now() + 10_000);
        utimesSync(lockDir, later, later);
      };
      /**
       * Holds the lock and, with no timer running in between (as in a stopped process: the refresh cannot
       * notice), lets `meanwhile` stand for what other processes did; `firstMs` of ordinary holding first.
       */
      const holding = (meanwhile: () => void, firstMs = 0): Promise<string> =>
        withLock(root, 'alice', 'stalled', async () => {
          if (firstMs > 0) await new Promise((resolve) => setTimeout(resolve, firstMs));
          meanwhile();
          return 'done';
        });
      try {
        for (const successor of [true, false]) {
          events.length = 0;
          // Another process broke it as abandoned, and (or not) took it.
          expect(await holding(() => (successor ? takeOver() : rmdirSync(lockDir)))).to.equal('done');
          expect(events.map((e) => e.lockfile), `successor ${successor}`).to.deep.equal([lockDir]);
          expect(events[0]!.error.message).to.include(successor ? "replaced by another holder's" : 'the lock was removed');
          expect(existsSync(lockDir), "the successor's lock is left in place").to.equal(successor);
          if (successor) rmdirSync(lockDir);
        }

        // The same with a waiter for the name in this very process: the waiter's failed attempts must not
        // switch the check off, and it must not get in beside the successor.
        events.length = 0;
        let waiterIn = false;
        let entered!: () => void;
        const inside = new Promise<void>((resolve) => (entered = resolve));
        let finish!: () => void;
        const holder = withLock(root, 'alice', 'stalled', async () => {
          entered();
          await new Promise<void>((resolve) => (finish = resolve));
          takeOver();
          return 'done';
        });
        await inside;
        const waiter = withLockWait(2, () => codeOf(withLock(root, 'alice', 'stalled', async () => (waiterIn = true))));
        await new Promise((resolve) => setTimeout(resolve, 300)); // a few of its attempts fail meanwhile
        finish();
        expect(await holder).to.equal('done');
        expect(await waiter, 'the waiter waits for the successor').to.equal('LOCKED');
        expect(waiterIn).to.equal(false);
        expect(events.map((e) => e.error.message.includes("replaced by another holder's"))).to.deep.equal([true]);
        expect(existsSync(lockDir)).to.equal(true);
        rmdirSync(lockDir);

        // A lock held through refreshes (each sets a new mtime) and touched by nobody: released as usual.
        events.length = 0;
        expect(await holding(() => undefined, 2_500)).to.equal('done');
        expect(events).to.deep.equal([]);
        expect(existsSync(lockDir)).to.equal(false);
      } finally {
        off();
      }
    });

    it('setLockWaitSeconds bounds the wait: a lock held for longer gets LOCKED, and the holder keeps it', async function () {
      this.timeout(10_000);
      let open!: () => void;
      let entered!: () => void;
      const taken = new Promise<void>((resolve) => {
        entered = resolve;
      });
      const holding = withLock(root, 'alice', 'f', async () => {
        entered();
        await new Promise<void>((resolve) => {
          open = resolve;
        });
        return 'holder done';
      });
      await taken;
      setLockWaitSeconds(1);
      try {
        const err = await withLock(root, 'alice', 'f', async () => 'ran').then(() => null, (e: unknown) => e);
        expect(err).to.be.instanceOf(FtsError);
        expect((err as FtsError).code).to.equal('LOCKED');
      } finally {
        // Every other test in this process expects the default budget.
        setLockWaitSeconds(DEFAULT_LOCK_WAIT_SECONDS);
        open();
      }
      expect(await holding).to.equal('holder done');
      expect(await withLock(root, 'alice', 'f', async () => 'after')).to.equal('after');
    });

    it('setLockWaitSeconds refuses what --lock-timeout refuses', () => {
      for (const bad of [0, -1, 1.5, 3601, Number.NaN]) expect(() => setLockWaitSeconds(bad), String(bad)).to.throw(RangeError);
    });

    it('releases the lock when fn throws', async () => {
      const boom = withLock(root, 'alice', 'f', async () => {
        throw new Error('boom');
      });
      let error: unknown;
      await boom.catch((e: unknown) => {
        error = e;
      });
      expect((error as Error).message).to.equal('boom');
      expect(await withLock(root, 'alice', 'f', async () => 42)).to.equal(42);
      expect(await readdir(path.join(root, '.fts', 'locks', 'alice'))).to.deep.equal([]);
    });
  });

  describe('fsError', () => {
    const sysErr = (code: string): Error => Object.assign(new Error(`${code}: boom, open '/srv/secret/path'`), { code });
    const cases: Array<[string, string]> = [
      ['ENOENT', 'NOT_FOUND'],
      ['ELOOP', 'NOT_A_FILE'],
      ['EISDIR', 'NOT_A_FILE'],
      ['ENOSPC', 'NO_SPACE'],
      ['EDQUOT', 'NO_SPACE'],
      ['EROFS', 'READ_ONLY'],
      ['EACCES', 'IO_ERROR'],
      ['ENOTDIR', 'IO_ERROR'],
      ['EIO', 'IO_ERROR'],
    ];
    for (const [errno, code] of cases) {
      it(`maps ${errno} to ${code} without the path`, () => {
        const e = fsError(sysErr(errno), 'file.txt');
        expect(e.code).to.equal(code);
        expect(e.message).to.match(/^file\.txt: /);
        expect(e.message).not.to.include('/srv');
      });
    }

    it('passes an FtsError through and maps a non-error to IO_ERROR', () => {
      const original = new FtsError('LOCKED');
      expect(fsError(original, 'x')).to.equal(original);
      expect(fsError('weird', 'x').code).to.equal('IO_ERROR');
    });
  });

  describe('sweepStaging', () => {
    it('removes only staging files older than the limit', async () => {
      const oldUp = await alice.beginUpload('old', 1, { sha256: sha(Buffer.from('x')) });
      const newUp = await alice.beginUpload('new', 1, { sha256: sha(Buffer.from('x')) });
      const files = await stagingFiles();
      expect(files).to.have.length(2);
      const hourAgo = new Date(Date.now() - 3_600_000);
      // Age one of them; which one does not matter for the sweep.
      const aged = path.join(root, '.fts', 'staging', 'alice', files[0] as string);
      await utimes(aged, hourAgo, hourAgo);
      expect(await sweepStaging(root, 60_000)).to.equal(1);
      expect(await stagingFiles()).to.deep.equal([files[1]]);
      expect(await sweepStaging(root, 60_000)).to.equal(0);
      await oldUp.abort();
      await newUp.abort();
      expect(await stagingFiles()).to.deep.equal([]);
    });

    it('a failed directory fsync after the rename or unlink says the change was made (notDurable)', () => {
      const e = notDurable(Object.assign(new Error('no space'), { code: 'ENOSPC' }), 'f.bin', 'published');
      expect(e.code).to.equal('NO_SPACE');
      expect(e.message).to.match(/^f\.bin: published, but syncing its directory failed \(.+\); the change may not survive a crash$/);
      expect(notDurable(Object.assign(new Error('eio'), { code: 'EIO' }), 'g', 'deleted').message).to.match(/^g: deleted, but .*\(EIO\)/);
    });

    it('partials under 1 MiB go after 10 minutes already (or the limit, if shorter); larger ones keep the limit', async () => {
      const big = Buffer.alloc(SMALL_PARTIAL_BYTES, 7);
      const small = await alice.beginUpload('small', 5, { sha256: sha(Buffer.from('12345')) });
      await small.write(Buffer.from('12'));
      await small.release();
      const large = await alice.beginUpload('large', big.length + 1, { sha256: sha(Buffer.concat([big, Buffer.from('x')])) });
      await large.write(big);
      await large.release();
      const files = await stagingFiles();
      expect(files).to.have.length(2);
      const elevenMinutesAgo = new Date(Date.now() - 11 * 60_000);
      for (const f of files) await utimes(path.join(root, '.fts', 'staging', 'alice', f), elevenMinutesAgo, elevenMinutesAgo);
      expect(await sweepStaging(root, 3_600_000), 'only the small one').to.equal(1);
      const [left] = await stagingFiles();
      expect((await stat(path.join(root, '.fts', 'staging', 'alice', left!))).size).to.equal(SMALL_PARTIAL_BYTES);
      expect(await sweepStaging(root, 5 * 60_000), 'a limit shorter than 10 minutes applies to both').to.equal(1);
      expect(await stagingFiles()).to.deep.equal([]);
    });

    it('returns 0 when there is no staging area', async () => {
      expect(await sweepStaging(path.join(tmp, 'nothing-here'), 0)).to.equal(0);
    });

    it('an unreadable staging directory is IO_ERROR for offset (not INTERNAL); the sweep still serves the other users', async () => {
      const staging = path.join(root, '.fts', 'staging', 'alice');
      await rm(staging, { recursive: true, force: true });
      await writeFile(staging, 'not a directory'); // what a broken mount or a stray file looks like: ENOTDIR
      expect(await codeOf(alice.stagedOffset('f', 10, { sha256: sha(Buffer.from('x')) }))).to.equal('IO_ERROR');
      // (As root a chmod 000 directory stays readable, so the sweep's skip of an unreadable one is not shown.)
      const problems: string[] = [];
      const bob = path.join(root, '.fts', 'staging', 'bob');
      await mkdir(bob);
      await writeFile(path.join(bob, 'old.part'), 'x');
      const hourAgo = new Date(Date.now() - 3_600_000);
      await utimes(path.join(bob, 'old.part'), hourAgo, hourAgo);
      expect(await sweepStaging(root, 60_000, (where) => problems.push(where))).to.equal(1);
      expect(problems).to.deep.equal([]);
    });

    it('a staging root that cannot be read is reported, not thrown (the server still starts)', async () => {
      const stagingRoot = path.join(root, '.fts', 'staging');
      await rm(stagingRoot, { recursive: true, force: true });
      await writeFile(stagingRoot, 'not a directory');
      const problems: Array<[string, string | undefined]> = [];
      expect(await sweepStaging(root, 60_000, (where, err) => problems.push([where, (err as NodeJS.ErrnoException).code]))).to.equal(0);
      expect(problems).to.deep.equal([[stagingRoot, 'ENOTDIR']]);
    });
  });
});
