/**
 * UserQuota, the per-worker bookkeeping of --quota, with a fake measurement and clock: admitted uploads
 * count at once; a measurement replaces the bookkeeping but keeps counting the bytes still to arrive of
 * uploads in flight; a refusal is only ever decided on a measurement taken after the request.
 */
import { expect } from 'chai';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { FtsError } from '../../protocol/index.js';
import { MEASURE_SPACING, measureUsage, REFRESH_MS, UserQuota, type QuotaHold } from '../../server/storage/quota.js';
import { parseFileCount, parseQuotaFile, parseQuotaSize, QuotaLimits } from '../../server/storage/quota-limits.js';
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
      () => ({ bytes: 1000, files: null }),
      async () => {
        measurements++;
        return { bytes: stored, files: 0 };
      },
      () => clock,
    );
  });

  let identities = 0;
  /** A hold of a new identity, unless `identity` is given. */
  const hold = (remaining: () => number, ended: () => boolean = () => false, identity = `id${identities++}`, resume = false): QuotaHold => ({ identity, resume, newName: null, remaining, ended });

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
      () => ({ bytes: 1000, files: null }),
      async () => {
        measurements++;
        clock += 50; // the measurement takes 50 ms
        return { bytes: stored, files: 0 };
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
    expect(await codeOf(quota.check(1, 'k', false, 'x'))).to.equal('OK');
    expect(measurements, 'the would-be refusal measured afresh').to.equal(3);
    expect(MEASURE_SPACING).to.equal(10);
  });

  it('a resume while the cut attempt is still open replaces it: what the cut one had still to send stops counting; a fresh attempt of the same file counts in full', async function () {
    let firstLeft = 900;
    await quota.admit(900, 'a', hold(() => firstLeft, () => false, 'same'));
    stored = 400; // the first attempt wrote 400 bytes, then its connection went quiet
    firstLeft = 500;
    clock += REFRESH_MS + 1;
    expect(await quota.used(), 'measured: stored + what the first has still to write').to.equal(900);
    // The resume continues from the 400 kept bytes: 500 to send, all of them already counted.
    await quota.admit(500, 'a', hold(() => 500, () => false, 'same', true));
    expect(await quota.used()).to.equal(900);
    expect(await codeOf(quota.check(500, 'same', true, 'a')), 'offset of a resume of the same identity').to.equal('OK');
    expect(await codeOf(quota.check(900, 'same', false, 'a')), 'offset of a fresh attempt of the same identity: its own copy').to.equal('QUOTA_EXCEEDED');
    clock += REFRESH_MS + 1;
    expect(await quota.used(), 'the cut attempt no longer counts once the resume took over').to.equal(900);
  });

  it('a request that adds nothing is never refused, even over the quota (a staged upload to publish)', async function () {
    stored = 1500; // over the quota (lowered, or overshot)
    expect(await codeOf(quota.check(0, 'k', false, 'a'))).to.equal('OK');
    await quota.admit(0, 'a', hold(() => 0));
    expect(await codeOf(quota.check(1, 'k', false, 'a'))).to.equal('QUOTA_EXCEEDED');
  });

  it('a refusal is not decided on a measurement that was already running when the request came', async function () {
    let release!: () => void;
    let gate: Promise<void> | null = new Promise<void>((r) => (release = r));
    quota = new UserQuota(
      () => ({ bytes: 1000, files: null }),
      async () => {
        measurements++;
        const value = stored;
        if (gate !== null) await gate;
        return { bytes: value, files: 0 };
      },
      () => clock,
    );
    stored = 1000;
    const first = quota.used(); // a measurement starts and reads 1000
    stored = 0; // then a file is deleted through another worker
    const checking = codeOf(quota.check(10, 'k', false, 'a')); // joins the running measurement
    gate = null;
    release();
    await first;
    expect(await checking, 'decided on a new measurement').to.equal('OK');
    expect(measurements).to.equal(2);
  });

  it('bytes admitted while a measurement runs still count once it ends', async function () {
    let release!: () => void;
    let gate: Promise<void> | null = null;
    quota = new UserQuota(
      () => ({ bytes: 1000, files: null }),
      async () => {
        measurements++;
        if (gate !== null) await gate;
        return { bytes: stored, files: 0 };
      },
      () => clock,
    );
    await quota.used();
    gate = new Promise<void>((r) => (release = r));
    clock += REFRESH_MS + 1;
    const measuring = quota.used(); // stale: measures again, waiting on the gate
    clock -= REFRESH_MS + 1; // ...while an admission sees the previous measurement as fresh
    await quota.admit(600, 'a', hold(() => 600));
    release();
    await measuring;
    expect(await quota.used()).to.equal(600);
  });

  it('freed() gives room back at once', async function () {
    stored = 1000;
    await quota.used();
    quota.freed(400, 0);
    await quota.check(400, 'k', false, 'a');
    expect(measurements, 'no measurement needed').to.equal(1);
  });

  it('the refusal names the bytes, the usage and the quota, in the message and as fields', async function () {
    stored = 700;
    const err = await quota.check(400, 'k', false, 'big.iso').then(() => null, (e: unknown) => e as FtsError);
    expect(err?.code).to.equal('QUOTA_EXCEEDED');
    expect(err?.message).to.equal('big.iso: 400 more bytes would exceed your quota: 700 of 1000 bytes used, 300 left');
    expect(err?.details).to.deep.equal({ used: 700, quota: 1000 });
    expect(err?.fatal).to.equal(false);
  });
});

describe('UserQuota with a limit that changes (a reload)', function () {
  it('without a limit nothing is measured or refused; a limit set later applies to the next upload', async function () {
    let limit: number | null = null;
    let measurements = 0;
    const quota = new UserQuota(
      () => ({ bytes: limit, files: null }),
      async () => {
        measurements++;
        return { bytes: 500, files: 0 };
      },
    );
    await quota.admit(10 ** 12, 'huge', { identity: 'k', resume: false, newName: null, remaining: () => 0, ended: () => true });
    await quota.check(10 ** 12, 'k', false, 'huge');
    expect(measurements, 'no limit: no measurement').to.equal(0);
    limit = 1000;
    expect(await codeOf(quota.check(501, 'k', false, 'x'))).to.equal('QUOTA_EXCEEDED');
    await quota.check(500, 'k', false, 'x');
    expect(measurements).to.be.greaterThan(0);
  });

  it('a resume replaces only the attempt it takes over (the one with the most bytes staged); the others keep counting', async function () {
    let stored = 0;
    const quota = new UserQuota(
      () => ({ bytes: 1000, files: null }),
      async () => ({ bytes: stored, files: 0 }),
    );
    const attempt = (left: number, resume = false): QuotaHold => ({ identity: 'x', resume, newName: null, remaining: () => left, ended: () => false });
    await quota.admit(400, 'x', attempt(300)); // wrote 100
    await quota.admit(400, 'x', attempt(350)); // wrote 50
    stored = 150;
    // A resume from 100: takes the first over (300 to come), sends 300.
    await quota.admit(300, 'x', attempt(300, true));
    expect(await quota.used(), '300 (the resume) + 350 (the other attempt, still writing its own copy)').to.equal(400 + 400 + 300 - 300);
    expect(await codeOf(quota.check(301, 'y', false, 'y')), 'what is left: 1000 - (150 on disk + 300 + 350 to come)').to.equal('QUOTA_EXCEEDED');
  });

  it('parallel fresh attempts of one identity each count in full (each writes its own copy)', async function () {
    let measurements = 0;
    const quota = new UserQuota(
      () => ({ bytes: 1000, files: null }),
      async () => {
        measurements++;
        return { bytes: 0, files: 0 };
      },
    );
    const same = (): QuotaHold => ({ identity: 'x', resume: false, newName: null, remaining: () => 400, ended: () => false });
    await quota.admit(400, 'x', same());
    await quota.admit(400, 'x', same());
    expect(await codeOf(quota.admit(400, 'x', same())), 'a third copy').to.equal('QUOTA_EXCEEDED');
    expect(measurements).to.be.greaterThan(0);
  });
});

describe('UserQuota with a file-count quota (--max-files)', function () {
  let storedFiles: number;
  let measurements: number;
  let clock: number;
  let quota: UserQuota;
  let bytesLimit: number | null;

  beforeEach(function () {
    storedFiles = 0;
    measurements = 0;
    clock = 1_000_000;
    bytesLimit = null;
    quota = new UserQuota(
      () => ({ bytes: bytesLimit, files: 3 }),
      async () => {
        measurements++;
        return { bytes: 0, files: storedFiles };
      },
      () => clock,
    );
  });

  let identities = 0;
  const upload = (newName: string | null, ended: () => boolean = () => false): QuotaHold => ({ identity: `f${identities++}`, resume: false, newName, remaining: () => 10, ended });

  it('admits uploads of new names up to the limit; a replacement (no new name) always fits', async function () {
    storedFiles = 1;
    await quota.admit(10, 'a', upload('a'));
    await quota.admit(10, 'b', upload('b'));
    expect(await quota.usedFiles()).to.equal(3);
    clock += 1;
    expect(await codeOf(quota.admit(10, 'c', upload('c')))).to.equal('QUOTA_EXCEEDED');
    expect(await codeOf(quota.check(10, 'k', false, 'c', 'c')), 'offset of a new name').to.equal('QUOTA_EXCEEDED');
    expect(await codeOf(quota.admit(10, 'a', upload(null))), 'replacing a file').to.equal('OK');
    expect(await codeOf(quota.check(10, 'k', false, 'x', null))).to.equal('OK');
  });

  it('the refusal names the files and the limit, in the message and as fields', async function () {
    storedFiles = 3;
    const err = await quota.check(10, 'k', false, 'new.txt', 'new.txt').then(() => null, (e: unknown) => e as FtsError);
    expect(err?.code).to.equal('QUOTA_EXCEEDED');
    expect(err?.message).to.equal('new.txt: a new file would exceed your file quota: 3 of 3 files');
    expect(err?.details).to.deep.equal({ files: 3, maxFiles: 3 });
    expect(err?.fatal).to.equal(false);
  });

  it('two uploads of one new name in flight count as one file (one replaces the other)', async function () {
    storedFiles = 2;
    await quota.admit(10, 'a', upload('a'));
    await quota.admit(10, 'a', upload('a'));
    expect(await quota.usedFiles()).to.equal(3);
    clock += REFRESH_MS + 1;
    expect(await quota.usedFiles(), 'measured: 2 stored + one name to come').to.equal(3);
  });

  it('uploads of new names admitted at the same moment cannot both take the last file', async function () {
    storedFiles = 2;
    const results = await Promise.all([quota.admit(10, 'a', upload('a')), quota.admit(10, 'b', upload('b'))].map(codeOf));
    expect(results.sort()).to.deep.equal(['OK', 'QUOTA_EXCEEDED']);
  });

  it('a measurement counts the stored files plus the new names of uploads in flight; ended ones only as stored', async function () {
    let ended = false;
    await quota.admit(10, 'a', upload('a', () => ended));
    clock += REFRESH_MS + 1;
    expect(await quota.usedFiles()).to.equal(1);
    ended = true;
    storedFiles = 1; // published
    clock += REFRESH_MS + 1;
    expect(await quota.usedFiles()).to.equal(1);
  });

  it('freed() gives a file back at once; a refusal measures afresh (a file deleted elsewhere counts)', async function () {
    storedFiles = 3;
    await quota.usedFiles();
    quota.freed(100, 1);
    await quota.check(10, 'k', false, 'd', 'd');
    expect(measurements, 'no measurement needed').to.equal(1);
    await quota.admit(10, 'd', upload('d'));
    storedFiles = 1; // 2 left on disk after the delete here, then one deleted through another worker
    clock += 1;
    await quota.admit(10, 'e', upload('e'));
    expect(measurements, 'the would-be refusal measured afresh').to.equal(2);
  });

  it('a new name of an upload in flight that the measurement finds published already is counted once', async function () {
    let names = new Set<string>(['old']);
    quota = new UserQuota(
      () => ({ bytes: null, files: 3 }),
      async () => ({ bytes: 0, files: names.size, names }),
      () => clock,
    );
    await quota.admit(10, 'a', upload('a'));
    names = new Set(['old', 'a']); // published while the directory was read; its hold not yet ended
    clock += REFRESH_MS + 1;
    expect(await quota.usedFiles()).to.equal(2);
    await quota.admit(10, 'b', upload('b'));
    expect(await codeOf(quota.check(10, 'k', false, 'c', 'c'))).to.equal('QUOTA_EXCEEDED');
  });

  it('admitFile (a publish onto a name freed while the upload ran) refuses past the limit, else counts the file', async function () {
    storedFiles = 2;
    await quota.admitFile('x');
    expect(await quota.usedFiles()).to.equal(3);
    storedFiles = 3; // x published
    clock += 1;
    expect(await codeOf(quota.admitFile('y'))).to.equal('QUOTA_EXCEEDED');
    storedFiles = 0; // everything deleted elsewhere meanwhile
    clock += 1;
    await quota.admit(10, 'z', upload('z'));
    // 'z' is in flight as a new name: a publish onto it adds nothing more.
    await quota.admitFile('z');
    expect(await quota.usedFiles()).to.equal(1);
  });

  it('an empty upload of a new name counts as a file; bytes and files are judged together', async function () {
    storedFiles = 2;
    bytesLimit = 100;
    await quota.admit(0, 'empty', { ...upload('empty'), remaining: () => 0 });
    expect(await codeOf(quota.admit(0, 'other', { ...upload('other'), remaining: () => 0 })), 'no room for another file').to.equal('QUOTA_EXCEEDED');
    const err = await quota.admit(101, 'x', upload(null)).then(() => null, (e: unknown) => e as FtsError);
    expect(err?.details, 'over the byte quota').to.deep.equal({ used: 0, quota: 100 });
  });
});

describe('quota sizes and the quota file', function () {
  it('parseQuotaSize: bytes, K/M/G/T as powers of 1024 in any case, off; nothing else', function () {
    expect(parseQuotaSize('1')).to.equal(1);
    expect(parseQuotaSize(' 3M ')).to.equal(3 * 2 ** 20);
    expect(parseQuotaSize('2g')).to.equal(2 * 2 ** 30);
    expect(parseQuotaSize('1T')).to.equal(2 ** 40);
    expect(parseQuotaSize('512k')).to.equal(512 * 1024);
    expect(parseQuotaSize('OFF')).to.equal(null);
    for (const bad of ['0', '', '-1', '1.5M', '3X', '1 M', '1MB', 'lots', '99999999999999999999', '9000000T']) {
      expect(parseQuotaSize(bad), `"${bad}"`).to.equal(undefined);
    }
  });

  it('parseQuotaFile: USER:SIZE lines, comments, blank lines and CRLF; every malformed line is reported with its number', function () {
    const ok = parseQuotaFile('# tiers\nalice:10G\r\n\n  # indented comment\nbob: off\ncarol:500M\n');
    expect(ok.problems).to.deep.equal([]);
    expect([...ok.perUser]).to.deep.equal([
      ['alice', { bytes: 10 * 2 ** 30 }],
      ['bob', { bytes: null }],
      ['carol', { bytes: 500 * 2 ** 20 }],
    ]);
    const bad = parseQuotaFile('alice 10G\n../x:1M\ndave:lots\nerin:1M\nerin:2M\n');
    expect(bad.problems.map((p) => p.line)).to.deep.equal([1, 2, 3, 5]);
    expect(bad.problems[0]!.reason).to.include('USER:SIZE');
    expect(bad.problems[3]!.reason).to.include('twice');
  });

  it('parseFileCount: a whole number of files of at least 1, or off; no units', function () {
    expect(parseFileCount('1')).to.equal(1);
    expect(parseFileCount(' 5000 ')).to.equal(5000);
    expect(parseFileCount('Off')).to.equal(null);
    for (const bad of ['0', '', '-1', '1.5', '10K', '1e3', 'many', '99999999999999999999']) expect(parseFileCount(bad), `"${bad}"`).to.equal(undefined);
  });

  it('parseQuotaFile: USER:SIZE/FILES gives a file-count quota too; a malformed FILES or a third part refuses the line', function () {
    const ok = parseQuotaFile('alice:10G/5000\nbob:off/100\ncarol:1M/off # no file limit\ndave:2M\n');
    expect(ok.problems).to.deep.equal([]);
    expect([...ok.perUser]).to.deep.equal([
      ['alice', { bytes: 10 * 2 ** 30, files: 5000 }],
      ['bob', { bytes: null, files: 100 }],
      ['carol', { bytes: 2 ** 20, files: null }],
      ['dave', { bytes: 2 * 2 ** 20 }],
    ]);
    const bad = parseQuotaFile('a:1M/\nb:1M/0\nc:1M/2/3\nd:/5\ne:1M/10K\n');
    expect(bad.problems.map((p) => p.line)).to.deep.equal([1, 2, 3, 4, 5]);
    expect(bad.problems[0]!.reason).to.include('FILES (after a /, optional)');
  });

  it('QuotaLimits.filesFor: a line with FILES gives its own, a line without it and a user not named get --max-files', function () {
    const limits = QuotaLimits.fromFile(null, 50, 'alice:1G/10\nbob:1G\ncarol:off/off\n');
    expect(limits.filesFor('alice')).to.equal(10);
    expect(limits.filesFor('bob')).to.equal(50);
    expect(limits.filesFor('carol')).to.equal(null);
    expect(limits.filesFor('dave')).to.equal(50);
    expect(limits.limitFor('bob')).to.equal(2 ** 30);
    expect(new QuotaLimits(null).filesFor('dave')).to.equal(null);
  });

  it('QuotaLimits: a user the file names gets their own quota (off included), the others --quota', function () {
    const limits = new QuotaLimits(100, null, new Map([['alice', { bytes: 5 }], ['bob', { bytes: null }]]));
    expect(limits.limitFor('alice')).to.equal(5);
    expect(limits.limitFor('bob')).to.equal(null);
    expect(limits.limitFor('carol')).to.equal(100);
    expect(new QuotaLimits(null).limitFor('carol')).to.equal(null);
  });
});

describe('measureUsage', function () {
  let root: string;

  beforeEach(async function () {
    root = await mkdtemp(path.join(os.tmpdir(), 'fts-usage-'));
  });

  afterEach(async function () {
    await rm(root, { recursive: true, force: true });
  });

  it('counts published files and every partial upload file, as they are on disk (two attempts of one file are two copies)', async function () {
    const dir = path.join(root, 'alice');
    const staging = path.join(root, '.fts', 'staging', 'alice');
    await mkdir(dir, { recursive: true });
    await mkdir(staging, { recursive: true });
    await writeFile(path.join(dir, 'a'), Buffer.alloc(1000));
    await writeFile(path.join(dir, 'b'), Buffer.alloc(24));
    await writeFile(path.join(staging, `${'1'.repeat(64)}.aaaa.part`), Buffer.alloc(100));
    await writeFile(path.join(staging, `${'1'.repeat(64)}.bbbb.part`), Buffer.alloc(40));
    await writeFile(path.join(staging, `${'2'.repeat(64)}.cccc.part`), Buffer.alloc(10));
    await writeFile(path.join(staging, 'not-a-partial.tmp'), Buffer.alloc(5000));
    expect(await measureUsage(root, 'alice', dir)).to.deep.equal({ used: 1024 + 150, files: 2, partial: 150 });
    expect(await measureUsage(root, 'nobody', path.join(root, 'nobody')), 'a user with nothing yet').to.deep.equal({ used: 0, files: 0, partial: 0 });
  });
});
