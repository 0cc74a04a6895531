import { expect } from 'chai';
import { StallClock } from '../../server/log.js';

describe('StallClock (when a full log output counts as lost)', function () {
  it('retries while the output has taken no byte for less than the limit, then gives up', function () {
    const clock = new StallClock(10_000);
    clock.lineStarted();
    expect(clock.mayRetry(300, 1_000)).to.equal(true);
    expect(clock.mayRetry(300, 10_999)).to.equal(true);
    expect(clock.mayRetry(300, 11_000)).to.equal(false);
  });

  it('a reader that keeps taking bytes, however slowly, is never given up on', function () {
    const clock = new StallClock(10_000);
    clock.lineStarted();
    // One line of 3000 bytes, 300 taken every 9 s: 27 s in all, each wait shorter than the limit.
    let unwritten = 3000;
    for (let t = 0; unwritten > 0; t += 9_000, unwritten -= 300) expect(clock.mayRetry(unwritten, t), `at ${t} ms`).to.equal(true);
  });

  it('each line starts afresh: a stall of an earlier line does not count against the next', function () {
    const clock = new StallClock(10_000);
    clock.lineStarted();
    expect(clock.mayRetry(100, 0)).to.equal(true);
    expect(clock.mayRetry(100, 9_000)).to.equal(true);
    clock.lineStarted(); // the line got through
    expect(clock.mayRetry(100, 15_000), 'the next line\'s first full write').to.equal(true);
    expect(clock.mayRetry(100, 24_999)).to.equal(true);
    expect(clock.mayRetry(100, 25_000)).to.equal(false);
  });
});
