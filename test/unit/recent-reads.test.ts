import { expect } from 'chai';
import { RecentReads } from '../../server/worker/recent-reads.js';

describe('RecentReads (which large files a worker sent lately)', function () {
  const WINDOW = 1000;
  let now = 0;
  const clock = (): number => now;

  beforeEach(function () {
    now = 0;
  });

  it('a first send is cold; another within the window is hot', function () {
    const reads = new RecentReads(WINDOW, 16, clock);
    expect(reads.note('a')).to.equal(false);
    now = WINDOW;
    expect(reads.note('a')).to.equal(true);
    expect(reads.note('b'), 'another version').to.equal(false);
  });

  it('a send after the window is cold again, and each send restarts the window', function () {
    const reads = new RecentReads(WINDOW, 16, clock);
    reads.note('a');
    now = WINDOW + 1;
    expect(reads.note('a')).to.equal(false);
    now += WINDOW;
    expect(reads.note('a'), 'within the window of the send before').to.equal(true);
    now += WINDOW;
    expect(reads.note('a')).to.equal(true);
  });

  it('remembers at most its capacity, forgetting the least recently sent first', function () {
    const reads = new RecentReads(WINDOW, 3, clock);
    for (const v of ['a', 'b', 'c']) reads.note(v);
    reads.note('a'); // now b is the least recently sent
    reads.note('d');
    expect(reads.size).to.equal(3);
    expect(reads.note('a')).to.equal(true);
    expect(reads.note('b'), 'forgotten').to.equal(false);
    expect(reads.size).to.equal(3);
  });
});
