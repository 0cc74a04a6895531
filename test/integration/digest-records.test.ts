/**
 * Digests recorded at publish (server/storage/digest-records.ts): a download of a large file sends the
 * digest taken when its upload was verified instead of hashing the file as it reads it. The record must be
 * used only for the exact version it describes, and a file that changed on disk without its version
 * changing (bit rot) must be reported by the client as corrupt, never delivered.
 */
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import type { BigIntStats } from 'node:fs';
import { open, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { FtsClient, FtsError } from '../../client/index.js';
import { RECORD_MIN_BYTES, recordVersion, recordedDigest } from '../../server/storage/digest-records.js';
import { digestRecordPath } from '../../server/storage/paths.js';
import { describeRun, runCli } from '../helpers/cli.js';
import { exists, sha256 as sha } from '../helpers/lifecycle-util.js';
import { downloadOnce } from '../helpers/raw-client.js';
import { DEFAULT_USERS, TestServer } from '../helpers/server.js';
import { tempDir } from '../helpers/temp.js';

const ALICE = DEFAULT_USERS[0]!;

describe('digests recorded at publish', function () {
  this.timeout(60_000);
  let server: TestServer;
  let dir: string;
  let cleanDir: () => Promise<void>;
  let client: FtsClient;
  /** Large enough to be recorded; odd so that the direct-I/O tail path runs too. */
  const SIZE = RECORD_MIN_BYTES + 4097;

  before(async function () {
    server = await TestServer.start({ workers: 2 });
    ({ dir, cleanup: cleanDir } = await tempDir('fts-digests-'));
    client = await FtsClient.connect({ port: server.port });
    await client.auth(ALICE.user, ALICE.password);
  });

  after(async function () {
    client.close();
    await server.stop();
    await cleanDir();
  });

  const recordOf = (name: string): string => digestRecordPath(server.storage, ALICE.user, name);
  const storedPath = (name: string): string => path.join(server.storage, ALICE.user, name);

  async function uploadRandom(name: string, size = SIZE): Promise<Buffer> {
    const data = randomBytes(size);
    const local = path.join(dir, `${name}.src`);
    await writeFile(local, data);
    const r = await client.upload(local, name);
    expect(r.sha256).to.equal(sha(data));
    return data;
  }

  /** The version of the stored file, as a record names it. */
  async function versionOf(name: string): Promise<string> {
    return recordVersion(await stat(storedPath(name), { bigint: true }));
  }

  /** Rewrites the record so that it names the file's current version: what on-disk rot looks like to the server. */
  async function pointRecordAtCurrentVersion(name: string): Promise<void> {
    const record = JSON.parse(await readFile(recordOf(name), 'utf8')) as Record<string, unknown>;
    record['file'] = await versionOf(name);
    await writeFile(recordOf(name), JSON.stringify(record));
  }

  async function flipByteInPlace(name: string, at: number): Promise<void> {
    const fh = await open(storedPath(name), 'r+');
    try {
      const one = Buffer.alloc(1);
      await fh.read(one, 0, 1, at);
      one[0] = one[0]! ^ 0xff;
      await fh.write(one, 0, 1, at);
    } finally {
      await fh.close();
    }
  }

  it('a large upload leaves a record with its digest; the download is byte-identical and verified', async function () {
    const data = await uploadRandom('big.bin');
    const record = JSON.parse(await readFile(recordOf('big.bin'), 'utf8')) as Record<string, unknown>;
    expect(record['sha256']).to.equal(sha(data));
    const out = path.join(dir, 'big.out');
    const r = await client.download('big.bin', out);
    expect(r.sha256).to.equal(sha(data));
    expect((await readFile(out)).equals(data)).to.equal(true);
  });

  it('a long listing carries the recorded digest of exactly the listed version (fts list --json too); small or changed files have none', async function () {
    const big = await uploadRandom('listed-big.bin');
    await uploadRandom('listed-small.bin', 4096);
    const changed = await uploadRandom('listed-changed.bin');
    await flipByteInPlace('listed-changed.bin', 99); // the record now names an older version
    const entries = await client.list({ long: true });
    const entry = (name: string) => entries.find((e) => e.name === name);
    expect(entry('listed-big.bin')).to.include({ size: SIZE, sha256: sha(big) });
    expect(entry('listed-small.bin')).to.not.have.property('sha256');
    expect(entry('listed-changed.bin')).to.include({ size: changed.length });
    expect(entry('listed-changed.bin')).to.not.have.property('sha256');
    expect((await client.list()).find((e) => e.name === 'listed-big.bin')).to.deep.equal({ name: 'listed-big.bin' });
    const r = await runCli(['list', '--json'], { port: server.port, user: ALICE.user, password: ALICE.password });
    expect(r.code, describeRun(r)).to.equal(0);
    const json = JSON.parse(r.out) as Array<Record<string, unknown>>;
    expect(json.find((e) => e['name'] === 'listed-big.bin')).to.include({ size: SIZE, sha256: sha(big) });
    expect(json.find((e) => e['name'] === 'listed-small.bin')).to.not.have.property('sha256');
  });

  it('a small upload leaves no record (hashing it is cheaper than reading one)', async function () {
    await uploadRandom('small.bin', 64 * 1024);
    expect(await exists(recordOf('small.bin'))).to.equal(false);
  });

  it('bit rot (content changed, version unchanged) is reported by the client as CHECKSUM_MISMATCH, and no file is left', async function () {
    await uploadRandom('rot.bin');
    await flipByteInPlace('rot.bin', 12345);
    await pointRecordAtCurrentVersion('rot.bin');
    const out = path.join(dir, 'rot.out');
    const err = await client.download('rot.bin', out, { resume: false }).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).to.be.instanceOf(FtsError);
    expect((err as FtsError).code).to.equal('CHECKSUM_MISMATCH');
    expect(await exists(out)).to.equal(false);
    // README: the download's working files are dropped too when the bytes are wrong (CHECKSUM_MISMATCH);
    // the file is over 1 MiB, so the sidecar was written during the transfer and must be gone as well.
    expect(await exists(`${out}.part`), 'LOCAL.part dropped').to.equal(false);
    expect(await exists(`${out}.part.json`), 'LOCAL.part.json dropped').to.equal(false);
  });

  it('a record names one exact version: another ctime alone (or inode, size, mtime) makes it unusable', async function () {
    const data = await uploadRandom('version.bin');
    const st = await stat(storedPath('version.bin'), { bigint: true });
    expect(await recordedDigest(server.storage, ALICE.user, 'version.bin', st)).to.equal(sha(data));
    for (const field of ['ctimeNs', 'mtimeNs', 'ino', 'size'] as const) {
      const other = Object.assign(Object.create(Object.getPrototypeOf(st) as object) as BigIntStats, st, { [field]: st[field] + 1n });
      expect(await recordedDigest(server.storage, ALICE.user, 'version.bin', other), field).to.equal(null);
    }
  });

  it('a file rewritten in place (mtime put back) is not served with its stale record: the digest of what is read is sent', async function () {
    const data = await uploadRandom('rewritten.bin');
    const before = await stat(storedPath('rewritten.bin'));
    await flipByteInPlace('rewritten.bin', 777);
    const { utimes } = await import('node:fs/promises');
    await utimes(storedPath('rewritten.bin'), before.atime, before.mtime);
    const expected = Buffer.from(data);
    expected[777] = expected[777]! ^ 0xff;
    const out = path.join(dir, 'rewritten.out');
    const r = await client.download('rewritten.bin', out, { resume: false });
    expect(r.sha256).to.equal(sha(expected));
    expect((await readFile(out)).equals(expected)).to.equal(true);
  });

  it('a torn or foreign record is ignored', async function () {
    const data = await uploadRandom('torn.bin');
    for (const junk of ['', '{"v":1,"file":"1:2:3:4"', JSON.stringify({ v: 1, file: 'x', sha256: sha(Buffer.from('other')) }), '[]']) {
      await writeFile(recordOf('torn.bin'), junk);
      const r = await client.downloadBuffer('torn.bin');
      expect(r.sha256, JSON.stringify(junk)).to.equal(sha(data));
      expect(r.data.equals(data)).to.equal(true);
    }
    // The right version with a malformed digest: ignored too (the file is hashed), not sent on.
    await writeFile(recordOf('torn.bin'), JSON.stringify({ v: 1, file: await versionOf('torn.bin'), sha256: sha(data).toUpperCase() }));
    expect((await client.downloadBuffer('torn.bin')).sha256).to.equal(sha(data));
  });

  it('a small file published over a recorded one is hashed (the record names the old version); deleting it removes the record', async function () {
    await uploadRandom('shrunk.bin');
    const small = await uploadRandom('shrunk.bin', 4096);
    expect(await exists(recordOf('shrunk.bin')), 'the old record is still there').to.equal(true);
    expect((await client.downloadBuffer('shrunk.bin')).sha256).to.equal(sha(small));
    await client.delete('shrunk.bin');
    expect(await exists(recordOf('shrunk.bin'))).to.equal(false);
  });

  it('a replaced file gets a new record; a deleted one loses its record', async function () {
    await uploadRandom('replaced.bin');
    const second = await uploadRandom('replaced.bin');
    const record = JSON.parse(await readFile(recordOf('replaced.bin'), 'utf8')) as Record<string, unknown>;
    expect(record['sha256']).to.equal(sha(second));
    expect((await client.downloadBuffer('replaced.bin')).sha256).to.equal(sha(second));
    await client.delete('replaced.bin');
    expect(await exists(recordOf('replaced.bin'))).to.equal(false);
    const left = await readdir(path.dirname(recordOf('replaced.bin')));
    expect(left).to.not.include(path.basename(recordOf('replaced.bin')));
  });

  it('a download resumed at an offset sends the recorded digest of the whole file without reading the skipped bytes', async function () {
    const data = await uploadRandom('resumed.bin');
    // Rot in the skipped prefix, invisible to the version: had the server read and hashed the prefix, the
    // final digest would be of the rotten bytes.
    await flipByteInPlace('resumed.bin', 1000);
    await pointRecordAtCurrentVersion('resumed.bin');
    const offset = SIZE - 100_000;
    const r = await downloadOnce(server.port, ALICE, 'resumed.bin', offset);
    expect(r.final['status']).to.equal('ok');
    expect(r.final['sha256']).to.equal(sha(data));
    expect(Buffer.concat(r.data).equals(data.subarray(offset))).to.equal(true);
  });
});
