/**
 * UserQuota, the per-worker bookkeeping of --quota, with a fake measurement and clock: admitted uploads
 * count at once; a measurement replaces the bookkeeping but keeps counting the bytes still to arrive of
 * uploads in flight; a refusal is only ever decided on a measurement taken after the request.
 */
import { expect } from 'chai';
import { FtsError } from '../../protocol/index.js';
import { MEASURE_SPACING, REFRESH_MS, UserQuota, type QuotaHold } from '../../server/storage/quota.js';
import { codeOf } from '../helpers/common.js';

describe('UserQuota', function () {
  let stored: number;
  let measurements: number;
  let clock: number;
  let quota: UserQuota;

  beforeEach(function () {
    stored = 0;
    measurements = 0;
    clock = 1_000_000;
    quota = new UserQuota(
      1000,
      async () => {
        measurements++;
        return stored;
      },
      () => clock,
    );
  });

  const hold = (remaining: () => number, ended: () => boolean = () => false): QuotaHold => ({ remaining, ended });

  it('admits up to the limit and counts what it admitted until the next measurement', async function () {
    stored = 200;
    await quota.admit(500, 'a', hold(() => 500));
    await quota.admit(300, 'b', hold(() => 300));
    expect(await quota.used()).to.equal(1000);
    expect(measurements, 'one measurement for both').to.equal(1);
    clock += 1;
    expect(await codeOf(quota.admit(1, 'c', hold(() => 1)))).to.equal('QUOTA_EXCEEDED');
  });

  it('uploads admitted at the same moment cannot both take the same room', async function () {
    const results = await Promise.all([quota.admit(600, 'a', hold(() => 600)), quota.admit(600, 'b', hold(() => 600))].map(codeOf));
    expect(results.sort()).to.deep.equal(['OK', 'QUOTA_EXCEEDED']);
  });

  it('a measurement counts the stored bytes plus what uploads in flight have still to send; ended uploads only as stored', async function () {
    let received = 0;
    let ended = false;
    await quota.admit(800, 'a', hold(() => 800 - received, () => ended));
    received = 300;
    stored = 300; // what the upload wrote so far
    clock += REFRESH_MS + 1;
    expect(await quota.used()).to.equal(800);
    ended = true;
    stored = 800;
    clock += REFRESH_MS + 1;
    expect(await quota.used()).to.equal(800);
  });

  it('a refusal measures again when the measurement predates the request: a file freed elsewhere a moment ago counts', async function () {
    stored = 900;
    await quota.used();
    stored = 0; // deleted through another worker
    clock += 1;
    await quota.admit(500, 'a', hold(() => 500));
    expect(measurements).to.equal(2);
    expect(await quota.used()).to.equal(500);
  });

  it('after a slow measurement the next waits MEASURE_SPACING times as long (but a refusal still measures afresh)', async function () {
    quota = new UserQuota(
      1000,
      async () => {
        measurements++;
        clock += 50; // the measurement takes 50 ms
        return stored;
      },
      () => clock,
    );
    stored = 1000;
    await quota.used();
    clock += 400; // older than REFRESH_MS, younger than 10 × 50 ms
    await quota.used();
    expect(measurements).to.equal(1);
    clock += 200;
    await quota.used();
    expect(measurements).to.equal(2);
    stored = 0; // freed through another worker
    clock += 1;
    expect(await codeOf(quota.check(1, 'x'))).to.equal('OK');
    expect(measurements, 'the would-be refusal measured afresh').to.equal(3);
    expect(MEASURE_SPACING).to.equal(10);
  });

  it('freed() gives room back at once', async function () {
    stored = 1000;
    await quota.used();
    quota.freed(400);
    await quota.check(400, 'a');
    expect(measurements, 'no measurement needed').to.equal(1);
  });

  it('the refusal names the bytes, the usage and the quota, in the message and as fields', async function () {
    stored = 700;
    const err = await quota.check(400, 'big.iso').then(() => null, (e: unknown) => e as FtsError);
    expect(err?.code).to.equal('QUOTA_EXCEEDED');
    expect(err?.message).to.equal('big.iso: 400 more bytes would exceed your quota: 700 of 1000 bytes used, 300 left');
    expect(err?.details).to.deep.equal({ used: 700, quota: 1000 });
    expect(err?.fatal).to.equal(false);
  });
});
