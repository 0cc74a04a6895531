/**
 * The per-user quota (--quota), end to end: a real fts-server, the `fts` CLI and the library. An upload is
 * admitted or refused with QUOTA_EXCEEDED when it starts, against what the user's published files and
 * partial uploads hold plus the bytes the upload still has to send; `offset` answers the same refusal, so
 * a client learns it before sending a large file; nothing is published or staged by a refused upload;
 * a delete makes room at once, on any worker; other users are not affected.
 */
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { FtsClient } from '../../client/index.js';
import { codeOf, loginClient, stagingFiles } from '../helpers/common.js';
import { runCli, describeRun } from '../helpers/cli.js';
import { DEFAULT_USERS, TestServer } from '../helpers/server.js';
import { tempDir } from '../helpers/temp.js';
import { runAdmin } from '../helpers/admin-cli.js';
import { RawClient } from '../helpers/raw-client.js';
import { createHash } from 'node:crypto';

const ALICE = DEFAULT_USERS[0]!;
const BOB = DEFAULT_USERS[1]!;
const MIB = 1024 * 1024;


/** fts_quota_refusals_total from the server's /metrics. */
async function quotaRefusals(server: TestServer): Promise<number> {
  const line = server.lines.find((l) => typeof l.msg === 'string' && l.msg.startsWith('metrics on http'));
  const res = await fetch(`http://127.0.0.1:${String(line?.['port'])}/metrics`, { signal: AbortSignal.timeout(20_000) });
  const m = /^fts_quota_refusals_total (\d+)$/m.exec(await res.text());
  expect(m, 'fts_quota_refusals_total in /metrics').to.not.equal(null);
  return Number(m![1]);
}

describe('per-user quota (--quota)', function () {
  this.timeout(60_000);

  let server: TestServer;
  let local: string;
  let cleanupLocal: () => Promise<void>;
  const clients: FtsClient[] = [];

  const connect = (user = ALICE): Promise<FtsClient> => loginClient(server, clients, user);

  async function localFile(name: string, bytes: number): Promise<string> {
    const file = path.join(local, name);
    await writeFile(file, randomBytes(bytes));
    return file;
  }

  const published = async (user: string): Promise<string[]> => (await readdir(path.join(server.storage, user))).sort();

  beforeEach(async function () {
    // Two workers: a delete on one must make room for an upload on the other at once.
    server = await TestServer.start({ workers: 2, args: ['--quota', '3M'] });
    ({ dir: local, cleanup: cleanupLocal } = await tempDir('fts-quota-'));
  });

  afterEach(async function () {
    for (const c of clients.splice(0)) c.close();
    await server.stop();
    await cleanupLocal();
  });

  it('the CLI uploads up to the quota; the upload that would pass it exits 1 with QUOTA_EXCEEDED, naming usage and quota, and nothing of it is kept', async function () {
    const big = await localFile('big.bin', 2 * MIB);
    const small = await localFile('small.bin', 600 * 1024);
    const opts = { port: server.port, user: ALICE.user, password: ALICE.password };
    const first = await runCli(['upload', big, 'a'], opts);
    expect(first.code, describeRun(first)).to.equal(0);
    // 2 MiB used of 3 MiB: 2 MiB more does not fit (refused at `offset`, before the data is sent).
    const refused = await runCli(['upload', big, 'b'], opts);
    expect(refused.code, describeRun(refused)).to.equal(1);
    expect(refused.stderr).to.match(/^fts: b: 2097152 more bytes would exceed your quota: 2097152 of 3145728 bytes used, 1048576 left \(QUOTA_EXCEEDED\)\n$/);
    expect(server.lines.some((l) => l['event'] === 'offset' && l['file'] === 'b' && l['code'] === 'QUOTA_EXCEEDED'), 'refused at `offset`, before any data').to.equal(true);
    expect(server.lines.some((l) => l['event'] === 'upload' && l['file'] === 'b'), 'no upload request was sent').to.equal(false);
    // A small file (no `offset` first) is refused after its data, by the upload itself.
    const fits = await runCli(['upload', small, 'c'], opts);
    expect(fits.code, describeRun(fits)).to.equal(0);
    const over = await runCli(['upload', small, 'd'], opts);
    expect(over.code, describeRun(over)).to.equal(1);
    expect(over.stderr).to.include('(QUOTA_EXCEEDED)');
    expect(await published(ALICE.user)).to.deep.equal(['a', 'c']);
    expect(await stagingFiles(server, ALICE.user), 'nothing staged by refused uploads').to.deep.equal([]);
    expect(await quotaRefusals(server), 'fts_quota_refusals_total').to.equal(2);
  });

  it('a delete makes room at once, whichever worker the next upload lands on; replacing a file counts the new size while the old one stays', async function () {
    const big = await localFile('big.bin', 2 * MIB);
    const opts = { port: server.port, user: ALICE.user, password: ALICE.password };
    expect((await runCli(['upload', big, 'a'], opts)).code).to.equal(0);
    for (let i = 0; i < 4; i++) {
      // Alternating connections land on both workers; each delete is followed at once by the upload.
      expect((await runCli(['delete', 'a'], opts)).code, `delete ${i}`).to.equal(0);
      const again = await runCli(['upload', big, 'a'], opts);
      expect(again.code, `upload ${i}: ${describeRun(again)}`).to.equal(0);
    }
    // Until the new version is published the old one holds its room too: 2 + 2 MiB do not fit in 3.
    const replace = await runCli(['upload', big, 'a'], opts);
    expect(replace.code, describeRun(replace)).to.equal(1);
    expect(replace.stderr).to.include('(QUOTA_EXCEEDED)');
  });

  it('over the protocol: `upload` answers QUOTA_EXCEEDED (non-fatal, with used and quota); the session goes on', async function () {
    const c = await connect();
    await c.uploadBuffer('one.bin', randomBytes(3 * MIB - 10));
    const data = randomBytes(11);
    const err = await c.uploadBuffer('two.bin', data).then(
      () => null,
      (e: unknown) => e as { code: string; details: Record<string, unknown>; fatal: boolean },
    );
    expect(err, 'upload past the quota').to.not.equal(null);
    expect(err!.code).to.equal('QUOTA_EXCEEDED');
    expect(err!.fatal).to.equal(false);
    expect(err!.details).to.include({ used: 3 * MIB - 10, quota: 3 * MIB });
    // Exactly up to the quota fits.
    await c.uploadBuffer('two.bin', data.subarray(0, 10));
    expect(await codeOf(c.uploadBuffer('three.bin', Buffer.alloc(1))), 'one byte more').to.equal('QUOTA_EXCEEDED');
    expect((await c.list()).map((e) => e.name), 'the session still works').to.deep.equal(['one.bin', 'two.bin']);
  });

  it('partial uploads count: a kept partial holds its room until it is resumed, published or swept', async function () {
    // A partial of 2 MiB, staged by the test as an interrupted upload would leave it.
    const dir = path.join(server.storage, '.fts', 'staging', ALICE.user);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await writeFile(path.join(dir, `${'0'.repeat(64)}.${'1'.repeat(24)}.part`), randomBytes(2 * MIB), { mode: 0o600 });
    const c = await connect();
    expect(await codeOf(c.uploadBuffer('x.bin', randomBytes(MIB + 1))), 'upload past the quota with the partial').to.equal('QUOTA_EXCEEDED');
    await c.uploadBuffer('x.bin', randomBytes(MIB));
  });

  it('a resume while the cut attempt is still open (half-open, same worker) is not refused: the bytes it will send are already counted once', async function () {
    await server.stop();
    server = await TestServer.start({ workers: 1, args: ['--quota', '3M'] });
    const data = randomBytes(2_500_000);
    const sha256 = createHash('sha256').update(data).digest('hex');
    const first = await RawClient.login(server.port, ALICE.user, ALICE.password);
    try {
      // 1 MiB arrives, then the connection goes quiet without closing.
      await first.send({ op: 'upload', name: 'big.bin', size: data.length, sha256 });
      await first.sendData(data.subarray(0, MIB));
      // Until the server has written it, the offset is below 1 MiB; wait for all of it.
      const second = await RawClient.login(server.port, ALICE.user, ALICE.password);
      try {
        let offset = 0;
        for (let i = 0; i < 100 && offset < MIB; i++) {
          await new Promise((r) => setTimeout(r, 50));
          const reply = await second.request({ op: 'offset', name: 'big.bin', size: data.length, sha256 });
          expect(reply, 'offset reply').to.include({ status: 'ok' });
          offset = reply!['offset'] as number;
        }
        expect(offset, 'the kept bytes').to.equal(MIB);
        // The resume of the remaining 1.4 MB: 1 MiB stored + 1.4 MB on its way (counted once) fit in 3 MiB.
        await second.send({ op: 'upload', name: 'big.bin', size: data.length, sha256, offset });
        for (let at = offset; at < data.length; at += MIB) await second.sendData(data.subarray(at, Math.min(at + MIB, data.length)));
        const reply = await second.nextHeader();
        expect(reply, 'the resumed upload').to.include({ status: 'ok', size: data.length, sha256 });
      } finally {
        second.socket.destroy();
      }
    } finally {
      first.socket.destroy();
    }
  });

  it('a resume takes over one cut attempt of its file; another attempt still in flight keeps counting (same worker)', async function () {
    await server.stop();
    server = await TestServer.start({ workers: 1, args: ['--quota', '3M'] });
    const data = randomBytes(1_500_000);
    const sha256 = createHash('sha256').update(data).digest('hex');
    const raws: RawClient[] = [];
    try {
      // Two fresh attempts of x: 100,000 bytes each, then quiet (their connections stay open).
      for (let i = 0; i < 2; i++) {
        const r = await RawClient.login(server.port, ALICE.user, ALICE.password);
        raws.push(r);
        await r.send({ op: 'upload', name: 'x', size: data.length, sha256 });
        await r.sendData(data.subarray(0, 100_000));
      }
      const third = await RawClient.login(server.port, ALICE.user, ALICE.password);
      raws.push(third);
      let offset = 0;
      for (let i = 0; i < 100 && offset < 100_000; i++) {
        await new Promise((r) => setTimeout(r, 50));
        offset = ((await third.request({ op: 'offset', name: 'x', size: data.length, sha256 }))?.['offset'] as number | undefined) ?? 0;
      }
      expect(offset, 'the kept bytes').to.equal(100_000);
      // The resume takes one attempt over and publishes x (1.5 MB).
      await third.send({ op: 'upload', name: 'x', size: data.length, sha256, offset });
      for (let at = offset; at < data.length; at += MIB) await third.sendData(data.subarray(at, Math.min(at + MIB, data.length)));
      expect(await third.nextHeader(), 'the resume').to.include({ status: 'ok', size: data.length });
      // x (1.5 MB) + the other attempt (100,000 written, 1.4 MB to come) + 1.4 MB would pass 3 MiB.
      const c = await connect();
      expect(await codeOf(c.uploadBuffer('y', randomBytes(1_400_000))), 'an upload that only fits if the other attempt is forgotten').to.equal('QUOTA_EXCEEDED');
    } finally {
      for (const r of raws) r.socket.destroy();
    }
  });

  it("one user's usage does not count against another's", async function () {
    const a = await connect(ALICE);
    await a.uploadBuffer('full.bin', randomBytes(3 * MIB));
    expect(await codeOf(a.uploadBuffer('more.bin', Buffer.alloc(1)))).to.equal('QUOTA_EXCEEDED');
    const b = await connect(BOB);
    await b.uploadBuffer('full.bin', randomBytes(3 * MIB));
    expect(await published(BOB.user)).to.deep.equal(['full.bin']);
  });
});

describe('usage: what a user stores (fts usage, the `usage` request)', function () {
  this.timeout(60_000);

  let server: TestServer | null = null;
  let local: string;
  let cleanupLocal: () => Promise<void>;

  beforeEach(async function () {
    ({ dir: local, cleanup: cleanupLocal } = await tempDir('fts-usage-'));
  });

  afterEach(async function () {
    await server?.stop();
    server = null;
    await cleanupLocal();
  });

  it('with a quota: bytes used, the quota with the share used and what is left, files and partial bytes; --json gives the same figures', async function () {
    server = await TestServer.start({ args: ['--quota', '3M'] });
    const file = path.join(local, 'f.bin');
    await writeFile(file, randomBytes(1_000_000));
    const opts = { port: server.port, user: ALICE.user, password: ALICE.password };
    expect((await runCli(['upload', file, 'one'], opts)).code).to.equal(0);
    const dir = path.join(server.storage, '.fts', 'staging', ALICE.user);
    await writeFile(path.join(dir, `${'a'.repeat(64)}.${'b'.repeat(24)}.part`), randomBytes(48_576), { mode: 0o600 });
    const text = await runCli(['usage'], opts);
    expect(text.code, describeRun(text)).to.equal(0);
    expect(text.out).to.equal(
      [
        'used     1048576 bytes (1.0 MiB)',
        'quota    3145728 bytes (3.0 MiB), 33.3 % used, 2097152 bytes (2.0 MiB) left',
        'files    1',
        'partial  48576 bytes (47.4 KiB) in unfinished uploads, kept for a resume',
        '',
      ].join('\n'),
    );
    const json = await runCli(['df', '--json'], opts);
    expect(json.code, describeRun(json)).to.equal(0);
    expect(JSON.parse(json.out)).to.deep.equal({ used: 1_048_576, files: 1, partial: 48_576, quota: 3 * MIB, maxFiles: null });
  });

  it('without a quota: quota none (null in JSON); the greeting offers the capability; another user sees only their own', async function () {
    server = await TestServer.start();
    const c = await FtsClient.connect({ host: '127.0.0.1', port: server.port });
    try {
      expect(c.greeting['caps']).to.include('usage');
      await c.auth(BOB.user, BOB.password);
      await c.uploadBuffer('x', Buffer.alloc(10));
      expect(await c.usage()).to.deep.equal({ used: 10, files: 1, partial: 0, quota: null, maxFiles: null });
    } finally {
      c.close();
    }
    const text = await runCli(['usage'], { port: server.port, user: ALICE.user, password: ALICE.password });
    expect(text.code, describeRun(text)).to.equal(0);
    expect(text.out).to.equal('used     0 bytes (0 B)\nquota    none\nfiles    0\npartial  0 bytes (0 B) in unfinished uploads, kept for a resume\n');
    const extra = await runCli(['usage', 'x'], { port: server.port, user: ALICE.user, password: ALICE.password });
    expect(extra.code, 'an argument is a usage error').to.equal(2);
  });
});

describe('per-user quotas (--quota-file), and their reload', function () {
  this.timeout(60_000);

  let server: TestServer;
  let local: string;
  let cleanupLocal: () => Promise<void>;
  let quotaFile: string;
  const clients: FtsClient[] = [];

  const connect = (user = ALICE): Promise<FtsClient> => loginClient(server, clients, user);

  beforeEach(async function () {
    ({ dir: local, cleanup: cleanupLocal } = await tempDir('fts-quota-file-'));
    quotaFile = path.join(local, 'quotas.txt');
    // alice: her own 1 MiB; bob: no limit at all, whatever --quota says.
    await writeFile(quotaFile, '# tiers\nalice:1M\nbob:off\n');
    server = await TestServer.start({ workers: 2, args: ['--quota', '3M', '--quota-file', quotaFile] });
  });

  afterEach(async function () {
    for (const c of clients.splice(0)) c.close();
    await server.stop();
    await cleanupLocal();
  });

  it('a user the file names gets their own quota (off: none), in refusals and in usage', async function () {
    const a = await connect(ALICE);
    expect(await codeOf(a.uploadBuffer('two.bin', randomBytes(2 * MIB))), 'alice: 2 MiB past her own 1 MiB').to.equal('QUOTA_EXCEEDED');
    await a.uploadBuffer('one.bin', randomBytes(MIB));
    expect((await a.usage()).quota).to.equal(MIB);
    const b = await connect(BOB);
    await b.uploadBuffer('four.bin', randomBytes(4 * MIB));
    expect(await b.usage()).to.deep.include({ used: 4 * MIB, quota: null });
  });

  it('fts-admin usage lists every user of the users file and every user directory, with their own quota; --json has the exact bytes', async function () {
    const a = await connect(ALICE);
    await a.uploadBuffer('half.bin', randomBytes(MIB / 2));
    // A directory left by a user no longer in the users file still holds files: listed too.
    await mkdir(path.join(server.storage, 'carol'), { mode: 0o700 });
    await writeFile(path.join(server.storage, 'carol', 'old.bin'), randomBytes(1000));
    const text = await runAdmin(server.adminSocket, ['usage']);
    expect(text.code, text.stderr).to.equal(0);
    expect(text.stdout).to.equal(
      [
        'USER        USED    QUOTA   USE%  FILES  MAX FILES  PARTIAL',
        'alice  512.0 KiB  1.0 MiB  50.0%      1       none      0 B',
        'bob          0 B     none      -      0       none      0 B',
        'carol     1000 B  3.0 MiB   0.0%      1       none      0 B',
        '',
      ].join('\n'),
    );
    const json = await runAdmin(server.adminSocket, ['usage', '--json']);
    expect(json.code, json.stderr).to.equal(0);
    expect(JSON.parse(json.stdout)).to.deep.equal([
      { user: 'alice', used: MIB / 2, files: 1, partial: 0, quota: MIB, maxFiles: null },
      { user: 'bob', used: 0, files: 0, partial: 0, quota: null, maxFiles: null },
      { user: 'carol', used: 1000, files: 1, partial: 0, quota: 3 * MIB, maxFiles: null },
    ]);
  });

  it('fts-admin reload applies a changed file to open sessions; a malformed file is refused (exit 1, line named) and the old quotas stay', async function () {
    const a = await connect(ALICE);
    await a.uploadBuffer('one.bin', randomBytes(MIB));
    expect(await codeOf(a.uploadBuffer('more.bin', Buffer.alloc(1))), 'at her 1 MiB').to.equal('QUOTA_EXCEEDED');
    await writeFile(quotaFile, 'alice:2M\n');
    const reloaded = await runAdmin(server.adminSocket, ['reload']);
    expect(reloaded.code, reloaded.stderr).to.equal(0);
    expect(reloaded.stdout).to.include('quotas reloaded: 1 users with their own quota\n');
    // The same session, after the reload: alice has 2 MiB now (both workers got the file).
    await a.uploadBuffer('more.bin', randomBytes(MIB));
    const b = await connect(BOB);
    expect((await b.usage()).quota, 'bob is back under --quota').to.equal(3 * MIB);
    await writeFile(quotaFile, 'alice:2M\nbob:2X\n');
    const refused = await runAdmin(server.adminSocket, ['reload']);
    expect(refused.code).to.equal(1);
    expect(refused.stderr).to.include(`quota file ${quotaFile}: line 2: SIZE must be`);
    expect(refused.stderr).to.include('the old quotas, permissions, rates, networks and user table are kept');
    expect((await b.usage()).quota, 'bob keeps the quota of the last good file').to.equal(3 * MIB);
  });
});
