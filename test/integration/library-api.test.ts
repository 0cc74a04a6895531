/**
 * The client library's contract with the code that embeds it, against a real server: arguments of the wrong
 * type are refused with FtsError BAD_REQUEST before anything is sent (the connection and what is pipelined
 * on it carry on), options are checked rather than quietly replaced, quit() settles whatever state the
 * connection is in, close() ends a ResilientClient's backoff at once, and the error table cannot be changed.
 */
import { expect } from 'chai';
import { Writable } from 'node:stream';
import { createHash, randomBytes } from 'node:crypto';
import { stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { tempDir } from '../helpers/temp.js';
import { REPO_ROOT } from '../helpers/paths.js';
import { olderServer } from '../helpers/older-server.js';
import { spawn } from 'node:child_process';
import { FtsClient, FtsError, ResilientClient } from '../../client/index.js';
import { ERROR_CODES } from '../../protocol/index.js';
import { backoffMs, reconnectPolicy } from '../../client/reconnect.js';
import { formatError } from '../../client/cli/report.js';
import { DEFAULT_USERS, TestServer } from '../helpers/server.js';

const ALICE = DEFAULT_USERS[0]!;

async function failure(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => null,
    (e: unknown) => e,
  );
}

function expectBadRequest(err: unknown, pattern: RegExp, what: string): void {
  expect(err, what).to.be.instanceOf(FtsError);
  expect((err as FtsError).code, `${what}: ${String(err)}`).to.equal('BAD_REQUEST');
  expect((err as FtsError).message, what).to.match(pattern);
}

describe('client library: arguments, options, quit and close', function () {
  this.timeout(60_000);
  let server: TestServer;
  const clients: Array<{ close(): void }> = [];

  before(async function () {
    server = await TestServer.start({ workers: 1 });
  });

  afterEach(() => {
    for (const c of clients.splice(0)) c.close();
  });

  after(async function () {
    await server?.stop();
  });

  async function login(): Promise<FtsClient> {
    const c = await FtsClient.connect({ port: server.port });
    clients.push(c);
    await c.auth(ALICE.user, ALICE.password);
    return c;
  }

  it('arguments of the wrong type are BAD_REQUEST, refused before anything is sent: requests pipelined beside them, and the connection, carry on', async () => {
    const c = await login();
    await c.uploadBuffer('kept.txt', Buffer.from('kept'));
    const loose = c as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>;
    const [a, b, listed, d, e, f, g] = await Promise.all([
      failure(loose['uploadBuffer']!.call(c, 's.bin', 'a string')),
      failure(loose['uploadStream']!.call(c, [Buffer.from('x')], 'a.bin')),
      c.list(),
      failure(loose['downloadStream']!.call(c, 'kept.txt', {})),
      failure(loose['upload']!.call(c, 42)),
      failure(loose['delete']!.call(c, { name: 'kept.txt' })),
      failure(loose['discard']!.call(c, 7)),
    ]);
    expectBadRequest(a, /uploadBuffer: the data must be a Buffer or Uint8Array \(got string\)/, 'uploadBuffer of a string');
    expectBadRequest(b, /the source must be a Readable or an async iterable/, 'uploadStream of an array');
    expectBadRequest(d, /downloadStream: the output must be a Writable stream/, 'downloadStream into a plain object');
    expectBadRequest(e, /the local path must be a string \(got number\)/, 'upload of a number');
    expectBadRequest(f, /a file name must be a string/, 'delete of an object');
    expectBadRequest(g, /key is 64 lowercase hex digits/, 'discard of a number');
    expect(listed.map((x) => x.name)).to.include('kept.txt');
    expect(c.connected).to.equal(true);
    expect((await c.downloadBuffer('kept.txt')).data.toString()).to.equal('kept');
  });

  it('connect options are checked: a port, a timeout or a reconnect policy out of range is BAD_REQUEST (not a RangeError, not a quiet default); retries Infinity is taken', async () => {
    for (const [options, pattern] of [
      [{ port: 70_000 }, /port must be a whole number from 1 to 65535/],
      [{ port: Number.NaN }, /port must be/],
      [{ port: server.port, connectTimeoutMs: 0 }, /connectTimeoutMs must be a whole number of milliseconds from 1/],
      [{ port: server.port, connectTimeoutMs: Infinity }, /connectTimeoutMs/],
      [{ port: server.port, host: '' }, /host must be a non-empty string/],
      [{ port: server.port, replyTimeoutMs: '5' }, /replyTimeoutMs must be a number/],
    ] as const) {
      expectBadRequest(await failure(FtsClient.connect(options as never)), pattern, JSON.stringify(options));
    }
    expectBadRequest(await failure(ResilientClient.connect({ port: server.port } as never)), /user must be a string/, 'ResilientClient without a user');
    for (const retries of [-1, 1.5, '10', Number.NaN]) {
      expectBadRequest(await failure(ResilientClient.connect({ port: server.port, user: ALICE.user, password: ALICE.password, reconnect: { retries: retries as number } })), /reconnect.retries must be a whole number of 0 or more, or Infinity/, `retries ${String(retries)}`);
    }
    expect(() => reconnectPolicy({ initialDelayMs: -5 })).to.throw(FtsError, /reconnect.initialDelayMs/);
    expect(reconnectPolicy({ retries: Infinity }).retries).to.equal(Infinity);
    // The longest delay stays one setTimeout takes, jitter included (beyond it Node waits 1 ms).
    const longest = reconnectPolicy({ initialDelayMs: 2 ** 31 - 1, maxDelayMs: 2 ** 31 - 1 });
    for (let n = 1; n <= 5; n++) expect(backoffMs(n, longest)).to.be.within(2 ** 31 - 1, 2 ** 31 - 1);
    const rc = await ResilientClient.connect({ port: server.port, user: ALICE.user, password: ALICE.password, reconnect: { retries: Infinity } });
    clients.push(rc);
    expect(await rc.list()).to.be.an('array');
  });

  it('quit() resolves whatever the connection\'s state: twice at once, after close(), and on a ResilientClient after close()', async () => {
    const c = await login();
    await Promise.all([c.quit(), c.quit()]);
    expect(c.connected).to.equal(false);
    await c.quit();
    const d = await login();
    d.close();
    await d.quit();
    const rc = await ResilientClient.connect({ port: server.port, user: ALICE.user, password: ALICE.password });
    clients.push(rc);
    rc.close();
    await rc.quit();
  });

  it('close() of a ResilientClient waiting out a reconnect backoff ends the wait at once: the call fails "connection closed by client"', async () => {
    const own = await TestServer.start({ workers: 1 });
    try {
      let waiting = false;
      const rc = await ResilientClient.connect({ port: own.port, user: ALICE.user, password: ALICE.password, reconnect: { retries: 3, initialDelayMs: 30_000, maxDelayMs: 30_000 }, onRetry: () => (waiting = true) });
      clients.push(rc);
      await own.stop();
      const started = Date.now();
      const listed = failure(rc.list());
      while (!waiting && Date.now() - started < 20_000) await new Promise((r) => setTimeout(r, 20));
      expect(waiting, 'the call went into a backoff').to.equal(true);
      rc.close();
      const err = await listed;
      expect(err).to.be.instanceOf(FtsError);
      expect((err as FtsError).message).to.equal('connection closed by client');
      expect(Date.now() - started, 'settled without waiting out the 30 s backoff').to.be.below(20_000);
    } finally {
      await own.stop();
    }
  });

  it('a progress callback that throws aborts its transfer (nothing published, the call rejects with it); a ResilientClient repeats the other calls cut with it', async () => {
    const paced = await TestServer.start({ workers: 1, args: ['--max-upload-rate', '4M', '--max-download-rate', '4M'] });
    const { dir, cleanup } = await tempDir('fts-libcb-');
    try {
      const big = path.join(dir, 'big.bin');
      await writeFile(big, randomBytes(24 * 1024 * 1024));
      const c = await FtsClient.connect({ port: paced.port });
      clients.push(c);
      await c.auth(ALICE.user, ALICE.password);
      const stop = new Error('stop here');
      const up = await failure(c.upload(big, 'cb-up.bin', { onProgress: (done) => { if (done >= 2 * 1024 * 1024) throw stop; } }));
      expect(up).to.be.instanceOf(FtsError);
      expect((up as FtsError).message).to.match(/onProgress callback threw \(stop here\); the transfer was aborted/);
      expect((up as FtsError).cause).to.equal(stop);
      expect(c.connected, 'the connection was reset').to.equal(false);

      const rc = await ResilientClient.connect({ port: paced.port, user: ALICE.user, password: ALICE.password });
      clients.push(rc);
      expect((await rc.list()).map((e) => e.name), 'nothing published').to.not.include('cb-up.bin');
      await rc.upload(big, 'whole.bin');
      const [down, listed] = await Promise.all([
        failure(rc.download('whole.bin', path.join(dir, 'down.bin'), { onStart: () => { throw stop; } })),
        rc.list(),
      ]);
      expect((down as FtsError).message).to.match(/onStart callback threw/);
      expect(listed.map((e) => e.name), 'the call pipelined beside it was repeated on a new connection').to.include('whole.bin');
      expect(rc.connected).to.equal(true);
    } finally {
      await paced.stop();
      await cleanup();
    }
  });

  it('authPlain on a plaintext connection is refused before the password is sent, unless allowPlainPassword says so; library messages name options, the CLI adds its flags', async () => {
    const c = await FtsClient.connect({ port: server.port });
    clients.push(c);
    const err = await failure(c.authPlain(ALICE.user, ALICE.password));
    expect(err).to.be.instanceOf(FtsError);
    expect((err as FtsError).code).to.equal('UNSUPPORTED_MECHANISM');
    expect((err as FtsError).message).to.equal('plain sends the password as written: only over tls, or with allowPlainPassword on a network you trust');
    expect(server.lines.filter((l) => l['event'] === 'auth' && l['mech'] === 'plain'), 'nothing reached the server').to.deep.equal([]);
    const allowed = await FtsClient.connect({ port: server.port, allowPlainPassword: true });
    clients.push(allowed);
    await allowed.authPlain(ALICE.user, ALICE.password);
    expect(allowed.session?.user).to.equal(ALICE.user);
    expect(formatError(err)).to.equal('fts: plain sends the password as written: only over tls, or with allowPlainPassword on a network you trust; use --tls, or --allow-plain on a network you trust');
  });

  it('an onRetry that throws ends the retries: the call fails with an FtsError caused by it', async () => {
    const own = await TestServer.start({ workers: 1 });
    try {
      const oops = new Error('no more');
      const rc = await ResilientClient.connect({ port: own.port, user: ALICE.user, password: ALICE.password, onRetry: () => { throw oops; } });
      clients.push(rc);
      await own.stop();
      const err = await failure(rc.list());
      expect(err).to.be.instanceOf(FtsError);
      expect((err as FtsError).message).to.equal('the onRetry callback threw (no more); not retried');
      expect((err as FtsError).cause).to.equal(oops);
    } finally {
      await own.stop();
    }
  });

  for (const older of [false, true]) {
    it(`a pipelined batch of many more uploads than the process may open files does not run out of descriptors${older ? ' (a server without streamed uploads: digests go first)' : ''}`, async function () {
      const { dir, cleanup } = await tempDir('fts-libfd-');
      const relay = older ? await olderServer(server.port) : null;
      try {
        const count = 600;
        for (let i = 0; i < count; i++) await writeFile(path.join(dir, `f${i}.bin`), i % 10 === 0 ? randomBytes(300 * 1024) : Buffer.from(`file ${i}\n`));
        // A child process whose open-file limit (256) is well below the batch: every upload is called at once.
        const script = `
          import { FtsClient } from ${JSON.stringify(path.join(REPO_ROOT, 'dist/client/index.js'))};
          const c = await FtsClient.connect({ port: ${relay?.port ?? server.port} });
          await c.auth(${JSON.stringify(ALICE.user)}, ${JSON.stringify(ALICE.password)});
          const results = await Promise.allSettled(Array.from({ length: ${count} }, (_, i) => c.upload(${JSON.stringify(dir)} + '/f' + i + '.bin', '${older ? 'old' : 'fd'}-' + i + '.bin')));
          const failed = results.filter((r) => r.status === 'rejected').map((r) => r.reason.message);
          console.log(JSON.stringify({ ok: results.length - failed.length, failed: failed.slice(0, 3) }));
          await c.quit();
        `;
        const child = spawn('/bin/sh', ['-c', 'ulimit -n 256 && exec "$0" --input-type=module -e "$1"', process.execPath, script], { stdio: ['ignore', 'pipe', 'pipe'] });
        let out = '';
        let err = '';
        child.stdout.on('data', (d: Buffer) => (out += d.toString()));
        child.stderr.on('data', (d: Buffer) => (err += d.toString()));
        const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
        expect(code, err).to.equal(0);
        expect(JSON.parse(out)).to.deep.equal({ ok: count, failed: [] });
        const names = new Set((await login().then((c) => c.list())).map((e) => e.name));
        for (let i = 0; i < count; i++) expect(names.has(`${older ? 'old' : 'fd'}-${i}.bin`), `upload ${i}`).to.equal(true);
      } finally {
        await relay?.close();
        await cleanup();
      }
    });
  }

  it('a downloadStream whose output fails resets the connection: the call fails with the output\'s error, the requests beside it with a reason that says so', async () => {
    const c = await login();
    await c.uploadBuffer('stream-src.bin', randomBytes(4 * 1024 * 1024));
    const broken = new Writable({
      write(_chunk, _encoding, done) {
        done(new Error('disk on fire'));
      },
    });
    broken.on('error', () => undefined);
    const [own, beside] = await Promise.all([failure(c.downloadStream('stream-src.bin', broken)), failure(c.downloadBuffer('stream-src.bin'))]);
    expect(own).to.be.instanceOf(FtsError);
    expect((own as FtsError).message).to.match(/disk on fire/);
    expect(beside).to.be.instanceOf(FtsError);
    expect((beside as FtsError).message).to.match(/^connection reset: a download on it could not write its output \(.*disk on fire.*\)$/);
  });

  it('a callback that throws on the last progress call (with the server\'s answer) still fails the call', async () => {
    const c = await login();
    const { dir, cleanup } = await tempDir('fts-libcb2-');
    try {
      const file = path.join(dir, 'last.bin');
      await writeFile(file, randomBytes(2 * 1024 * 1024));
      const err = await failure(c.upload(file, 'cb-last.bin', { onProgress: (done, total) => { if (done === total) throw new Error('at the end'); } }));
      expect(err).to.be.instanceOf(FtsError);
      expect((err as FtsError).message).to.equal("the transfer's onProgress callback threw (at the end) after the transfer was done: an upload is published, a download in place");
      expect(c.connected, 'the connection was reset all the same').to.equal(false);
      expect((await (await login()).list()).map((e) => e.name), 'published all the same').to.include('cb-last.bin');
    } finally {
      await cleanup();
    }
  });

  it('many calls waiting out a ResilientClient\'s backoff at once print no MaxListenersExceededWarning', async () => {
    const own = await TestServer.start({ workers: 1 });
    const warnings: string[] = [];
    const onWarning = (w: Error): void => {
      warnings.push(`${w.name}: ${w.message}`);
    };
    process.on('warning', onWarning);
    try {
      let waiting = 0;
      const rc = await ResilientClient.connect({ port: own.port, user: ALICE.user, password: ALICE.password, reconnect: { retries: 3, initialDelayMs: 30_000, maxDelayMs: 30_000 }, onRetry: (info) => void (info.delayMs > 0 && waiting++) });
      clients.push(rc);
      await own.stop();
      const calls = Array.from({ length: 16 }, () => failure(rc.list()));
      const started = Date.now();
      while (waiting < 16 && Date.now() - started < 20_000) await new Promise((r) => setTimeout(r, 20));
      expect(waiting, 'calls in a backoff').to.be.at.least(16);
      rc.close();
      await Promise.all(calls);
      await new Promise((r) => setImmediate(r));
      expect(warnings.filter((w) => w.includes('MaxListeners'))).to.deep.equal([]);
    } finally {
      process.off('warning', onWarning);
      await own.stop();
    }
  });

  it('a skipSame download whose connection fails while it prepares its kept LOCAL.part leaves the path free for the next download', async () => {
    const paced = await TestServer.start({ workers: 1, args: ['--max-download-rate', '40M'] });
    const { dir, cleanup } = await tempDir('fts-libskip-');
    try {
      const data = randomBytes(96 * 1024 * 1024);
      const up = await FtsClient.connect({ port: paced.port });
      clients.push(up);
      await up.auth(ALICE.user, ALICE.password);
      await up.uploadBuffer('kept.bin', data);
      const local = path.join(dir, 'kept.bin');
      // A download cut half-way keeps LOCAL.part (and its sidecar) for a resume.
      const first = await FtsClient.connect({ port: paced.port });
      clients.push(first);
      await first.auth(ALICE.user, ALICE.password);
      const cut = failure(first.download('kept.bin', local));
      await new Promise((r) => setTimeout(r, 1_200));
      first.close();
      await cut;
      expect((await stat(`${local}.part`)).size, 'kept bytes').to.be.above(8 * 1024 * 1024);
      // With skipSame, the kept part is hashed at the download's turn: the connection fails meanwhile.
      const second = await FtsClient.connect({ port: paced.port });
      clients.push(second);
      await second.auth(ALICE.user, ALICE.password);
      const cutAgain = failure(second.download('kept.bin', local, { skipSame: true }));
      await new Promise((r) => setTimeout(r, 5));
      second.close();
      await cutAgain;
      const third = await FtsClient.connect({ port: paced.port });
      clients.push(third);
      await third.auth(ALICE.user, ALICE.password);
      const done = await third.download('kept.bin', local);
      expect(done.sha256).to.equal(createHash('sha256').update(data).digest('hex'));
    } finally {
      await paced.stop();
      await cleanup();
    }
  });

  it('the error table is frozen, and an unknown code is a TypeError that names it', () => {
    expect(Object.isFrozen(ERROR_CODES)).to.equal(true);
    expect(Object.isFrozen(ERROR_CODES.NOT_FOUND)).to.equal(true);
    expect(() => {
      (ERROR_CODES.NOT_FOUND as { fatal: boolean }).fatal = true;
    }).to.throw(TypeError);
    expect(new FtsError('NOT_FOUND').fatal).to.equal(false);
    expect(() => new FtsError('BOGUS' as never)).to.throw(TypeError, 'FtsError: unknown error code "BOGUS"');
  });
});
