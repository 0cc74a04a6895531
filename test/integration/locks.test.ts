/**
 * Per-name lock contention, end to end: a real fts-server, and the test process holding a name's lock itself
 * through the project's own withLock (the same lock directory under <storage>/.fts/locks that every worker
 * uses, and proper-lockfile's mkdir works across processes). What the server does while the lock is held is
 * what PROTOCOL.md promises: an upload's publish and a delete wait for the lock, for at most --lock-timeout,
 * then answer LOCKED (§7); an upload answered LOCKED keeps its verified bytes, so a retry asks `offset`, gets
 * `size` and publishes without data (§6.1); a delete waits and then completes (§6.5); a download takes no
 * lock and is served the published version (§6.3).
 */
import { expect } from 'chai';
import { createHash, randomBytes } from 'node:crypto';
import { lstat, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { adminRequest } from '../../admin/admin-client.js';
import { FtsClient, FtsError, keptUpload, ResilientClient, type RetryInfo } from '../../client/index.js';
import { encodeData, encodeHeader, MAX_CHUNK_BYTES, type SessionInfo } from '../../protocol/index.js';
import { codeOf, holdLock as holdLockOf, stagingFiles } from '../helpers/common.js';
import { describeRun, runCli } from '../helpers/cli.js';
import { delay, RawClient } from '../helpers/raw-client.js';
import { waitUntil } from '../helpers/lifecycle-util.js';
import { DEFAULT_USERS, TestServer } from '../helpers/server.js';

const ALICE = DEFAULT_USERS[0]!;
const KIB = 1024;

const sha = (data: Uint8Array): string => createHash('sha256').update(data).digest('hex');

/** The data frames carrying `data`, each at most MAX_CHUNK_BYTES. */
function dataFrames(data: Buffer): Buffer[] {
  const frames: Buffer[] = [];
  for (let at = 0; at < data.length; at += MAX_CHUNK_BYTES) frames.push(encodeData(data.subarray(at, at + MAX_CHUNK_BYTES)));
  return frames;
}

describe('per-name locks held by another process (end to end)', function () {
  this.timeout(60_000);

  const clients: FtsClient[] = [];
  const raws: RawClient[] = [];
  /** Releases of locks this test holds; afterEach runs any left, so a failed test never leaves one held. */
  const held: Array<() => Promise<void>> = [];

  /** Takes alice's lock on `name` (common.ts holdLock), released by afterEach at the latest. */
  async function holdLock(server: TestServer, name: string): Promise<() => Promise<void>> {
    const release = await holdLockOf(server.storage, ALICE.user, name);
    held.push(release);
    return release;
  }

  /**
   * A ResilientClient (3 retries) whose retries release the lock `hold()` took (alice's, on `name`): the
   * repeat must then succeed. `retries` records every onRetry.
   */
  async function releasingOnRetry(server: TestServer, name: string): Promise<{ rc: ResilientClient; retries: RetryInfo[]; hold: () => Promise<void> }> {
    const retries: RetryInfo[] = [];
    let release: (() => Promise<void>) | null = null;
    const rc = await ResilientClient.connect({
      port: server.port,
      user: ALICE.user,
      password: ALICE.password,
      reconnect: { retries: 3, initialDelayMs: 100 },
      onRetry: (info) => {
        retries.push(info);
        void release?.();
      },
    });
    const hold = async (): Promise<void> => {
      release = await holdLock(server, name);
    };
    return { rc, retries, hold };
  }

  async function client(server: TestServer): Promise<FtsClient> {
    const c = await FtsClient.connect({ host: '127.0.0.1', port: server.port });
    clients.push(c);
    await c.auth(ALICE.user, ALICE.password);
    return c;
  }

  async function raw(server: TestServer): Promise<RawClient> {
    const r = await RawClient.login(server.port, ALICE.user, ALICE.password);
    raws.push(r);
    return r;
  }

  afterEach(async function () {
    for (const release of held.splice(0)) await release();
    for (const c of clients.splice(0)) c.close();
    for (const r of raws.splice(0)) r.close();
  });

  describe('with --lock-timeout 1', function () {
    let server: TestServer;

    before(async function () {
      server = await TestServer.start({ workers: 2, args: ['--lock-timeout', '1'] });
    });

    after(async function () {
      await server?.stop();
    });

    it('an upload while the lock is held is answered LOCKED, leaves the published file alone and keeps its verified bytes; after the release the retry at offset = size publishes them', async function () {
      const name = 'upload-locked.bin';
      const target = path.join(server.storage, ALICE.user, name);
      const v0 = randomBytes(64 * KIB + 3);
      const v1 = randomBytes(1 * MAX_CHUNK_BYTES + 300 * KIB + 7); // two data frames
      const c = await client(server);
      await c.uploadBuffer(name, v0);
      const published = await stat(target);
      const earlier = new Set(await stagingFiles(server, ALICE.user));
      const fresh = async (): Promise<string[]> => (await stagingFiles(server, ALICE.user)).filter((f) => !earlier.has(f));

      const release = await holdLock(server, name);
      const r = await raw(server);
      const identity = { op: 'upload', name, size: v1.length, sha256: sha(v1) };
      await r.write(encodeHeader({ ...identity, id: 2 }), ...dataFrames(v1));
      // The publish waits --lock-timeout (1 s) for the lock we hold, then gives up.
      const locked = await r.reply(20_000);
      expect(locked.final, 'reply to the upload while the lock is held').to.include({ id: 2, status: 'error', code: 'LOCKED', fatal: false });

      // Nothing touched the published name: same inode, same bytes; a download is served v0 (no lock).
      const during = await stat(target);
      expect(during.ino, 'inode of the published file while the lock is held').to.equal(published.ino);
      expect(sha(await readFile(target)), 'published bytes while the lock is held').to.equal(sha(v0));
      expect(sha((await c.downloadBuffer(name)).data), 'a download while the lock is held').to.equal(sha(v0));

      // §6.1: the verified bytes stay staged (one file, all of v1), and `offset` reports the full size.
      const staged = await fresh();
      expect(staged, 'staging files of the LOCKED upload').to.have.length(1);
      expect(sha(await readFile(path.join(server.storage, '.fts', 'staging', ALICE.user, staged[0]!))), 'the staged bytes are v1').to.equal(sha(v1));
      const offset = await r.request({ op: 'offset', id: 3, name, size: v1.length, sha256: sha(v1) });
      expect(offset, 'offset after LOCKED').to.include({ id: 3, status: 'ok', offset: v1.length });

      await release();
      // The documented retry: the same identity at offset = size, no data frames.
      await r.sendHeader({ ...identity, id: 4, offset: v1.length });
      const retried = await r.reply(20_000);
      expect(retried.final, 'the retry after the release').to.include({ id: 4, status: 'ok', name, size: v1.length, sha256: sha(v1) });
      expect(sha(await readFile(target)), 'published bytes after the retry').to.equal(sha(v1));
      expect(sha((await c.downloadBuffer(name)).data), 'a download after the retry').to.equal(sha(v1));
      expect(await fresh(), 'staging after the retry published').to.deep.equal([]);
      await c.delete(name);
    });

    it('an unsized upload answered LOCKED keeps its verified bytes as the ordinary upload of its size and sha256 (offset = size in the error); that upload at offset = size publishes them without data', async function () {
      const name = 'unsized-locked.bin';
      const data = randomBytes(MAX_CHUNK_BYTES + 200 * KIB + 9);
      const earlier = new Set(await stagingFiles(server, ALICE.user));
      const fresh = async (): Promise<string[]> => (await stagingFiles(server, ALICE.user)).filter((f) => !earlier.has(f));
      const release = await holdLock(server, name);
      const r = await raw(server);
      await r.write(encodeHeader({ op: 'upload', id: 2, name, trailer: true, unsized: true }), ...dataFrames(data), encodeHeader({ op: 'upload', id: 2, size: data.length, sha256: sha(data) }));
      const locked = await r.reply(20_000);
      expect(locked.final, 'reply to the unsized upload while the lock is held').to.include({ id: 2, status: 'error', code: 'LOCKED', fatal: false, offset: data.length });
      expect(await lstat(path.join(server.storage, ALICE.user, name)).then(() => 'exists', (err: NodeJS.ErrnoException) => err.code), 'nothing published').to.equal('ENOENT');

      const staged = await fresh();
      expect(staged, 'staging files of the LOCKED unsized upload').to.have.length(1);
      expect(sha(await readFile(path.join(server.storage, '.fts', 'staging', ALICE.user, staged[0]!))), 'the kept bytes').to.equal(sha(data));
      const identity = { op: 'upload', name, size: data.length, sha256: sha(data) };
      expect(await r.request({ op: 'offset', id: 3, name, size: data.length, sha256: sha(data) }), 'offset of the ordinary identity').to.include({ id: 3, status: 'ok', offset: data.length });
      await r.sendHeader({ op: 'partials', id: 4 });
      const partials = await r.reply();
      expect(partials.interim.map((e) => [e['name'], e['size'], e['sha256'], e['bytes']]), 'listed under its name, size and sha256').to.deep.include([name, data.length, sha(data), data.length]);

      await release();
      await r.sendHeader({ ...identity, id: 5, offset: data.length });
      expect((await r.reply(20_000)).final, 'the publish without data').to.include({ id: 5, status: 'ok', name, size: data.length, sha256: sha(data) });
      expect(sha(await readFile(path.join(server.storage, ALICE.user, name))), 'published').to.equal(sha(data));
      expect(await fresh(), 'staging after the publish').to.deep.equal([]);
      const c = await client(server);
      await c.delete(name);
    });

    it('ResilientClient.uploadStream answered LOCKED publishes the kept bytes once the lock is free, without the stream; with retries 0 the error names them (keptUpload) and FtsClient.publishKept publishes them', async function () {
      const name = 'unsized-locked-retry.bin';
      const target = path.join(server.storage, ALICE.user, name);
      const data = randomBytes(3 * MAX_CHUNK_BYTES + 5);
      const { rc, retries, hold } = await releasingOnRetry(server, name);
      try {
        await hold();
        let reads = 0;
        const source = (async function* () {
          reads++;
          yield data.subarray(0, MAX_CHUNK_BYTES);
          yield data.subarray(MAX_CHUNK_BYTES);
        })();
        const up = await rc.uploadStream(source, name);
        expect(up).to.include({ name, size: data.length, sha256: sha(data) });
        expect(reads, 'the stream was read once').to.equal(1);
        expect(sha(await readFile(target))).to.equal(sha(data));
        expect(retries.map((r) => [(r.error as FtsError).code, r.reconnecting, r.attempt, r.retries])).to.deep.equal([['LOCKED', false, 1, 3]]);
        expect(rc.reconnects, 'no new connection').to.equal(0);
      } finally {
        rc.close();
      }

      const other = randomBytes(100 * KIB);
      const rc0 = await ResilientClient.connect({ port: server.port, user: ALICE.user, password: ALICE.password, reconnect: { retries: 0 } });
      try {
        const release = await holdLock(server, name);
        const err = await rc0.uploadStream(Readable.from([other]), name).then(() => null, (e: unknown) => e);
        expect(err).to.be.instanceOf(FtsError);
        expect((err as FtsError).code).to.equal('LOCKED');
        expect(keptUpload(err), 'the kept bytes named on the error').to.deep.equal({ size: other.length, sha256: sha(other) });
        await release();
        const c = await client(server);
        const published = await c.publishKept(name, keptUpload(err)!);
        expect(published).to.include({ name, size: other.length, sha256: sha(other) });
        expect(sha(await readFile(target))).to.equal(sha(other));
        expect(await codeOf(c.publishKept(name, keptUpload(err)!)), 'nothing kept any more').to.equal('OFFSET_MISMATCH');
        await c.delete(name);
      } finally {
        rc0.close();
      }
    });

    it('a delete while the lock is held for longer than --lock-timeout is answered LOCKED and removes nothing; after the release it deletes', async function () {
      const name = 'delete-locked.bin';
      const target = path.join(server.storage, ALICE.user, name);
      const v0 = randomBytes(10 * KIB);
      const c = await client(server);
      await c.uploadBuffer(name, v0);

      const release = await holdLock(server, name);
      expect(await codeOf(c.delete(name)), 'delete while the lock is held').to.equal('LOCKED');
      expect(sha(await readFile(target)), 'the file after the LOCKED delete').to.equal(sha(v0));
      expect((await c.list()).map((e) => e.name)).to.include(name);

      await release();
      await c.delete(name);
      expect(await lstat(target).then(() => 'exists', (err: NodeJS.ErrnoException) => err.code), 'the file after the delete').to.equal('ENOENT');
    });

    it('ResilientClient asks again after LOCKED, on the same connection: an upload publishes once the lock is free; a delete too', async function () {
      const name = 'retry-locked.bin';
      const target = path.join(server.storage, ALICE.user, name);
      const data = randomBytes(300 * KIB + 1);
      const { rc, retries, hold } = await releasingOnRetry(server, name);
      try {
        await hold();
        const local = path.join(server.dir, 'retry-locked.local');
        await writeFile(local, data);
        const up = await rc.upload(local, name);
        expect(up.sha256).to.equal(sha(data));
        expect(sha(await readFile(target))).to.equal(sha(data));
        expect(retries.map((r) => [(r.error as FtsError).code, r.reconnecting, r.attempt, r.retries])).to.deep.equal([['LOCKED', false, 1, 3]]);
        expect(rc.reconnects, 'no new connection').to.equal(0);

        retries.length = 0;
        await hold();
        await rc.delete(name);
        expect(await lstat(target).then(() => 'exists', (err: NodeJS.ErrnoException) => err.code)).to.equal('ENOENT');
        expect(retries.map((r) => (r.error as FtsError).code)).to.deep.equal(['LOCKED']);
      } finally {
        rc.close();
      }
    });

    /** The server's audit lines for requests on `name` refused LOCKED. */
    function lockedRefusals(name: string): number {
      return server.lines.filter((l) => l['file'] === name && l['code'] === 'LOCKED').length;
    }

    it('fts rm and fts mv ask again after LOCKED and succeed once the lock is free; with --retries 0 they exit 1 LOCKED and change nothing', async function () {
      const c = await client(server);
      const names = ['cli-rm-locked.bin', 'cli-mv-locked.bin'];
      for (const name of names) await c.uploadBuffer(name, randomBytes(1000));
      const opts = { port: server.port, user: ALICE.user, password: ALICE.password };
      for (const name of names) {
        const release = await holdLock(server, name);
        const refused = await runCli(['--retries', '0', ...(name === names[0] ? ['rm', name] : ['mv', name, `${name}.moved`])], opts);
        expect(refused.code, describeRun(refused)).to.equal(1);
        expect(refused.stderr).to.include('LOCKED');
        expect((await c.list()).map((e) => e.name)).to.include(name);
        // Freed once the command's first attempt was refused (after --lock-timeout, 1 s): a later one succeeds.
        // (Its "trying again" notice is for a terminal only.)
        const running = runCli(name === names[0] ? ['rm', name] : ['mv', name, `${name}.moved`], opts);
        try {
          await waitUntil('the first attempt refused', () => lockedRefusals(name) >= 2, 20_000);
        } finally {
          await release();
        }
        const r = await running;
        expect(r.code, describeRun(r)).to.equal(0);
        expect(r.out).to.equal(name === names[0] ? `deleted ${name}\n` : `renamed ${name} to ${name}.moved\n`);
      }
      const left = (await c.list()).map((e) => e.name);
      for (const name of names) expect(left).to.not.include(name);
      expect(left).to.include(`${names[1]}.moved`);
      await c.delete(`${names[1]}.moved`);
    });

    it('ResilientClient gives up after `retries` LOCKED refusals and reports LOCKED; with retries 0 at the first', async function () {
      const name = 'retry-locked-forever.bin';
      const c = await client(server);
      await c.uploadBuffer(name, randomBytes(1000));
      await holdLock(server, name);
      for (const count of [0, 1]) {
        const retries: RetryInfo[] = [];
        const rc = await ResilientClient.connect({ port: server.port, user: ALICE.user, password: ALICE.password, reconnect: { retries: count, initialDelayMs: 50 }, onRetry: (info) => retries.push(info) });
        try {
          expect(await codeOf(rc.delete(name))).to.equal('LOCKED');
          expect(retries, `onRetry calls with retries ${count}`).to.have.length(count);
        } finally {
          rc.close();
        }
      }
      expect((await c.list()).map((e) => e.name)).to.include(name);
    });

    it('a download while the lock is held is served the published version (downloads take no lock)', async function () {
      const name = 'download-during-lock.bin';
      const v0 = randomBytes(200 * KIB + 1);
      const c = await client(server);
      await c.uploadBuffer(name, v0);
      await holdLock(server, name);
      // A download that waited for the lock would get LOCKED after 1 s (or stall): it must simply be served.
      const d = await c.downloadBuffer(name);
      expect(sha(d.data), 'downloaded while the lock is held').to.equal(sha(v0));
      expect(await c.view(name), 'viewed while the lock is held').to.deep.equal(v0.subarray(0, 1024));
      await held.splice(0).reduce((p, release) => p.then(release), Promise.resolve());
      await c.delete(name);
    });
  });

  describe('with --lock-timeout 30', function () {
    let server: TestServer;

    before(async function () {
      server = await TestServer.start({ workers: 2, args: ['--lock-timeout', '30'] });
    });

    after(async function () {
      await server?.stop();
    });

    it('a delete sent while the lock is held waits: the file stays and no reply comes until the release; then ok and the file is gone', async function () {
      const name = 'delete-waits.bin';
      const target = path.join(server.storage, ALICE.user, name);
      const v0 = randomBytes(10 * KIB);
      const c = await client(server);
      await c.uploadBuffer(name, v0);
      const inode = (await stat(target)).ino;

      const release = await holdLock(server, name);
      const r = await raw(server);
      await r.sendHeader({ op: 'delete', id: 2, name });
      const deleting = async (): Promise<boolean> => {
        const reply = await adminRequest(server.adminSocket, { cmd: 'sessions' }, { timeoutMs: 5_000 });
        if (reply === null || !reply.ok) throw new Error(`admin sessions failed: ${JSON.stringify(reply)}`);
        return (reply.result as SessionInfo[]).some((s) => s.user === ALICE.user && s.op === 'delete' && s.file === name);
      };
      // The server has the request in hand (its session shows the delete in progress) ...
      await waitUntil('the server runs the delete', deleting);
      // ... and keeps waiting: sampled over a while that is short against the 30 s budget, the request
      // stays in progress, no reply frame arrives and the file is untouched. (A delete that did not wait
      // for the lock would be done within milliseconds.)
      for (let i = 0; i < 10; i++) {
        expect(r.pending, 'frames received while the lock is held').to.equal(0);
        expect(r.isClosed, 'the connection is open').to.equal(false);
        expect((await stat(target)).ino, 'the file while the lock is held').to.equal(inode);
        expect(await deleting(), 'the delete is still in progress').to.equal(true);
        await delay(50);
      }

      await release();
      const done = await r.reply(20_000);
      expect(done.final, 'reply to the delete after the release').to.include({ id: 2, status: 'ok', name });
      expect(await codeOf(c.downloadBuffer(name)), 'download after the delete').to.equal('NOT_FOUND');
      expect((await c.list()).map((e) => e.name)).to.not.include(name);
      expect(await lstat(target).then(() => 'exists', (err: NodeJS.ErrnoException) => err.code), 'the file after the delete').to.equal('ENOENT');
    });

    it('no start-up warning when --lock-timeout is below --stall-timeout', function () {
      expect(server.lines.filter((l) => typeof l.msg === 'string' && l.msg.includes('--lock-timeout'))).to.deep.equal([]);
    });
  });

  it('a --lock-timeout not below --stall-timeout is accepted with a warning (the stall timer would end a waiting session first)', async function () {
    const server = await TestServer.start({ workers: 1, args: ['--lock-timeout', '20', '--stall-timeout', '20'] });
    try {
      const warning = await server.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('--lock-timeout is not below --stall-timeout'));
      expect(warning).to.include({ lockTimeout: 20, stallTimeout: 20 });
    } finally {
      await server.stop();
    }
  });
});
