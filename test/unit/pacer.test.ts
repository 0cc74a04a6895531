import { expect } from 'chai';
import { Pacer } from '../../server/worker/pacer.js';

describe('Pacer (per-session rate limit)', () => {
  const KiB = 1024;

  /** A Pacer on a clock the test moves by hand. */
  function pacer(rate: number): { p: Pacer; advance(ms: number): void } {
    let now = 1_000;
    return { p: new Pacer(rate, () => now), advance: (ms) => (now += ms) };
  }

  it('lets one second of bytes through at once, then asks to wait exactly as long as the overdraft takes to refill', () => {
    const { p } = pacer(100 * KiB);
    expect(p.took(100 * KiB)).to.equal(0);
    expect(p.took(50 * KiB)).to.be.closeTo(500, 1e-6);
    expect(p.took(100 * KiB)).to.be.closeTo(1_500, 1e-6);
  });

  it('a client that waits as told moves the rate, frame after frame (1 MiB frames at 256 KiB/s: 4 s each)', () => {
    const { p, advance } = pacer(256 * KiB);
    let elapsed = 0;
    for (let frame = 0; frame < 20; frame++) {
      const wait = p.took(1024 * KiB);
      advance(wait);
      elapsed += wait;
    }
    // 20 MiB at 256 KiB/s is 80 s, less the one second's worth that the full bucket let through at once.
    expect(elapsed).to.be.closeTo(79_000, 1e-3);
  });

  it('refills with idle time, never beyond one second of bytes', () => {
    const { p, advance } = pacer(64 * KiB);
    expect(p.took(64 * KiB)).to.equal(0);
    advance(500);
    expect(p.took(32 * KiB)).to.equal(0);
    advance(60_000); // a long pause saves up one second's worth, not a minute's
    expect(p.took(64 * KiB)).to.equal(0);
    expect(p.took(64 * KiB)).to.be.closeTo(1_000, 1e-6);
  });

  it('refuses a rate that is not positive', () => {
    for (const bad of [0, -1, Number.NaN]) expect(() => new Pacer(bad)).to.throw(RangeError);
  });
});
