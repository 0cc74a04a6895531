import { expect } from 'chai';
import { parseRate, parseRatesFile, RateLimits } from '../../server/rate-limits.js';

const K = 1024;

describe('rate-limits: the rates file (--rates-file) and whose rate applies', function () {
  it('parseRate: bytes per second of at least 64K with K/M/G/T, or off; anything else undefined', function () {
    expect(parseRate('64K')).to.equal(64 * K);
    expect(parseRate(' 1m ')).to.equal(1024 * K);
    expect(parseRate('65536')).to.equal(64 * K);
    expect(parseRate('OFF')).to.equal(null);
    for (const bad of ['', '63K', '65535', '1.5M', '-1M', 'fast', '1M/2M']) expect(parseRate(bad), bad).to.equal(undefined);
  });

  it('USER:UPLOAD/DOWNLOAD, USER:RATE for both, off in either place, a *: line, comments', function () {
    const { perUser, star, problems } = parseRatesFile('# rates\nalice:1M/off\nbob: 256K # both\n*:off/128K\n\n');
    expect(problems).to.deep.equal([]);
    expect(perUser.get('alice')).to.deep.equal({ upload: 1024 * K, download: null });
    expect(perUser.get('bob')).to.deep.equal({ upload: 256 * K, download: 256 * K });
    expect(star).to.deep.equal({ upload: null, download: 128 * K });
  });

  it('every malformed line is a problem with its number', function () {
    const { problems } = parseRatesFile('alice\nbob:32K\ncarol:1M/\ndave:1M/2M/3M\nbob:1M\nbob:2M\n../x:1M\n');
    expect(problems.map((p) => p.line)).to.deep.equal([1, 2, 3, 4, 6, 7]);
  });

  it('rateFor: the user\'s line, else the * line, else the flags; before a login (null), always the flags', function () {
    const flags = { upload: 512 * K, download: null };
    const limits = RateLimits.fromFile(flags, 'alice:1M/2M\n*:off\n');
    expect(limits.rateFor('alice', 'upload')).to.equal(1024 * K);
    expect(limits.rateFor('alice', 'download')).to.equal(2048 * K);
    expect(limits.rateFor('bob', 'upload')).to.equal(null);
    expect(limits.rateFor(null, 'upload')).to.equal(512 * K);
    const noStar = RateLimits.fromFile(flags, 'alice:1M\n');
    expect(noStar.rateFor('bob', 'upload')).to.equal(512 * K);
    expect(RateLimits.fromFile(flags, null).rateFor('alice', 'download')).to.equal(null);
  });
});
