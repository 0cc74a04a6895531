/**
 * The worker's GateClient over a fake IPC channel: what it answers when the primary answers, and when the
 * primary is too slow (fail open, except for bans the primary has already announced to this worker).
 */
import { expect } from 'chai';
import { EventEmitter } from 'node:events';
import type { WorkerToPrimary } from '../../server/ipc.js';
import { GateClient } from '../../server/worker/gate-client.js';

const TIMEOUT_MS = 30;
const BANNED_IP = '127.0.0.2';
const OTHER_IP = '127.0.0.3';

/** A primary that answers each question with `answer(question)`, or says nothing while `silent`. */
class FakePrimary extends EventEmitter {
  readonly connected = true;
  silent = false;
  asked = 0;
  answer: (question: Record<string, unknown>) => unknown = () => null;

  send = (message: WorkerToPrimary): boolean => {
    if (message.type !== 'fts:ask') return true;
    this.asked++;
    if (this.silent) return true;
    const data = this.answer(message.question as unknown as Record<string, unknown>);
    setImmediate(() => this.emit('message', { type: 'fts:answer', reqId: message.reqId, data }));
    return true;
  };
}

describe('GateClient (a worker asking the primary about admissions and bans)', function () {
  it('passes the primary’s answers through', async function () {
    const primary = new FakePrimary();
    const gate = new GateClient(primary, TIMEOUT_MS);
    primary.answer = (q) =>
      q['kind'] === 'admit' ? { ok: false, reason: 'per_ip_limit' } : q['kind'] === 'penalty' ? { delayMs: 1500, banned: false } : q['kind'] === 'login' ? { ok: false, reason: 'per_user_limit' } : { banned: false };
    expect(await gate.admit('c1', OTHER_IP)).to.deep.equal({ ok: false, reason: 'per_ip_limit' });
    expect(await gate.penalty(OTHER_IP, 2)).to.deep.equal({ delayMs: 1500, banned: false });
    expect(await gate.banned(OTHER_IP)).to.deep.equal({ banned: false });
    expect(await gate.login('c1', 'alice')).to.deep.equal({ ok: false, reason: 'per_user_limit' });
    expect(primary.asked).to.equal(4);
  });

  it('fails open when the primary does not answer in time and has announced no ban', async function () {
    const primary = new FakePrimary();
    primary.silent = true;
    const gate = new GateClient(primary, TIMEOUT_MS);
    expect(await gate.admit('c1', OTHER_IP)).to.deep.equal({ ok: true });
    expect(await gate.penalty(OTHER_IP, 2)).to.deep.equal({ delayMs: 0, banned: false });
    expect(await gate.banned(OTHER_IP)).to.deep.equal({ banned: false });
    const notices: unknown[] = [];
    const send = primary.send;
    primary.send = (message) => {
      if (message.type === 'fts:conn') notices.push(message);
      return send(message);
    };
    expect(await gate.login('c1', 'alice'), 'a login is let in, as an admission is').to.deep.equal({ ok: true });
    expect(notices, 'and the primary is told so, to count it').to.deep.equal([{ type: 'fts:conn', conn: 'c1', event: 'logged-in', user: 'alice' }]);
  });

  it('keeps a ban the primary announced while the primary is too slow to answer, for that address only', async function () {
    const primary = new FakePrimary();
    const gate = new GateClient(primary, TIMEOUT_MS);
    primary.answer = (q) => (q['kind'] === 'admit' ? { ok: false, reason: 'banned', retryAfterSeconds: 900 } : null);
    expect(await gate.admit('c1', BANNED_IP)).to.deep.equal({ ok: false, reason: 'banned', retryAfterSeconds: 900 });

    primary.silent = true;
    const refused = await gate.admit('c2', BANNED_IP);
    expect(refused.ok).to.equal(false);
    if (!refused.ok) {
      expect(refused.reason).to.equal('banned');
      expect(refused.retryAfterSeconds).to.be.within(899, 900);
    }
    expect((await gate.banned(BANNED_IP)).banned).to.equal(true);
    expect((await gate.penalty(BANNED_IP, 2)).banned).to.equal(true);
    expect(await gate.admit('c3', OTHER_IP)).to.deep.equal({ ok: true });
  });

  it('learns a ban from the penalty that starts it', async function () {
    const primary = new FakePrimary();
    const gate = new GateClient(primary, TIMEOUT_MS);
    primary.answer = () => ({ delayMs: 5000, banned: true, started: true, retryAfterSeconds: 900 });
    expect(await gate.penalty(BANNED_IP, 2)).to.deep.equal({ delayMs: 5000, banned: true });
    primary.silent = true;
    expect((await gate.admit('c1', BANNED_IP)).ok).to.equal(false);
    expect(await gate.admit('c2', OTHER_IP)).to.deep.equal({ ok: true });
  });

  it('forgets a ban the primary says is lifted, and one whose time is over', async function () {
    const primary = new FakePrimary();
    const gate = new GateClient(primary, TIMEOUT_MS);
    primary.answer = () => ({ banned: true, retryAfterSeconds: 900 });
    expect((await gate.banned(BANNED_IP)).banned).to.equal(true);
    primary.answer = () => ({ banned: false }); // fts-admin unban
    expect((await gate.banned(BANNED_IP)).banned).to.equal(false);
    primary.silent = true;
    expect(await gate.admit('c1', BANNED_IP)).to.deep.equal({ ok: true });

    primary.silent = false;
    primary.answer = () => ({ ok: false, reason: 'banned', retryAfterSeconds: 1 });
    expect((await gate.admit('c2', OTHER_IP)).ok).to.equal(false);
    primary.silent = true;
    expect((await gate.admit('c3', OTHER_IP)).ok, 'within the ban').to.equal(false);
    await new Promise((resolve) => setTimeout(resolve, 1100));
    expect(await gate.admit('c4', OTHER_IP), 'after the ban').to.deep.equal({ ok: true });
  });
});
