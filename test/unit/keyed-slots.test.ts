import { expect } from 'chai';
import { KeyedSlots } from '../../server/worker/keyed-slots.js';

/** The message a promise is rejected with, or null if it resolves. */
const rejection = (p: Promise<unknown>): Promise<string | null> => p.then(() => null, (e: Error) => e.message);

/** Lets queued promise continuations run. */
const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe('KeyedSlots (at most N holders per key, the others wait in order)', function () {
  it('a key past its limit waits, first come first served; other keys do not; a release passes the slot on', async function () {
    const slots = new KeyedSlots(2);
    const order: string[] = [];
    const a1 = await slots.acquire('alice');
    const a2 = await slots.acquire('alice');
    const waiting = ['a3', 'a4'].map((name) => slots.acquire('alice').then((release) => (order.push(name), release)));
    const b1 = await slots.acquire('bob');
    await settle();
    expect(order, 'alice waits, bob does not').to.deep.equal([]);
    expect([slots.holders('alice'), slots.holders('bob')]).to.deep.equal([2, 1]);
    a1();
    a1(); // a second call gives back nothing more
    await settle();
    expect(order).to.deep.equal(['a3']);
    expect(slots.holders('alice')).to.equal(2);
    a2();
    await settle();
    expect(order).to.deep.equal(['a3', 'a4']);
    for (const release of await Promise.all(waiting)) release();
    b1();
    expect([slots.holders('alice'), slots.holders('bob')], 'nothing left held').to.deep.equal([0, 0]);
  });

  it('a waiter whose signal is aborted leaves the queue (rejected with the reason) and takes no slot; one aborted after its grant keeps it', async function () {
    const slots = new KeyedSlots(1);
    const first = await slots.acquire('k');
    const gone = new AbortController();
    const abandoned = slots.acquire('k', gone.signal);
    const next = slots.acquire('k');
    expect(slots.waiters('k')).to.equal(2);
    gone.abort(new Error('connection gone'));
    expect(await rejection(abandoned)).to.equal('connection gone');
    expect(slots.waiters('k')).to.equal(1);
    first();
    const second = await next; // the slot went to the waiter behind the abandoned one
    expect(slots.holders('k')).to.equal(1);
    const late = new AbortController();
    const granted = slots.acquire('k', late.signal);
    second();
    late.abort(new Error('too late'));
    (await granted)();
    expect([slots.holders('k'), slots.waiters('k')]).to.deep.equal([0, 0]);
    const already = new AbortController();
    already.abort(new Error('before asking'));
    expect(await rejection(slots.acquire('k', already.signal))).to.equal('before asking');
  });
});
