/**
 * Partial uploads as a user sees them (PROTOCOL.md §6.10), at the storage level: UserStore.partials and
 * UserStore.discard over a temporary storage root, the name records `.fts/partial-names/<user>/<key>` that
 * staging keeps for the staging files `<key>.<24 hex>.part` (written when an upload of 1 MiB or more begins, and when a partial
 * is kept; removed with the last staging file of the key, or by the sweep once orphaned), and the sweep's
 * handling of those records.
 */
import { expect } from 'chai';
import { createHash, randomBytes } from 'node:crypto';
import { lstat, mkdir, mkdtemp, readdir, readFile, rm, symlink, unlink, utimes, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { FtsError, type PartialEntry, type UploadTag } from '../../protocol/index.js';
import { PermissionSet } from '../../server/storage/permissions.js';
import { measureUsage, UserQuota } from '../../server/storage/quota.js';
import { keyOf, stagingKey, streamedStagingKey } from '../../server/storage/staging-keys.js';
import { SMALL_PARTIAL_BYTES } from '../../server/storage/staging-sweep.js';
import { Store, sweepStaging, UserStore, type StagedUpload } from '../../server/storage/store.js';
import { loadSaltKey } from '../../server/storage/salt-key.js';
import { codeOf, whileLocked } from '../helpers/common.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const TEN_MINUTES = 10 * 60_000;
/** The --partial-ttl the listings are asked with (one hour), unless a test says otherwise. */
const TTL = 3_600_000;

const sha = (data: Buffer): string => createHash('sha256').update(data).digest('hex');

/** Writes `data` in chunks of at most `chunk` bytes (fresh views of an immutable buffer). */
async function writeAll(up: StagedUpload, data: Buffer, chunk = 256 * KiB): Promise<void> {
  for (let at = 0; at < data.length; at += chunk) await up.write(data.subarray(at, Math.min(at + chunk, data.length)));
}

describe('partial uploads: partials, discard and name records (storage)', function () {
  let tmp: string;
  let root: string;
  let store: Store;
  let alice: UserStore;
  let staging: string;

  beforeEach(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'fts-partials-'));
    root = path.join(tmp, 'storage');
    store = new Store(root);
    await store.init();
    await loadSaltKey(root); // what the primary's start makes: Store.user looks for it
    alice = await store.user('alice');
    staging = path.join(root, '.fts', 'staging', 'alice');
  });

  afterEach(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  /** The staging directory's files, and each name record as `<key>.name`: what partial uploads leave. */
  const stagingFiles = async (): Promise<string[]> => {
    const records = (await readdir(namesDir()).catch(() => [] as string[])).map((key) => `${key}.name`);
    return [...(await readdir(staging).catch(() => [] as string[])), ...records].sort();
  };
  const namesDir = (): string => path.join(root, '.fts', 'partial-names', 'alice');
  const partFilesOf = async (key: string): Promise<string[]> => (await stagingFiles()).filter((f) => f.startsWith(`${key}.`) && f.endsWith('.part'));
  const recordPath = (key: string): string => path.join(namesDir(), key);
  const hasRecord = async (key: string): Promise<boolean> => lstat(recordPath(key)).then(() => true, () => false);

  /**
   * Begins an upload of `data` as `name` (identified by its SHA-256, or by `tag`), writes its first `keep`
   * bytes and releases it (kept for a resume, as a cut connection leaves it). Returns the identity's key.
   */
  async function cut(name: string, data: Buffer, keep: number, tag: UploadTag = { sha256: sha(data) }, us: UserStore = alice): Promise<string> {
    const up = await us.beginUpload(name, data.length, tag);
    await writeAll(up, data.subarray(0, keep));
    await up.release();
    return keyOf(name, data.length, tag);
  }

  /** The one staging file of `key`, with its stat. */
  async function onlyPart(key: string): Promise<{ file: string; mtimeMs: number; size: number }> {
    const parts = await partFilesOf(key);
    expect(parts, `staging files of ${key}`).to.have.length(1);
    const file = path.join(staging, parts[0]!);
    const st = await lstat(file);
    return { file, mtimeMs: st.mtimeMs, size: st.size };
  }

  describe('keys', function () {
    it('follow the formula of PROTOCOL.md §6.10 (its worked examples), computed independently here too', () => {
      const helloSha = '5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03';
      expect(stagingKey('hello.txt', 6, helloSha)).to.equal('0ab70142fc7fc17a73bc0ddd6e6a09ed27f02ebd90031dcabc53f279067e29ac');
      expect(streamedStagingKey('hello.txt', 6, helloSha)).to.equal('3d189db49711c57faba41a065ca4250c9dc3576f322c57105551f5e574da5d66');
      const name = 'résumé 😀.pdf';
      const digest = sha(Buffer.from('x'));
      expect(keyOf(name, 1234, { sha256: digest })).to.equal(sha(Buffer.from(`1234\0${digest}\0${name}`, 'utf8')));
      expect(keyOf(name, 1234, { version: digest })).to.equal(sha(Buffer.from(`1234\0v${digest}\0${name}`, 'utf8')));
    });
  });

  describe('partials', function () {
    it('lists nothing for a user who never uploaded (no staging directory)', async () => {
      const carol = await store.user('carol');
      expect(await carol.partials(TTL)).to.deep.equal([]);
      expect(await alice.partials(TTL)).to.deep.equal([]);
    });

    it('a released partial of 1 MiB or more is listed with its name, size, tag, staged bytes, bytes on disk, mtime and expires = mtime + ttl', async () => {
      const data = randomBytes(3 * MiB);
      const tag = { sha256: sha(data) };
      const up = await alice.beginUpload('big.bin', data.length, tag);
      const key = stagingKey('big.bin', data.length, tag.sha256);
      expect(keyOf('big.bin', data.length, tag)).to.equal(key);
      // Named from the start (before a byte arrives): a killed worker never gets to release it.
      expect(await hasRecord(key), 'record written when the upload began').to.equal(true);
      expect(JSON.parse(await readFile(recordPath(key), 'utf8'))).to.deep.equal({ name: 'big.bin', size: data.length, sha256: tag.sha256 });
      const keep = MiB + 512 * KiB + 3;
      await writeAll(up, data.subarray(0, keep));
      await up.release();

      const part = await onlyPart(key);
      expect(part.size).to.equal(keep);
      const expected: PartialEntry = {
        key,
        name: 'big.bin',
        size: data.length,
        sha256: tag.sha256,
        staged: keep,
        bytes: keep,
        mtime: Math.floor(part.mtimeMs),
        expires: Math.floor(part.mtimeMs) + TTL,
      };
      const list = await alice.partials(TTL);
      expect(list).to.deep.equal([expected]);
      expect(Object.keys(list[0]!).sort()).to.deep.equal(['bytes', 'expires', 'key', 'mtime', 'name', 'sha256', 'size', 'staged']);
      expect(list[0]!.expires - list[0]!.mtime).to.equal(TTL);
      // Another --partial-ttl moves only expires.
      expect(await alice.partials(2 * TTL)).to.deep.equal([{ ...expected, expires: Math.floor(part.mtimeMs) + 2 * TTL }]);
    });

    it('a streamed upload (version tag) is listed with its version and no sha256, under its streamed key', async () => {
      const data = randomBytes(2 * MiB);
      const version = sha(Buffer.from('a version tag of the local file'));
      const key = await cut('streamed.iso', data, MiB + 1, { version });
      expect(key).to.equal(streamedStagingKey('streamed.iso', data.length, version));
      const part = await onlyPart(key);
      expect(await alice.partials(TTL)).to.deep.equal([
        { key, name: 'streamed.iso', size: data.length, version, staged: MiB + 1, bytes: MiB + 1, mtime: Math.floor(part.mtimeMs), expires: Math.floor(part.mtimeMs) + TTL },
      ]);
    });

    it('a small (< 1 MiB) partial is named only once kept (at release), and expires after min(ttl, 10 minutes)', async () => {
      const data = randomBytes(100 * KiB);
      const tag = { sha256: sha(data) };
      const key = keyOf('small.txt', data.length, tag);
      const up = await alice.beginUpload('small.txt', data.length, tag);
      await writeAll(up, data.subarray(0, 40 * KiB), 8 * KiB);
      expect(await hasRecord(key), 'no record while a small upload runs').to.equal(false);
      await up.release();
      expect(await hasRecord(key), 'record written when the partial was kept').to.equal(true);
      const part = await onlyPart(key);
      const mtime = Math.floor(part.mtimeMs);
      const entry = { key, name: 'small.txt', size: data.length, sha256: tag.sha256, staged: 40 * KiB, bytes: 40 * KiB, mtime };
      expect(await alice.partials(TTL)).to.deep.equal([{ ...entry, expires: mtime + TEN_MINUTES }]);
      // A ttl shorter than 10 minutes applies as it is.
      expect(await alice.partials(5 * 60_000)).to.deep.equal([{ ...entry, expires: mtime + 5 * 60_000 }]);
    });

    it('a large upload cut below 1 MiB is kept like a small one: expires after min(ttl, 10 minutes) from its mtime', async () => {
      const data = randomBytes(3 * MiB);
      const key = await cut('early-cut.bin', data, 100 * KiB);
      const part = await onlyPart(key);
      const mtime = Math.floor(part.mtimeMs);
      expect(await alice.partials(TTL)).to.deep.equal([
        { key, name: 'early-cut.bin', size: data.length, sha256: sha(data), staged: 100 * KiB, bytes: 100 * KiB, mtime, expires: mtime + TEN_MINUTES },
      ]);
    });

    it('an upload cut before any of its data leaves nothing to list (and no record)', async () => {
      const data = randomBytes(2 * MiB);
      const key = await cut('nothing-yet.bin', data, 0);
      expect(await alice.partials(TTL)).to.deep.equal([]);
      expect(await stagingFiles(), 'neither a staging file nor a record').to.deep.equal([]);
      expect(await hasRecord(key)).to.equal(false);
    });

    // Note: expires counts from the longest file's mtime (the bytes a resume continues from), which with
    // several files is not always `mtime` (the newest file's) + ttl.
    it('an identity with several staging files is one entry: staged = the longest, bytes = all of them, mtime = the newest', async () => {
      const data = randomBytes(3 * MiB);
      const tag = { sha256: sha(data) };
      const key = await cut('twice.bin', data, 2 * MiB);
      // A second attempt from 0 (not a resume): its own staging file, beside the first one.
      await cut('twice.bin', data, MiB + 7);
      const parts = await partFilesOf(key);
      expect(parts).to.have.length(2);
      const stats = await Promise.all(parts.map((f) => lstat(path.join(staging, f))));
      const longest = stats.reduce((a, b) => (b.size > a.size ? b : a));
      expect(await alice.partials(TTL)).to.deep.equal([
        {
          key,
          name: 'twice.bin',
          size: data.length,
          sha256: tag.sha256,
          staged: 2 * MiB,
          bytes: 3 * MiB + 7,
          mtime: Math.floor(Math.max(...stats.map((s) => s.mtimeMs))),
          expires: Math.floor(longest.mtimeMs + TTL),
        },
      ]);
    });

    it('is sorted by the names\' UTF-8 bytes (not UTF-16 order), then same names by key, then the unnamed ones by key', async () => {
      const block = randomBytes(2 * MiB);
      // UTF-8: 'B' (42) < 'a' (61) < 'ä' (c3 a4) < 'ｚ' (ef bd 9a) < '😀' (f0 9f 98 80); in UTF-16 '😀' (d83d) sorts before 'ｚ' (ff5a).
      const names = ['😀.bin', 'ｚ.bin', 'a.bin', 'ä.bin', 'B.bin'];
      for (const name of names) await cut(name, block, MiB);
      // The same name, two identities (two sizes): ordered by key.
      const same = [await cut('same.bin', block.subarray(0, 2 * MiB - 1), MiB), await cut('same.bin', block.subarray(0, 2 * MiB - 2), MiB)].sort();
      // Two partials whose records are gone: unnamed, last, by key.
      const lost = [await cut('lost-1.bin', block, MiB), await cut('lost-2.bin', block, MiB)];
      for (const key of lost) await unlink(recordPath(key));
      const list = await alice.partials(TTL);
      expect(list.map((e) => e.name ?? null)).to.deep.equal(['B.bin', 'a.bin', 'same.bin', 'same.bin', 'ä.bin', 'ｚ.bin', '😀.bin', null, null]);
      expect(list.filter((e) => e.name === 'same.bin').map((e) => e.key)).to.deep.equal(same);
      expect(list.slice(-2).map((e) => e.key)).to.deep.equal([...lost].sort());
    });

    it('a staging file without a record is listed without name, size or tag, after the named ones; its staged bytes are the file\'s', async () => {
      const data = randomBytes(3 * MiB);
      const named = await cut('named.bin', data, MiB);
      const key = await cut('zzz-anonymous.bin', data, 2 * MiB);
      await unlink(recordPath(key));
      const part = await onlyPart(key);
      const list = await alice.partials(TTL);
      expect(list.map((e) => e.key)).to.deep.equal([named, key]);
      expect(list[1]).to.deep.equal({ key, staged: 2 * MiB, bytes: 2 * MiB, mtime: Math.floor(part.mtimeMs), expires: Math.floor(part.mtimeMs) + TTL });
    });

    it('a record that does not hash to its key (tampered, torn, or of the wrong shape) is ignored: the entry is unnamed', async () => {
      const data = randomBytes(2 * MiB);
      const key = await cut('tampered.bin', data, MiB);
      const part = await onlyPart(key);
      const unnamed = { key, staged: MiB, bytes: MiB, mtime: Math.floor(part.mtimeMs), expires: Math.floor(part.mtimeMs) + TTL };
      const genuine = JSON.parse(await readFile(recordPath(key), 'utf8')) as Record<string, unknown>;
      expect(genuine).to.deep.equal({ name: 'tampered.bin', size: data.length, sha256: sha(data) });
      const variants: Array<[string, string]> = [
        ['another size', JSON.stringify({ ...genuine, size: data.length + 1 })],
        ['another name', JSON.stringify({ ...genuine, name: 'other.bin' })],
        ['another digest', JSON.stringify({ ...genuine, sha256: sha(Buffer.from('x')) })],
        ['the digest as a version tag', JSON.stringify({ name: genuine['name'], size: genuine['size'], version: genuine['sha256'] })],
        ['both sha256 and version', JSON.stringify({ ...genuine, version: genuine['sha256'] })],
        ['a bad name', JSON.stringify({ ...genuine, name: '../tampered.bin' })],
        ['a size as a string', JSON.stringify({ ...genuine, size: String(data.length) })],
        ['torn JSON', JSON.stringify(genuine).slice(0, 20)],
        ['not an object', 'null'],
        ['empty', ''],
      ];
      for (const [what, body] of variants) {
        await writeFile(recordPath(key), body);
        expect(await alice.partials(TTL), what).to.deep.equal([unnamed]);
      }
      // The genuine record names it again (the check is by hash, nothing is cached).
      await writeFile(recordPath(key), JSON.stringify(genuine));
      expect((await alice.partials(TTL))[0]!.name).to.equal('tampered.bin');
    });

    it('a partial holding every byte (kept before its commit) is staged = size', async () => {
      const data = randomBytes(2 * MiB);
      const key = await cut('complete.bin', data, data.length);
      expect((await alice.partials(TTL)).map((e) => [e.key, e.name, e.staged, e.bytes, e.size])).to.deep.equal([[key, 'complete.bin', 2 * MiB, 2 * MiB, 2 * MiB]]);
    });

    it('ignores what is not a staging file: other names, directories and symlinks named like one, records alone', async () => {
      const key = sha(Buffer.from('some identity'));
      await mkdir(staging, { recursive: true });
      await writeFile(path.join(staging, 'notes.txt'), 'not a partial');
      await writeFile(path.join(staging, `${key}.part`), 'no random part');
      await writeFile(path.join(staging, `${key.toUpperCase()}.${'a'.repeat(24)}.part`), 'upper case key');
      await mkdir(path.join(staging, `${key}.${'b'.repeat(24)}.part`));
      const target = path.join(root, 'alice', 'precious.txt');
      await writeFile(target, 'the user\'s own file');
      await symlink(target, path.join(staging, `${key}.${'c'.repeat(24)}.part`));
      await mkdir(namesDir(), { recursive: true });
      await writeFile(recordPath(key), JSON.stringify({ name: 'orphan.bin', size: 1, sha256: key }));
      expect(await alice.partials(TTL)).to.deep.equal([]);
      expect(await codeOf(alice.discard(key))).to.equal('NOT_FOUND');
      expect(await readFile(target, 'utf8')).to.equal('the user\'s own file');
      expect((await lstat(path.join(staging, `${key}.${'c'.repeat(24)}.part`))).isSymbolicLink(), 'the symlink is left alone').to.equal(true);
    });

    it('one user\'s partials are not another\'s', async () => {
      const bob = await store.user('bob');
      const data = randomBytes(2 * MiB);
      const key = await cut('mine.bin', data, MiB);
      expect(await bob.partials(TTL)).to.deep.equal([]);
      expect(await codeOf(bob.discard(key))).to.equal('NOT_FOUND');
      expect((await alice.partials(TTL)).map((e) => e.key)).to.deep.equal([key]);
    });
  });

  describe('discard', function () {
    it('removes every staging file of the key and its record, returns the bytes and the name; a second discard is NOT_FOUND', async () => {
      const data = randomBytes(3 * MiB);
      const key = await cut('gone.bin', data, 2 * MiB);
      await cut('gone.bin', data, MiB + 5);
      const other = await cut('stays.bin', data, MiB);
      expect(await partFilesOf(key)).to.have.length(2);
      expect(await alice.discard(key)).to.deep.equal({ bytes: 3 * MiB + 5, name: 'gone.bin' });
      expect(await partFilesOf(key)).to.deep.equal([]);
      expect(await hasRecord(key)).to.equal(false);
      expect((await alice.partials(TTL)).map((e) => e.key), 'the other identity is untouched').to.deep.equal([other]);
      expect(await hasRecord(other)).to.equal(true);
      expect(await codeOf(alice.discard(key))).to.equal('NOT_FOUND');
      expect(await alice.discard(other)).to.deep.equal({ bytes: MiB, name: 'stays.bin' });
      expect(await stagingFiles()).to.deep.equal([]);
    });

    it('discards an unnamed partial (its name is null) and a small one', async () => {
      const big = randomBytes(2 * MiB);
      const unnamed = await cut('unnamed.bin', big, MiB + 1);
      await unlink(recordPath(unnamed));
      expect(await alice.discard(unnamed)).to.deep.equal({ bytes: MiB + 1, name: null });
      const small = randomBytes(10 * KiB);
      const key = await cut('small.bin', small, 4 * KiB, { sha256: sha(small) });
      expect(await alice.discard(key)).to.deep.equal({ bytes: 4 * KiB, name: 'small.bin' });
      expect(await stagingFiles()).to.deep.equal([]);
    });

    it('a key that is not 64 lowercase hex digits is BAD_REQUEST; a well-formed key with nothing staged is NOT_FOUND', async () => {
      const data = randomBytes(2 * MiB);
      const key = await cut('kept.bin', data, MiB);
      for (const bad of ['', 'abc', key.toUpperCase(), `${key}0`, key.slice(1), `${key.slice(0, 63)}g`, `../${key.slice(3)}`, `${key}\n`]) {
        expect(await codeOf(alice.discard(bad)), JSON.stringify(bad)).to.equal('BAD_REQUEST');
      }
      expect(await codeOf(alice.discard(sha(Buffer.from('nothing staged'))))).to.equal('NOT_FOUND');
      expect(await codeOf((await store.user('carol')).discard(key)), 'a user without a staging directory').to.equal('NOT_FOUND');
      expect((await alice.partials(TTL)).map((e) => e.key), 'nothing was removed').to.deep.equal([key]);
    });

    it('a record whose key has no staging file is NOT_FOUND for discard (and is left to the sweep)', async () => {
      const data = randomBytes(2 * MiB);
      const key = await cut('orphan.bin', data, MiB);
      const part = await onlyPart(key);
      await unlink(part.file);
      expect(await codeOf(alice.discard(key))).to.equal('NOT_FOUND');
      expect(await alice.partials(TTL)).to.deep.equal([]);
    });

    it('usage: the partial bytes (and used) drop by what was discarded', async () => {
      const data = randomBytes(3 * MiB);
      await writeFile(path.join(root, 'alice', 'published.txt'), 'x'.repeat(1000));
      const key = await cut('usage.bin', data, 2 * MiB);
      const small = randomBytes(10 * KiB);
      const smallKey = await cut('usage-small.bin', small, 3 * KiB);
      expect(await alice.usage()).to.deep.equal({ used: 1000 + 2 * MiB + 3 * KiB, files: 1, partial: 2 * MiB + 3 * KiB, quota: null, maxFiles: null });
      await alice.discard(key);
      expect(await alice.usage()).to.deep.equal({ used: 1000 + 3 * KiB, files: 1, partial: 3 * KiB, quota: null, maxFiles: null });
      await alice.discard(smallKey);
      expect(await alice.usage()).to.deep.equal({ used: 1000, files: 1, partial: 0, quota: null, maxFiles: null });
    });

    it('with a quota, the discarded bytes count as freed at once: the next upload is admitted without measuring again', async () => {
      // A UserStore over a quota whose clock stands still: its first measurement never goes stale, so only
      // a refusal (or a stale clock) would measure again. The measurement is the real one, counted.
      const dir = path.join(root, 'dave');
      await mkdir(dir, { mode: 0o700 });
      let measurements = 0;
      const quota = new UserQuota(
        () => ({ bytes: 4 * MiB, files: null }),
        async () => {
          measurements++;
          return { bytes: (await measureUsage(root, 'dave', dir)).used, files: 0 };
        },
        () => 0,
      );
      const dave = new UserStore(root, 'dave', dir, quota, () => PermissionSet.ALL);
      const data = randomBytes(3 * MiB);
      const up = await dave.beginUpload('q.bin', data.length, { sha256: sha(data) });
      expect(measurements).to.equal(1);
      await writeAll(up, data.subarray(0, 2 * MiB));
      await up.release();
      // Admitted for 3 MiB; 2 MiB are staged. Discarding them frees 2 MiB: 1 + 3 fits in 4 MiB.
      expect(await dave.discard(keyOf('q.bin', data.length, { sha256: sha(data) }))).to.deep.equal({ bytes: 2 * MiB, name: 'q.bin' });
      const next = randomBytes(3 * MiB);
      const again = await dave.beginUpload('r.bin', next.length, { sha256: sha(next) });
      expect(measurements, 'admitted on the usage the discard lowered, without a new measurement').to.equal(1);
      await again.abort();
    });
  });

  describe('name records and the upload\'s end', function () {
    it('a commit of an upload of 1 MiB or more leaves no record', async () => {
      const data = randomBytes(2 * MiB);
      const tag = { sha256: sha(data) };
      const key = keyOf('done.bin', data.length, tag);
      const up = await alice.beginUpload('done.bin', data.length, tag);
      expect(await hasRecord(key)).to.equal(true);
      await writeAll(up, data);
      await up.commit();
      expect(await stagingFiles()).to.deep.equal([]);
      expect(await alice.partials(TTL)).to.deep.equal([]);
      expect((await readFile(path.join(root, 'alice', 'done.bin'))).equals(data)).to.equal(true);
    });

    it('a resume that commits removes the partial and its record; so does one of a small upload', async () => {
      for (const size of [3 * MiB, 200 * KiB]) {
        const data = randomBytes(size);
        const tag = { sha256: sha(data) };
        const name = `resumed-${size}.bin`;
        const key = await cut(name, data, Math.floor(size / 2));
        expect(await hasRecord(key)).to.equal(true);
        const offset = await alice.stagedOffset(name, size, tag);
        expect(offset).to.equal(Math.floor(size / 2));
        const up = await alice.beginUpload(name, size, tag, offset);
        await writeAll(up, data.subarray(offset));
        await up.commit();
        expect(await stagingFiles(), `${size} bytes`).to.deep.equal([]);
        expect((await readFile(path.join(root, 'alice', name))).equals(data)).to.equal(true);
      }
    });

    it('verified bytes that could not be published (the name stayed locked) are kept, and named, small ones too', async () => {
      for (const size of [100, 2 * MiB]) {
        const data = randomBytes(size);
        const tag = { sha256: sha(data) };
        const name = `blocked-${size}`;
        const up = await alice.beginUpload(name, size, tag);
        await writeAll(up, data);
        expect(await whileLocked(root, 'alice', name, () => codeOf(up.commit()))).to.equal('LOCKED');
        await up.release();
        const key = keyOf(name, size, tag);
        const part = await onlyPart(key);
        const mtime = Math.floor(part.mtimeMs);
        const expires = mtime + (size < SMALL_PARTIAL_BYTES ? TEN_MINUTES : TTL);
        expect((await alice.partials(TTL)).find((e) => e.key === key), `${size} bytes`).to.deep.equal({ key, name, size, sha256: tag.sha256, staged: size, bytes: size, mtime, expires });
      }
    });

    it('an upload onto a directory is refused NOT_A_FILE and keeps nothing, nor its record', async () => {
      await mkdir(path.join(root, 'alice', 'a-dir', 'inside'), { recursive: true });
      const data = randomBytes(2 * MiB);
      const tag = { sha256: sha(data) };
      const up = await alice.beginUpload('a-dir', data.length, tag);
      await writeAll(up, data);
      expect(await codeOf(up.commit())).to.equal('NOT_A_FILE');
      await up.release();
      expect(await stagingFiles()).to.deep.equal([]);
      expect(await hasRecord(keyOf('a-dir', data.length, tag))).to.equal(false);
      await rm(path.join(root, 'alice', 'a-dir'), { recursive: true });
    });

    it('an upload whose digest proves it wrong is removed with its record', async () => {
      const data = randomBytes(2 * MiB);
      const tag = { sha256: sha(Buffer.from('other bytes')) };
      const key = keyOf('wrong.bin', data.length, tag);
      const up = await alice.beginUpload('wrong.bin', data.length, tag);
      await writeAll(up, data);
      expect(await codeOf(up.commit())).to.equal('CHECKSUM_MISMATCH');
      expect(await hasRecord(key)).to.equal(false);
      expect(await stagingFiles()).to.deep.equal([]);
    });

    it('a commit removes the staging files other attempts at its identity left (an earlier cut attempt), and the record', async () => {
      const data = randomBytes(3 * MiB);
      const tag = { sha256: sha(data) };
      const key = await cut('again.bin', data, MiB + 100);
      await cut('again.bin', data, 100);
      expect(await partFilesOf(key)).to.have.length(2);
      // The same file sent again from 0 (not resumed), published: the cut attempts are of no use any more.
      const up = await alice.beginUpload('again.bin', data.length, tag);
      await writeAll(up, data);
      await up.commit();
      expect(await partFilesOf(key)).to.deep.equal([]);
      expect(await hasRecord(key), 'the record goes with the last staging file of its key').to.equal(false);
      expect(await alice.partials(TTL)).to.deep.equal([]);
      expect(await stagingFiles()).to.deep.equal([]);
      // Another identity's partial upload of the same name is left alone.
      const other = randomBytes(2 * MiB);
      const otherKey = await cut('again.bin', other, MiB);
      const up2 = await alice.beginUpload('again.bin', data.length, tag);
      await writeAll(up2, data);
      await up2.commit();
      expect((await alice.partials(TTL)).map((e) => e.key)).to.deep.equal([otherKey]);
      await alice.discard(otherKey);
    });

    it('an upload in progress whose partial is discarded is answered OFFSET_MISMATCH (offset 0) at its commit, and publishes nothing', async () => {
      const data = randomBytes(3 * MiB);
      const tag = { sha256: sha(data) };
      const key = keyOf('live.bin', data.length, tag);
      const up = await alice.beginUpload('live.bin', data.length, tag);
      await writeAll(up, data.subarray(0, MiB));
      expect(await up.durableOffset()).to.equal(MiB);
      const [entry] = await alice.partials(TTL);
      expect(entry, 'the upload in progress is listed').to.include({ key, name: 'live.bin', staged: MiB, bytes: MiB });
      expect(await alice.discard(key)).to.deep.equal({ bytes: MiB, name: 'live.bin' });
      let error: unknown;
      try {
        // On a slow machine the upload may notice during these writes already (see the next test).
        await writeAll(up, data.subarray(MiB));
        await up.commit();
      } catch (err) {
        error = err;
      }
      expect(error).to.be.instanceOf(FtsError);
      expect((error as FtsError).code).to.equal('OFFSET_MISMATCH');
      expect((error as FtsError).details['offset']).to.equal(0);
      await up.release();
      expect(await readdir(path.join(root, 'alice'))).to.deep.equal([]);
      expect(await alice.partials(TTL)).to.deep.equal([]);
    });

    it('an upload in progress whose partial is discarded stops storing within about a second, and its commit is OFFSET_MISMATCH (offset 0)', async () => {
      const piece = Buffer.alloc(64 * KiB, 1);
      const pieces = 20;
      const whole = Buffer.alloc(piece.length * (pieces + 1), 1);
      const tag = { sha256: sha(whole) };
      const up = await alice.beginUpload('long.bin', whole.length, tag);
      await up.write(piece);
      await up.durableOffset();
      await alice.discard(keyOf('long.bin', whole.length, tag));
      // A slow sender: each piece is written after a pause (the idle flush); 20 pieces over about 4 s.
      for (let i = 0; i < pieces; i++) {
        await new Promise((r) => setTimeout(r, 200));
        await up.write(piece);
      }
      expect(up.received).to.equal(whole.length);
      expect(up.stored, 'the pieces after the check were not stored').to.be.lessThan(up.received);
      const error = await up.commit().then(() => null, (err: unknown) => err);
      expect(error).to.be.instanceOf(FtsError);
      expect((error as FtsError).code).to.equal('OFFSET_MISMATCH');
      expect((error as FtsError).details['offset']).to.equal(0);
      await up.release();
      expect(await stagingFiles()).to.deep.equal([]);
    });
  });

  describe('sweepStaging and name records', function () {
    const age = async (file: string, ms: number): Promise<void> => {
      const then = new Date(Date.now() - ms);
      await utimes(file, then, then);
    };

    /** A record left alone: its partial's staging file removed by hand (as a crash between the two removals would). */
    async function orphanRecord(name: string): Promise<string> {
      const data = randomBytes(2 * MiB);
      const key = await cut(name, data, MiB);
      await unlink((await onlyPart(key)).file);
      expect(await hasRecord(key)).to.equal(true);
      return key;
    }

    it('removes an orphaned record only once it is older than 10 minutes (with a ttl of an hour)', async () => {
      const key = await orphanRecord('orphan.bin');
      expect(await sweepStaging(root, TTL), 'records are not counted as removed staging files').to.equal(0);
      expect(await hasRecord(key), 'young: kept').to.equal(true);
      await age(recordPath(key), 9 * 60_000);
      await sweepStaging(root, TTL);
      expect(await hasRecord(key), '9 minutes old: kept').to.equal(true);
      await age(recordPath(key), 11 * 60_000);
      expect(await sweepStaging(root, TTL)).to.equal(0);
      expect(await hasRecord(key), '11 minutes old: removed').to.equal(false);
      expect(await stagingFiles()).to.deep.equal([]);
    });

    it('with a ttl under 10 minutes, an orphaned record goes after the ttl', async () => {
      const key = await orphanRecord('orphan-short.bin');
      await age(recordPath(key), 4 * 60_000);
      await sweepStaging(root, 5 * 60_000);
      expect(await hasRecord(key), '4 minutes old, ttl 5 minutes: kept').to.equal(true);
      await age(recordPath(key), 6 * 60_000);
      await sweepStaging(root, 5 * 60_000);
      expect(await hasRecord(key), '6 minutes old, ttl 5 minutes: removed').to.equal(false);
    });

    it('keeps a record, however old, while its key still has a young staging file (large or small)', async () => {
      const big = randomBytes(2 * MiB);
      const bigKey = await cut('kept-big.bin', big, MiB + 1);
      const small = randomBytes(10 * KiB);
      const smallKey = await cut('kept-small.bin', small, 2 * KiB);
      for (const key of [bigKey, smallKey]) await age(recordPath(key), 2 * TTL);
      expect(await sweepStaging(root, TTL)).to.equal(0);
      expect(await hasRecord(bigKey)).to.equal(true);
      expect(await hasRecord(smallKey)).to.equal(true);
      expect((await alice.partials(TTL)).map((e) => e.name)).to.deep.equal(['kept-big.bin', 'kept-small.bin']);
    });

    it('a staging file swept for its age takes its old record with it in the same sweep; a young record stays', async () => {
      const data = randomBytes(2 * MiB);
      const oldKey = await cut('expired.bin', data, MiB + 1);
      const youngRecordKey = await cut('expired-young-record.bin', data, MiB + 1);
      await age((await onlyPart(oldKey)).file, TTL + 60_000);
      await age(recordPath(oldKey), TTL + 60_000);
      await age((await onlyPart(youngRecordKey)).file, TTL + 60_000);
      expect(await sweepStaging(root, TTL)).to.equal(2);
      expect(await hasRecord(oldKey)).to.equal(false);
      expect(await hasRecord(youngRecordKey), 'orphaned now, but young: kept until a later sweep').to.equal(true);
      expect(await stagingFiles()).to.deep.equal([`${youngRecordKey}.name`]);
      expect(await alice.partials(TTL)).to.deep.equal([]);
    });
  });
});
