import { expect } from 'chai';
import { MAX_CHUNK_BYTES } from '../../protocol/index.js';
import { HIGH_WATER_BYTES } from '../../server/worker/frame-source.js';
import { Pacer, pacedFrameBytes, pacedReadAheadBytes } from '../../server/worker/pacer.js';

describe('Pacer (per-session rate limit)', () => {
  const KiB = 1024;

  /** A Pacer on a clock the test moves by hand. */
  function pacer(rate: number): { p: Pacer; advance(ms: number): void } {
    let now = 1_000;
    return { p: new Pacer(rate, () => now), advance: (ms) => (now += ms) };
  }

  it('starts empty: the first frame moves at once, the next waits exactly as long as that one overdrew the bucket', () => {
    const { p } = pacer(100 * KiB);
    expect(p.delay()).to.equal(0);
    p.moved(50 * KiB);
    expect(p.delay()).to.be.closeTo(500, 1e-6);
    p.moved(100 * KiB);
    expect(p.delay()).to.be.closeTo(1_500, 1e-6);
  });

  it('a transfer that waits as told moves the rate; the last frame\'s debt is left for the next transfer', () => {
    const { p, advance } = pacer(256 * KiB);
    let waited = 0;
    for (let frame = 0; frame < 40; frame++) {
      const wait = p.delay();
      advance(wait);
      waited += wait;
      p.moved(64 * KiB);
    }
    // 40 frames of 64 KiB at 256 KiB/s: 39 waits of 250 ms before frames 2 to 40; the 40th frame's 250 ms
    // is owed by whatever moves next.
    expect(waited).to.be.closeTo(39 * 250, 1e-6);
    expect(p.delay()).to.be.closeTo(250, 1e-6);
  });

  it('refills with idle time, never beyond one second of bytes', () => {
    const { p, advance } = pacer(64 * KiB);
    advance(500);
    p.moved(32 * KiB);
    expect(p.delay()).to.equal(0);
    advance(60_000); // a long pause saves up one second's worth, not a minute's
    p.moved(64 * KiB);
    expect(p.delay()).to.equal(0);
    p.moved(64 * KiB);
    expect(p.delay()).to.be.closeTo(1_000, 1e-6);
  });

  it('refuses a rate that is not positive', () => {
    for (const bad of [0, -1, Number.NaN]) expect(() => new Pacer(bad)).to.throw(RangeError);
  });

  it('frames of about a quarter second, in 64 KiB steps from 64 KiB to 1 MiB; read-ahead of two frames', () => {
    const cases: Array<[number | null, number, number]> = [
      [null, MAX_CHUNK_BYTES, HIGH_WATER_BYTES],
      [64 * KiB, 64 * KiB, 128 * KiB],
      [300 * KiB, 64 * KiB, 128 * KiB],
      [1024 * KiB, 256 * KiB, 512 * KiB],
      [1000 * KiB, 192 * KiB, 384 * KiB],
      [4096 * KiB, MAX_CHUNK_BYTES, HIGH_WATER_BYTES],
      [1024 * 1024 * KiB, MAX_CHUNK_BYTES, HIGH_WATER_BYTES],
    ];
    for (const [rate, frame, readAhead] of cases) {
      expect(pacedFrameBytes(rate), `frame at ${rate}`).to.equal(frame);
      expect(pacedReadAheadBytes(rate), `read-ahead at ${rate}`).to.equal(readAhead);
    }
  });
});
