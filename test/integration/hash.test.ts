/**
 * `hash` (PROTOCOL.md §6.11) and `fts sum`, end to end: a real fts-server, the library and the CLI as a
 * process. The digest must be that of the file's current bytes: the one recorded at upload only for that
 * very version, else computed by reading.
 */
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { FtsClient, FtsError, isServerError } from '../../client/index.js';
import { recordDigest } from '../../server/storage/digest-records.js';
import { describeRun, runCli, type CliResult } from '../helpers/cli.js';
import { runAdmin, sessionsJson } from '../helpers/admin-cli.js';
import { sha256, waitUntil } from '../helpers/lifecycle-util.js';
import { DEFAULT_USERS, TestServer, type TestUser } from '../helpers/server.js';
import { tempDir } from '../helpers/temp.js';
import { metric, metricsPortOf } from '../helpers/hardening-proc.js';

const ALICE = DEFAULT_USERS[0]!;
const MiB = 1024 * 1024;
const LISTER: TestUser = { user: 'lister', password: 'lister-pass' };

describe('hash: the SHA-256 of a server file without downloading it (`fts sum`)', function () {
  this.timeout(60_000);

  let server: TestServer;
  let dir = '';
  let cleanDir: () => Promise<void> = async () => undefined;
  const clients: FtsClient[] = [];

  before(async function () {
    this.timeout(30_000);
    ({ dir, cleanup: cleanDir } = await tempDir('fts-hash-'));
    const permissions = path.join(dir, 'permissions');
    await writeFile(permissions, 'lister:l\n');
    server = await TestServer.start({ workers: 2, users: [ALICE, LISTER], args: ['--permissions-file', permissions] });
  });

  after(async function () {
    this.timeout(30_000);
    await server.stop();
    await cleanDir();
  });

  afterEach(() => {
    for (const c of clients.splice(0)) c.close();
  });

  async function login(user: TestUser = ALICE): Promise<FtsClient> {
    const c = await FtsClient.connect({ port: server.port });
    clients.push(c);
    await c.auth(user.user, user.password);
    return c;
  }

  function cli(args: readonly string[]): Promise<CliResult> {
    return runCli(args, { port: server.port, user: ALICE.user, password: ALICE.password, cwd: dir });
  }

  function stored(name: string): string {
    return path.join(server.storage, ALICE.user, name);
  }

  async function failure(p: Promise<unknown>): Promise<FtsError> {
    const err = await p.then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).to.be.instanceOf(FtsError);
    return err as FtsError;
  }

  it('answers the digest, size and mtime of a small file (read and hashed now)', async () => {
    const client = await login();
    const data = randomBytes(5000);
    const up = await client.uploadBuffer('small.bin', data);
    const h = await client.hash('small.bin');
    expect(h).to.deep.equal({ name: 'small.bin', size: data.length, mtime: up.mtime, sha256: sha256(data), read: true, damaged: false });
  });

  it('a large file uploaded through fts: the digest recorded at its upload; changed in place on the server\'s disk: the new bytes\' digest', async () => {
    const client = await login();
    const data = randomBytes(9 * MiB); // ≥ 8 MiB: the digest is recorded at publish
    await client.uploadBuffer('large.bin', data);
    expect(await client.hash('large.bin')).to.include({ sha256: sha256(data), read: false, damaged: false });
    expect(await client.hash('large.bin', { read: true }), 'read when asked').to.include({ sha256: sha256(data), read: true, damaged: false });
    // Someone with access to the storage rewrites one byte in place: another version (its mtime changes),
    // so the record made for the uploaded version must not be answered for it.
    const before = await stat(stored('large.bin'));
    const fh = await open(stored('large.bin'), 'r+');
    try {
      await fh.write(Buffer.from([data[100]! ^ 0xff]), 0, 1, 100);
    } finally {
      await fh.close();
    }
    const changed = await readFile(stored('large.bin'));
    expect((await stat(stored('large.bin'))).mtimeMs).to.not.equal(before.mtimeMs);
    const h = await client.hash('large.bin');
    expect(h.sha256, 'the digest of what the file holds now').to.equal(sha256(changed));
    expect(h.sha256).to.not.equal(sha256(data));
    expect(h).to.include({ read: true, damaged: false });
  });

  it('read: true re-reads a file whose record is still valid, and reports bytes that no longer match it as damaged (bit rot)', async () => {
    const client = await login();
    const data = randomBytes(9 * MiB);
    await client.uploadBuffer('rot.bin', data);
    // Bit rot changes the bytes but not the metadata the record names. The same state, made by hand: flip a
    // byte, then record the uploaded digest for the version now there.
    const fh = await open(stored('rot.bin'), 'r+');
    try {
      await fh.write(Buffer.from([data[5]! ^ 0x01]), 0, 1, 5);
    } finally {
      await fh.close();
    }
    const st = await stat(stored('rot.bin'), { bigint: true });
    await recordDigest(server.storage, ALICE.user, 'rot.bin', stored('rot.bin'), st, sha256(data));
    const rotten = sha256(await readFile(stored('rot.bin')));
    expect(await client.hash('rot.bin'), 'without read: the record').to.include({ sha256: sha256(data), read: false, damaged: false });
    expect(await client.hash('rot.bin', { read: true })).to.include({ sha256: rotten, read: true, damaged: true });
    const r = await cli(['sum', '--verify', 'rot.bin']);
    expect(r.code, describeRun(r)).to.equal(1);
    expect(r.out).to.equal(`${rotten}  rot.bin\n`);
    expect(r.stderr).to.match(/rot\.bin: damaged on the server/);
    const json = await cli(['sum', '--verify', '--json', 'rot.bin']);
    expect(json.code, describeRun(json)).to.equal(1);
    expect(JSON.parse(json.out)).to.deep.equal([{ name: 'rot.bin', size: data.length, mtime: new Date(Number(st.mtimeMs)).toISOString(), sha256: rotten, read: true, damaged: true }]);
    const logged = await server.waitForLog((l) => l['event'] === 'damaged');
    expect(logged).to.include({ file: 'rot.bin', recorded: sha256(data), sha256: rotten, user: ALICE.user });
    // Each of the three reads that found the damage is counted, for an alert (FtsFileDamaged).
    const port = await metricsPortOf(server);
    await waitUntil('fts_damaged_files_total 3', async () => (await metric(port, 'fts_damaged_files_total')) === 3, 10_000, 100);
  });

  it('a large file put into the storage by other means (no record) is read and hashed', async () => {
    const data = randomBytes(10 * MiB);
    await writeFile(stored('placed.bin'), data);
    const h = await (await login()).hash('placed.bin');
    expect(h).to.include({ name: 'placed.bin', size: data.length, sha256: sha256(data) });
  });

  it('errors: NOT_FOUND, NOT_A_FILE for a directory, BAD_NAME refused before sending, PERMISSION_DENIED without r; the session goes on', async () => {
    const client = await login();
    const missing = await failure(client.hash('no-such-file'));
    expect(missing.code).to.equal('NOT_FOUND');
    expect(isServerError(missing)).to.equal(true);
    await mkdir(stored('a-directory'));
    expect((await failure(client.hash('a-directory'))).code).to.equal('NOT_A_FILE');
    const badName = await failure(client.hash('../escape'));
    expect(badName.code).to.equal('BAD_NAME');
    expect(isServerError(badName), 'refused locally').to.equal(false);
    expect(client.connected).to.equal(true);
    const lister = await login(LISTER); // its login makes its directory
    await writeFile(path.join(server.storage, LISTER.user, 'pin.txt'), '1234');
    const denied = await failure(lister.hash('pin.txt'));
    expect(denied.code, 'a digest tells whether a guess of the content is right: it needs r').to.equal('PERMISSION_DENIED');
    expect(lister.connected).to.equal(true);
  });

  it('many pipelined hash requests on one connection each get their own answer, in order', async () => {
    const client = await login();
    const files = Array.from({ length: 20 }, (_, i) => ({ name: `many-${i}.bin`, data: randomBytes(1000 + i) }));
    await Promise.all(files.map((f) => client.uploadBuffer(f.name, f.data)));
    const hashes = await Promise.all(files.map((f) => client.hash(f.name)));
    expect(hashes.map((h) => [h.name, h.sha256])).to.deep.equal(files.map((f) => [f.name, sha256(f.data)]));
  });

  describe('fts sum', () => {
    it('prints "<sha256>  NAME" per file, in argument order, which sha256sum -c accepts for local copies', async () => {
      const client = await login();
      const a = randomBytes(3000);
      const b = randomBytes(2 * MiB);
      await client.uploadBuffer('sum-a.bin', a);
      await client.uploadBuffer('sum b.bin', b);
      const r = await cli(['sum', 'sum b.bin', 'sum-a.bin']);
      expect(r.code, describeRun(r)).to.equal(0);
      expect(r.out).to.equal(`${sha256(b)}  sum b.bin\n${sha256(a)}  sum-a.bin\n`);
      const local = path.join(dir, 'local');
      await mkdir(local);
      await writeFile(path.join(local, 'sum-a.bin'), a);
      await writeFile(path.join(local, 'sum b.bin'), b);
      await writeFile(path.join(local, 'SUMS'), r.out);
      const checked = await promisify(execFile)('sha256sum', ['-c', 'SUMS'], { cwd: local });
      expect(checked.stdout).to.equal('sum b.bin: OK\nsum-a.bin: OK\n');
    });

    it('--json: an array of {name, size, mtime (ISO 8601), sha256, read, damaged}', async () => {
      const client = await login();
      const data = randomBytes(100);
      const up = await client.uploadBuffer('sum-json.bin', data);
      const r = await cli(['sum', 'sum-json.bin', '--json']);
      expect(r.code, describeRun(r)).to.equal(0);
      expect(JSON.parse(r.out)).to.deep.equal([{ name: 'sum-json.bin', size: 100, mtime: new Date(up.mtime).toISOString(), sha256: sha256(data), read: true, damaged: false }]);
    });

    it('a missing NAME is reported and exits 4, the others are still printed; a bad NAME exits 2 before connecting', async () => {
      const client = await login();
      const data = randomBytes(10);
      await client.uploadBuffer('sum-present.bin', data);
      const r = await cli(['sum', 'sum-missing.bin', 'sum-present.bin']);
      expect(r.code, describeRun(r)).to.equal(4);
      expect(r.out).to.equal(`${sha256(data)}  sum-present.bin\n`);
      expect(r.stderr).to.include('sum-missing.bin');
      expect(r.stderr).to.include('NOT_FOUND');
      const bad = await cli(['sum', 'ok.bin', 'a/b']);
      expect(bad.code, describeRun(bad)).to.equal(2);
      expect(bad.out).to.equal('');
    });

    it('the session ends in the middle (kicked while the server reads a large file): every name not hashed is named; fts-admin sessions shows the reading', async () => {
      const client = await login();
      const first = randomBytes(10);
      await client.uploadBuffer('sum-first.bin', first);
      await client.uploadBuffer('sum-after-1.bin', randomBytes(10));
      await client.uploadBuffer('sum-after-2.bin', randomBytes(10));
      // A sparse file put there by other means: reading its 64 GiB of holes takes many seconds, and it ends
      // as soon as the session does.
      const sparse = await open(stored('sum-sparse.bin'), 'w');
      try {
        await sparse.truncate(64 * 1024 * MiB);
      } finally {
        await sparse.close();
      }
      const run = cli(['sum', '--retries', '0', 'sum-first.bin', 'sum-sparse.bin', 'sum-after-1.bin', 'sum-after-2.bin']);
      const reading = await waitUntil('the server to be reading sum-sparse.bin', async () => {
        const s = (await sessionsJson(server.adminSocket)).find((x) => x.op === 'hash' && x.file === 'sum-sparse.bin' && x.bytes > 0);
        return s ?? false;
      }, 20_000, 50);
      expect(reading.user).to.equal(ALICE.user);
      expect((await runAdmin(server.adminSocket, ['kick-user', ALICE.user])).code).to.equal(0);
      const r = await run;
      expect(r.code, describeRun(r)).to.equal(1);
      expect(r.out).to.equal(`${sha256(first)}  sum-first.bin\n`);
      expect(r.stderr).to.include('fts: not hashed: sum-sparse.bin, sum-after-1.bin, sum-after-2.bin\n');
      const audit = await server.waitForLog((l) => l['event'] === 'hash' && l['file'] === 'sum-sparse.bin');
      expect(audit['bytes'], 'the bytes read before the kick').to.be.a('number').and.greaterThan(0);
    });
  });
});
