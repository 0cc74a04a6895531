/**
 * --max-upload-rate and --max-download-rate: each session's file data moves no faster than its limit, in
 * each direction, and a transfer that waits for its limit longer than --stall-timeout is not taken for a
 * stalled one. Only lower bounds of durations are asserted (a slow machine makes transfers slower, never
 * faster); the limits are what make them long.
 */
import { expect } from 'chai';
import { createHash, randomBytes } from 'node:crypto';
import { FtsClient } from '../../client/index.js';
import { metricsPortOf, scrape } from '../helpers/hardening-proc.js';
import { RawClient, uploadBytes } from '../helpers/raw-client.js';
import { DEFAULT_USERS, TestServer } from '../helpers/server.js';

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
    server = await TestServer.start({ workers: 1, args: ['--max-upload-rate', '512K', '--max-download-rate', '1M', '--stall-timeout', '1'] });
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

  it('an upload and a download move no faster than their limits, intact, and waits of over --stall-timeout do not stall them', async function () {
    const c = await client();
    const data = randomBytes(2048 * KiB);
    let started = Date.now();
    await c.uploadBuffer('paced.bin', data);
    // 2 MiB at 512 KiB/s, the first 512 KiB at once (a full bucket): at least 3 s, in waits of 1 and 2 s.
    expect(Date.now() - started, 'ms for the upload').to.be.at.least(2_900);

    const big = randomBytes(3072 * KiB);
    await c.uploadBuffer('paced-3.bin', big);
    started = Date.now();
    const got = await c.downloadBuffer('paced-3.bin');
    // 3 MiB at 1 MiB/s, the first MiB at once: at least 2 s.
    expect(Date.now() - started, 'ms for the download').to.be.at.least(1_900);
    expect(sha(got.data)).to.equal(sha(big));
    expect(got.sha256).to.equal(sha(big));
    expect(sha((await c.downloadBuffer('paced.bin')).data)).to.equal(sha(data));

    const text = await scrape(await metricsPortOf(server));
    // Counted as each wait begins. At most what the bytes overdrew ((2 MiB − 512 KiB) / 512 KiB, then 5 MiB
    // after a bucket refilled by the time between: a slow machine refills it more and waits less).
    const uploadWaits = sample(text, 'fts_throttled_seconds_total{direction="upload"}');
    expect(uploadWaits).to.be.above(0).and.at.most(3 + 10 + 0.01);
    const downloadWaits = sample(text, 'fts_throttled_seconds_total{direction="download"}');
    expect(downloadWaits).to.be.above(0).and.at.most(2 + 2 + 0.01);
    expect(server.lines.filter((l) => l['code'] === 'TRANSFER_STALLED'), 'stalled transfers').to.deep.equal([]);
  });

  it('each session has its own budget: two sessions upload at once, each at the full rate', async function () {
    const [a, b] = [await client(), await client()];
    const data = randomBytes(1536 * KiB);
    const waitsBefore = sample(await scrape(await metricsPortOf(server)), 'fts_throttled_seconds_total{direction="upload"}');
    const started = Date.now();
    await Promise.all([a.uploadBuffer('one.bin', data), b.uploadBuffer('two.bin', data)]);
    // Each: (1.5 MiB − 512 KiB) / 512 KiB = 2 s of waits at most. One budget shared by both sessions would
    // have overdrawn it by 2.5 MiB: 5 s for the pair at the least, with waits adding up to more.
    expect(Date.now() - started, 'ms for two uploads side by side').to.be.at.least(1_900);
    const waits = sample(await scrape(await metricsPortOf(server)), 'fts_throttled_seconds_total{direction="upload"}') - waitsBefore;
    expect(waits, 'seconds the two sessions waited').to.be.above(0).and.at.most(4.01);
    for (const name of ['one.bin', 'two.bin']) expect(sha((await a.downloadBuffer(name)).data)).to.equal(sha(data));
  });

  it('the data of a refused upload (read only to be skipped) is paced too: refusals are no way around the limit', async function () {
    const raw = await RawClient.login(server.port, ALICE.user, ALICE.password);
    raws.push(raw);
    const started = Date.now();
    // Refused for its name before any byte is staged; its 1.5 MiB are read and dropped, at 512 KiB/s.
    raw.write(uploadBytes(2, '../outside.bin', randomBytes(1536 * KiB), 1024 * KiB));
    const r = await raw.reply(30_000);
    expect(r.final).to.include({ id: 2, status: 'error', code: 'BAD_NAME', fatal: false });
    expect(Date.now() - started, 'ms until the refusal').to.be.at.least(1_900);
    raw.sendHeader({ op: 'noop', id: 3 });
    expect((await raw.reply()).final).to.include({ id: 3, status: 'ok' });
  });
});
