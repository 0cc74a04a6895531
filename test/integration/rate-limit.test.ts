/**
 * --max-upload-rate and --max-download-rate: each session's file data moves no faster than its limit, in
 * each direction, in frames of about a quarter second's worth. Durations are asserted as lower bounds (a slow
 * machine makes transfers slower, never faster), except where only an upper bound can tell two designs apart,
 * and then with a margin of about 2x.
 */
import { expect } from 'chai';
import { createHash, randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { FtsClient } from '../../client/index.js';
import { encodeData, encodeHeader } from '../../protocol/index.js';
import { metricsPortOf, scrape } from '../helpers/hardening-proc.js';
import { dataFrames, RawClient, uploadBytes } from '../helpers/raw-client.js';
import { DEFAULT_USERS, TestServer } from '../helpers/server.js';
import { runAdmin } from '../helpers/admin-cli.js';
import { holdLock } from '../helpers/common.js';
import { tempDir } from '../helpers/temp.js';

const ALICE = DEFAULT_USERS[0]!;
const KiB = 1024;
const sha = (data: Uint8Array): string => createHash('sha256').update(data).digest('hex');

/** The value of one sample of the exposition, e.g. fts_throttled_seconds_total{direction="upload"}. */
function sample(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  expect(line, series).to.not.equal(undefined);
  return Number(line!.slice(series.length + 1));
}

describe('per-session rate limits (--max-upload-rate, --max-download-rate)', function () {
  this.timeout(60_000);
  let server: TestServer;
  const clients: FtsClient[] = [];
  const raws: RawClient[] = [];

  before(async function () {
    // Upload frames of 128 KiB (a quarter second at 512 KiB/s), download frames of 256 KiB.
    server = await TestServer.start({ workers: 1, args: ['--max-upload-rate', '512K', '--max-download-rate', '1M'] });
  });

  after(async function () {
    for (const c of raws.splice(0)) c.close();
    for (const c of clients.splice(0)) c.close();
    await server?.stop();
  });

  async function client(): Promise<FtsClient> {
    const c = await FtsClient.connect({ host: '127.0.0.1', port: server.port });
    clients.push(c);
    await c.auth(ALICE.user, ALICE.password);
    return c;
  }

  async function raw(): Promise<RawClient> {
    const c = await RawClient.login(server.port, ALICE.user, ALICE.password);
    raws.push(c);
    return c;
  }

  const waited = async (direction: 'upload' | 'download'): Promise<number> =>
    sample(await scrape(await metricsPortOf(server)), `fts_throttled_seconds_total{direction="${direction}"}`);

  it('an upload and a download move no faster than their limits, intact; the greeting asks for frames of a quarter second', async function () {
    const c = await client();
    expect(c.greeting['maxChunk']).to.equal(128 * KiB);
    const data = randomBytes(2048 * KiB);
    const uploadWaitsBefore = await waited('upload');
    let started = Date.now();
    await c.uploadBuffer('paced.bin', data);
    const uploadMs = Date.now() - started;
    // 2 MiB at 512 KiB/s, the first frame at once (the bucket starts empty): at least 3.75 s.
    expect(uploadMs, 'ms for the upload').to.be.at.least(3_500);
    const uploadWaits = (await waited('upload')) - uploadWaitsBefore;
    expect(uploadWaits, 's waited by the upload').to.be.above(3).and.at.most(uploadMs / 1000);

    const big = randomBytes(3072 * KiB);
    await c.uploadBuffer('paced-3.bin', big);
    // On a new session: this one's download bucket filled up (one second's worth) while it uploaded.
    const d = await client();
    started = Date.now();
    const got = await d.downloadBuffer('paced-3.bin');
    // 3 MiB at 1 MiB/s in 256 KiB frames, the first at once: at least 2.75 s.
    expect(Date.now() - started, 'ms for the download').to.be.at.least(2_500);
    expect(sha(got.data)).to.equal(sha(big));
    expect(got.sha256).to.equal(sha(big));
    expect(sha((await c.downloadBuffer('paced.bin')).data)).to.equal(sha(data));
    expect(server.lines.filter((l) => l['code'] === 'TRANSFER_STALLED'), 'stalled transfers').to.deep.equal([]);
  });

  it('an upload with "progress": true gets progress replies of what the server received, growing at the rate, before its final reply; without it, none (PROTOCOL.md §6.1 "Progress")', async function () {
    const c = await client();
    expect(c.greeting['caps']).to.include('upload-progress');
    const data = randomBytes(1536 * KiB);
    const r = await raw();
    r.write(Buffer.concat([encodeHeader({ op: 'upload', id: 7, name: 'progress.bin', size: data.length, sha256: sha(data), progress: true }), dataFrames(data, 128 * KiB)]));
    const started = Date.now();
    const reply = await r.reply(30_000);
    const ms = Date.now() - started;
    expect(reply.final).to.include({ id: 7, status: 'ok', size: data.length });
    const received = reply.interim.map((h) => {
      expect(h).to.have.all.keys('id', 'status', 'received');
      expect(h).to.include({ id: 7, status: 'progress' });
      return h['received'] as number;
    });
    // 1.5 MiB at 512 KiB/s: about 3 s, one reply at most every 250 ms.
    expect(received.length, JSON.stringify(received)).to.be.at.least(4).and.at.most(Math.ceil(ms / 250));
    expect([...received].sort((a, b) => a - b), 'growing').to.deep.equal(received);
    expect(new Set(received).size, 'growing').to.equal(received.length);
    expect(received.every((n) => n > 0 && n < data.length), 'none once the last byte is in').to.equal(true);
    expect(received.every((n) => n % (128 * KiB) === 0), 'counted in whole frames read').to.equal(true);

    r.write(uploadBytes(8, 'quiet.bin', data, 128 * KiB));
    const quiet = await r.reply(30_000);
    expect(quiet.final).to.include({ id: 8, status: 'ok' });
    expect(quiet.interim).to.deep.equal([]);

    // Unsized (§6.1 "Unsized uploads"): `received` counts the data bytes read, as the trailer's size will.
    const trailer = encodeHeader({ op: 'upload', id: 9, size: data.length, sha256: sha(data) });
    r.write(Buffer.concat([encodeHeader({ op: 'upload', id: 9, name: 'unsized-progress.bin', trailer: true, unsized: true, progress: true }), dataFrames(data, 128 * KiB), trailer]));
    const unsized = await r.reply(30_000);
    expect(unsized.final).to.include({ id: 9, status: 'ok', size: data.length });
    const counts = unsized.interim.map((h) => (expect(h).to.include({ id: 9, status: 'progress' }), h['received'] as number));
    expect(counts.length, JSON.stringify(counts)).to.be.at.least(4);
    expect(counts.every((n, i) => n > 0 && n <= data.length && (i === 0 || n > counts[i - 1]!)), JSON.stringify(counts)).to.equal(true);
  });

  it('no progress reply is sent while an earlier pipelined upload\'s reply is owed (its publish waits for a lock): they do not pile up and leave in a burst', async function () {
    const r = await raw();
    const small = randomBytes(4 * KiB);
    const data = randomBytes(2048 * KiB);
    const release = await holdLock(server.storage, ALICE.user, 'held.bin');
    let released = false;
    try {
      r.write(Buffer.concat([
        uploadBytes(20, 'held.bin', small),
        encodeHeader({ op: 'upload', id: 21, name: 'behind.bin', size: data.length, sha256: sha(data), progress: true }),
        dataFrames(data, 128 * KiB),
      ]));
      // The second upload's data (4 s at 512 KiB/s) is read while the first waits for its lock.
      await new Promise((resolve) => setTimeout(resolve, 2_000));
      await release();
      released = true;
      const arrivals: Array<{ at: number; header: Record<string, unknown> }> = [];
      for (;;) {
        const frame = await r.next(30_000);
        if (frame === null || frame.kind !== 'header') throw new Error(`unexpected ${frame === null ? 'end' : frame.kind}`);
        arrivals.push({ at: Date.now(), header: frame.header });
        if (frame.header['id'] === 21 && frame.header['status'] !== 'progress') break;
      }
      const firstOk = arrivals.find((a) => a.header['id'] === 20);
      expect(firstOk?.header).to.include({ status: 'ok' });
      expect(arrivals[arrivals.length - 1]!.header).to.include({ id: 21, status: 'ok' });
      const progress = arrivals.filter((a) => a.header['status'] === 'progress');
      expect(progress.length, 'progress after the first reply').to.be.at.least(2);
      // Queued, the progress measured during the 2 s wait would all arrive with the first upload's reply.
      const burst = progress.filter((a) => a.at - firstOk!.at < 100);
      expect(burst.length, JSON.stringify(arrivals.map((a) => [a.at - firstOk!.at, a.header['received'] ?? a.header['status']]))).to.be.at.most(2);
    } finally {
      if (!released) await release();
    }
  });

  it('the client reports the server\'s progress, not what its socket took: a paced upload does not reach its total before the server has it', async function () {
    const c = await client();
    const data = randomBytes(1536 * KiB);
    const seen: Array<{ ms: number; done: number }> = [];
    const started = Date.now();
    const { dir, cleanup } = await tempDir('fts-progress-');
    try {
      const local = path.join(dir, 'progress-local.bin');
      await writeFile(local, data);
      await c.upload(local, 'progress-lib.bin', { onProgress: (done) => seen.push({ ms: Date.now() - started, done }) });
    } finally {
      await cleanup();
    }
    expect(seen.length, JSON.stringify(seen)).to.be.at.least(4);
    const last = seen[seen.length - 1]!;
    expect(last.done).to.equal(data.length);
    // 1.5 MiB at 512 KiB/s takes about 3 s; the local socket buffers would take it all at once.
    const total = seen.find((p) => p.done === data.length)!;
    expect(total.ms, 'ms until the total was reported').to.be.at.least(2_000);
    const half = seen.find((p) => p.done >= data.length / 2)!;
    expect(half.ms, 'ms until half was reported').to.be.at.least(700);
  });

  it('downloads come in frames of the rate\'s quarter second; a transfer\'s last frame is paid for by the next, not by its own reply', async function () {
    const c = await client();
    await c.uploadBuffer('quarter.bin', randomBytes(256 * KiB));
    const r = await raw();
    const before = await waited('download');
    r.sendHeader({ op: 'download', id: 2, name: 'quarter.bin', offset: 0 });
    const first = await r.reply(30_000);
    expect(first.final).to.include({ id: 2, status: 'ok' });
    expect(first.data.map((d) => d.length)).to.deep.equal([256 * KiB]);
    // A new session's bucket is empty, not overdrawn: its first frame did not wait, and neither did the reply.
    expect((await waited('download')) - before, 's waited by the first download').to.equal(0);
    r.sendHeader({ op: 'download', id: 3, name: 'paced-3.bin', offset: 0 });
    const second = await r.reply(30_000);
    expect(second.final).to.include({ id: 3, status: 'ok', length: 3072 * KiB });
    expect(second.data.length).to.equal(12);
    for (const d of second.data) expect(d.length).to.equal(256 * KiB);
    expect((await waited('download')) - before, 's waited by the second download (its 12 frames and the first one\'s debt)').to.be.at.least(2.9);
  });

  it('each session has its own budget: two sessions upload at once, each at the full rate', async function () {
    const [a, b] = [await client(), await client()];
    const data = randomBytes(1536 * KiB);
    const started = Date.now();
    await Promise.all([a.uploadBuffer('one.bin', data), b.uploadBuffer('two.bin', data)]);
    const ms = Date.now() - started;
    // Each: (1.5 MiB − 128 KiB) / 512 KiB = 2.75 s. One budget for both would need (3 MiB − 128 KiB) / 512 KiB
    // = 5.75 s, which the upper bound (2x margin for a loaded machine) tells apart.
    expect(ms, 'ms for two uploads side by side').to.be.at.least(2_500).and.below(5_500);
    for (const name of ['one.bin', 'two.bin']) expect(sha((await a.downloadBuffer(name)).data)).to.equal(sha(data));
  });

  it('the data of a refused upload (read only to be skipped) is paced too: refusals are no way around the limit', async function () {
    const r = await raw();
    const started = Date.now();
    // Refused for its name before any byte is staged; its 1.5 MiB are read and dropped at 512 KiB/s.
    r.write(uploadBytes(2, '../outside.bin', randomBytes(1536 * KiB), 128 * KiB));
    const reply = await r.reply(30_000);
    expect(reply.final).to.include({ id: 2, status: 'error', code: 'BAD_NAME', fatal: false });
    expect(Date.now() - started, 'ms until the refusal').to.be.at.least(2_500);
    r.sendHeader({ op: 'noop', id: 3 });
    expect((await r.reply()).final).to.include({ id: 3, status: 'ok' });
  });

  it('a data frame larger than the announced maxChunk is FRAME_TOO_LARGE (fatal)', async function () {
    const r = await raw();
    const payload = randomBytes(128 * KiB + 1);
    r.write(encodeHeader({ op: 'upload', id: 2, name: 'too-big-frames.bin', size: payload.length, sha256: sha(payload) }), encodeData(payload));
    const reply = await r.reply(30_000);
    expect(reply.final).to.include({ status: 'error', code: 'FRAME_TOO_LARGE', fatal: true });
  });
});

describe('per-user rates (--rates-file), re-read on reload', function () {
  this.timeout(90_000);
  const BOB = DEFAULT_USERS[1]!;
  let server: TestServer;
  let dir = '';
  let cleanDir: () => Promise<void> = async () => undefined;
  let ratesFile = '';
  const clients: FtsClient[] = [];

  before(async function () {
    ({ dir, cleanup: cleanDir } = await tempDir('fts-rates-'));
    ratesFile = path.join(dir, 'rates');
    // alice: 256 KiB/s up, 512 KiB/s down; bob (and anyone else) unlimited, as the server has no flags.
    await writeFile(ratesFile, '# per-user rates\nalice: 256K/512K  # slow\n');
    server = await TestServer.start({ workers: 1, args: ['--rates-file', ratesFile] });
  });

  after(async function () {
    for (const c of clients.splice(0)) c.close();
    await server?.stop();
    await cleanDir();
  });

  async function login(user = ALICE): Promise<FtsClient> {
    const c = await FtsClient.connect({ host: '127.0.0.1', port: server.port });
    clients.push(c);
    await c.auth(user.user, user.password);
    return c;
  }

  const waited = async (direction: 'upload' | 'download'): Promise<number> =>
    sample(await scrape(await metricsPortOf(server)), `fts_throttled_seconds_total{direction="${direction}"}`);

  it('a user the file names moves no faster than their rates, in frames of their quarter second down; a user it does not name is not paced', async function () {
    const a = await login();
    // No --max-upload-rate: the greeting (before any login) asks for full frames.
    expect(a.greeting['maxChunk']).to.equal(1024 * KiB);
    const data = randomBytes(2048 * KiB);
    let started = Date.now();
    await a.uploadBuffer('alice-paced.bin', data);
    // Two frames of 1 MiB at 256 KiB/s, each paid down to a quarter second's debt: at least 7.5 s.
    expect(Date.now() - started, 'ms for alice\'s upload').to.be.at.least(7_000);
    const r = await RawClient.login(server.port, ALICE.user, ALICE.password);
    try {
      started = Date.now();
      r.sendHeader({ op: 'download', id: 2, name: 'alice-paced.bin', offset: 0 });
      const got = await r.reply(30_000);
      expect(got.final).to.include({ id: 2, status: 'ok' });
      expect(got.data.map((d) => d.length), 'frames of a quarter second at 512 KiB/s').to.deep.equal(Array<number>(16).fill(128 * KiB));
      expect(sha(Buffer.concat(got.data))).to.equal(sha(data));
      // (2 MiB − 128 KiB) at 512 KiB/s: at least 3.75 s.
      expect(Date.now() - started, 'ms for alice\'s download').to.be.at.least(3_500);
    } finally {
      r.close();
    }

    const b = await login(BOB);
    const [up, down] = [await waited('upload'), await waited('download')];
    await b.uploadBuffer('bob-free.bin', data);
    expect((await b.downloadBuffer('bob-free.bin')).sha256).to.equal(sha(data));
    expect(await waited('upload'), 'bob\'s upload waited for nothing').to.equal(up);
    expect(await waited('download'), 'bob\'s download waited for nothing').to.equal(down);
  });

  it('a new session\'s first frame, larger than a quarter second of the user\'s rate (the greeting allowed it before the login), is paid for at once: reconnecting gains nothing', async function () {
    for (let i = 0; i < 2; i++) {
      const r = await RawClient.login(server.port, ALICE.user, ALICE.password);
      try {
        const started = Date.now();
        // One frame of 1 MiB: 4 s at 256 KiB/s, of which at most a quarter second is left to a next frame.
        r.write(uploadBytes(2, `one-frame-${i}.bin`, randomBytes(1024 * KiB), 1024 * KiB));
        expect((await r.reply(30_000)).final).to.include({ id: 2, status: 'ok' });
        expect(Date.now() - started, `ms for the one-frame upload of session ${i + 1}`).to.be.at.least(3_500);
      } finally {
        r.close();
      }
    }
  });

  it('a reload applies new rates to open sessions (a *: line for everyone else); a malformed file is refused (exit 1, the line named) and the rates in force are kept', async function () {
    const a = await login();
    const b = await login(BOB);
    const data = randomBytes(2048 * KiB);
    await writeFile(ratesFile, 'alice:off\n*:256K\n');
    const reloaded = await runAdmin(server.adminSocket, ['reload']);
    expect(reloaded.code, reloaded.stderr).to.equal(0);
    expect(reloaded.stdout).to.include('rates reloaded: 1 users with their own rates');
    let before = await waited('upload');
    await a.uploadBuffer('alice-free.bin', data);
    expect(await waited('upload'), 'alice is no longer paced, on the session opened before the reload').to.equal(before);
    let started = Date.now();
    await b.uploadBuffer('bob-paced.bin', data);
    expect(Date.now() - started, 'ms for bob\'s upload under *:256K').to.be.at.least(3_500);

    await writeFile(ratesFile, 'alice:off\nbob:32K\n');
    const refused = await runAdmin(server.adminSocket, ['reload']);
    expect(refused.code).to.equal(1);
    expect(refused.stderr).to.include('line 2').and.include('64K');
    before = await waited('upload');
    started = Date.now();
    await b.uploadBuffer('bob-still-paced.bin', data);
    expect(Date.now() - started, 'bob keeps *:256K').to.be.at.least(3_500);
    expect(await waited('upload')).to.be.above(before);
  });
});
