/**
 * The Limiter of client/upload.ts: places first come first served; `offer` waits in line without blocking
 * anyone, can be withdrawn, and a released place goes to the first in line that has not withdrawn.
 */
import { expect } from 'chai';
import { Limiter } from '../../client/upload.js';

describe('Limiter (unit)', function () {
  it('tryAcquire gives places up to the limit, then null; a release is idempotent and frees one', () => {
    const l = new Limiter(2);
    const a = l.tryAcquire();
    const b = l.tryAcquire();
    expect(a).to.be.a('function');
    expect(b).to.be.a('function');
    expect(l.tryAcquire()).to.equal(null);
    a!();
    a!();
    const c = l.tryAcquire();
    expect(c).to.be.a('function');
    expect(l.tryAcquire(), 'one release, one place').to.equal(null);
  });

  it('offer: granted at once while there is room; otherwise in line, skipped once withdrawn, and the place goes to the next', async () => {
    const l = new Limiter(1);
    const first = l.offer();
    const release1 = await first.granted;
    const order: string[] = [];
    const second = l.offer();
    const third = l.offer();
    void second.granted.then(() => order.push('second'));
    void third.granted.then((release) => {
      order.push('third');
      release();
    });
    second.cancel();
    release1();
    await new Promise((r) => setImmediate(r));
    expect(order).to.deep.equal(['third']);
    expect(l.tryAcquire(), 'third gave its place back').to.be.a('function');
  });

  it('a long line of withdrawn offers is passed over, and the line does not keep what it served', async () => {
    const l = new Limiter(1);
    const holder = await l.offer().granted;
    const offers = Array.from({ length: 5_000 }, () => l.offer());
    for (const o of offers.slice(0, 4_999)) o.cancel();
    let last = false;
    void offers[4_999]!.granted.then(() => (last = true));
    holder();
    await new Promise((r) => setImmediate(r));
    expect(last).to.equal(true);
    expect((l as unknown as { waiting: unknown[] }).waiting.length, 'served entries dropped').to.be.below(5_000);
  });
});
