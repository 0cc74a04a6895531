/**
 * The primary's Gatekeeper as pure bookkeeping: time is injected (`now`), and so is the random source of
 * MaxStartups' random early drop, so every case is deterministic.
 */
import { expect } from 'chai';
import { Gatekeeper, type GateLimits } from '../../server/primary/gatekeeper.js';

const T0 = 1_700_000_000_000;

function limits(over: Partial<GateLimits> = {}): GateLimits {
  return {
    maxConnections: 1000,
    maxPerIp: 1000,
    maxSessionsPerUser: 0,
    startups: { start: 1000, rate: 30, full: 1000 },
    banThreshold: 20,
    banWindowMs: 600_000,
    banDurationMs: 900_000,
    exempt: () => false,
    ...over,
  };
}

/** A random source that returns the given values in turn (then repeats the last one). */
function scripted(...values: number[]): { random: () => number; calls: () => number } {
  let i = 0;
  return {
    random: () => {
      const v = values[Math.min(i, values.length - 1)];
      i++;
      if (v === undefined) throw new Error('scripted random needs at least one value');
      return v;
    },
    calls: () => i,
  };
}

/** A random source that must not be consulted. */
const noRandom = (): number => {
  throw new Error('random() must not be called here');
};

describe('Gatekeeper (unit)', function () {
  describe('connection limits', function () {
    it('admits up to maxConnections in total and refuses the next with max_connections', function () {
      const g = new Gatekeeper(limits({ maxConnections: 3 }), noRandom);
      for (let i = 0; i < 3; i++) expect(g.admit(`c${i}`, `10.0.0.${i}`, 1, T0)).to.deep.equal({ ok: true });
      expect(g.connections).to.equal(3);
      expect(g.admit('c3', '10.0.0.9', 1, T0)).to.deep.equal({ ok: false, reason: 'max_connections' });
      expect(g.connections, 'a refused connection is not counted').to.equal(3);
    });

    it('admits up to maxPerIp from one address; other addresses are unaffected', function () {
      const g = new Gatekeeper(limits({ maxPerIp: 2 }), noRandom);
      expect(g.admit('a1', '10.0.0.1', 1, T0).ok).to.equal(true);
      expect(g.admit('a2', '10.0.0.1', 2, T0).ok).to.equal(true);
      expect(g.admit('a3', '10.0.0.1', 1, T0)).to.deep.equal({ ok: false, reason: 'per_ip_limit' });
      expect(g.admit('b1', '10.0.0.2', 1, T0).ok, 'another address').to.equal(true);
      expect(g.connections).to.equal(3);
    });

    it('closing a connection frees both its total and its per-IP slot', function () {
      const g = new Gatekeeper(limits({ maxConnections: 2, maxPerIp: 1 }), noRandom);
      expect(g.admit('a', '10.0.0.1', 1, T0).ok).to.equal(true);
      expect(g.admit('b', '10.0.0.2', 1, T0).ok).to.equal(true);
      expect(g.admit('c', '10.0.0.3', 1, T0)).to.deep.equal({ ok: false, reason: 'max_connections' });
      g.closed('a');
      expect(g.connections).to.equal(1);
      expect(g.admit('a2', '10.0.0.1', 1, T0).ok, 'the per-IP slot of 10.0.0.1 is free again').to.equal(true);
      g.closed('b');
      expect(g.admit('c2', '10.0.0.3', 1, T0).ok, 'a total slot is free again').to.equal(true);
    });

    it('closing is idempotent and ignores unknown ids', function () {
      const g = new Gatekeeper(limits({ maxPerIp: 1 }), noRandom);
      expect(g.admit('a', '10.0.0.1', 1, T0).ok).to.equal(true);
      g.closed('a');
      g.closed('a');
      g.closed('never-admitted');
      expect(g.connections).to.equal(0);
      expect(g.admit('a2', '10.0.0.1', 1, T0).ok).to.equal(true);
      expect(g.admit('a3', '10.0.0.1', 1, T0)).to.deep.equal({ ok: false, reason: 'per_ip_limit' }, 'a double close must not free a slot twice');
    });

    it('workerGone frees exactly the connections of that worker', function () {
      const g = new Gatekeeper(limits({ maxConnections: 4, maxPerIp: 2 }), noRandom);
      expect(g.admit('w1a', '10.0.0.1', 1, T0).ok).to.equal(true);
      expect(g.admit('w1b', '10.0.0.1', 1, T0).ok).to.equal(true);
      expect(g.admit('w2a', '10.0.0.2', 2, T0).ok).to.equal(true);
      expect(g.admit('w2b', '10.0.0.2', 2, T0).ok).to.equal(true);
      expect(g.admit('x', '10.0.0.3', 2, T0)).to.deep.equal({ ok: false, reason: 'max_connections' });
      g.workerGone(1);
      expect(g.connections).to.equal(2);
      expect(g.admit('n1', '10.0.0.1', 3, T0).ok).to.equal(true);
      expect(g.admit('n2', '10.0.0.1', 3, T0).ok).to.equal(true);
      expect(g.admit('n3', '10.0.0.2', 3, T0)).to.deep.equal({ ok: false, reason: 'max_connections' }, "worker 2's connections are still counted");
      g.workerGone(2);
      expect(g.admit('n4', '10.0.0.2', 3, T0).ok).to.equal(true);
      expect(g.admit('n5', '10.0.0.2', 3, T0).ok, "10.0.0.2's per-IP slots were freed too").to.equal(true);
      expect(g.connections).to.equal(4);
    });

    it('workerGone also frees the unauthenticated (MaxStartups) budget of its connections', function () {
      const g = new Gatekeeper(limits({ startups: { start: 2, rate: 100, full: 2 } }), noRandom);
      expect(g.admit('a', '10.0.0.1', 1, T0).ok).to.equal(true);
      expect(g.admit('b', '10.0.0.1', 1, T0).ok).to.equal(true);
      expect(g.admit('c', '10.0.0.1', 2, T0)).to.deep.equal({ ok: false, reason: 'startups' });
      g.workerGone(1);
      expect(g.admit('d', '10.0.0.1', 2, T0).ok).to.equal(true);
      expect(g.admit('e', '10.0.0.1', 2, T0).ok).to.equal(true);
    });
  });

  describe('MaxStartups (random early drop of unauthenticated connections)', function () {
    it('below start every connection is admitted without consulting random()', function () {
      const g = new Gatekeeper(limits({ startups: { start: 5, rate: 100, full: 10 } }), noRandom);
      for (let i = 0; i < 5; i++) expect(g.admit(`c${i}`, `10.0.1.${i}`, 1, T0).ok).to.equal(true);
    });

    it('at start the drop probability is rate%', function () {
      // start 2, rate 30, full 12: with 2 unauthenticated, p = 0.30.
      const make = (r: number): Gatekeeper => {
        const g = new Gatekeeper(limits({ startups: { start: 2, rate: 30, full: 12 } }), () => r);
        g.admit('a', '10.0.0.1', 1, T0);
        g.admit('b', '10.0.0.2', 1, T0);
        return g;
      };
      expect(make(0.29).admit('c', '10.0.0.3', 1, T0)).to.deep.equal({ ok: false, reason: 'startups' });
      expect(make(0.31).admit('c', '10.0.0.3', 1, T0)).to.deep.equal({ ok: true });
    });

    it('between start and full the probability grows linearly from rate% to 100%', function () {
      // start 2, rate 30, full 12: with n unauthenticated, p = 0.3 + 0.7 * (n - 2) / 10.
      for (const n of [2, 4, 7, 9, 11]) {
        const p = 0.3 + (0.7 * (n - 2)) / 10;
        for (const [r, admitted] of [
          [p - 0.01, false],
          [p + 0.01, true],
        ] as const) {
          let value = 0; // below-start admissions do not call random; later ones are scripted
          const g = new Gatekeeper(limits({ startups: { start: 2, rate: 30, full: 12 } }), () => value);
          for (let i = 0; i < n; i++) {
            value = 0.999_999; // always admit while filling up (p < 1 before full)
            expect(g.admit(`f${i}`, `10.0.2.${i}`, 1, T0).ok, `filling ${i} of ${n}`).to.equal(true);
          }
          value = r;
          expect(g.admit('probe', '10.0.3.1', 1, T0).ok, `n=${n} p=${p.toFixed(2)} r=${r.toFixed(3)}`).to.equal(admitted);
        }
      }
    });

    it('rate 100 drops deterministically from start on; rate 0 never drops before full', function () {
      const hard = new Gatekeeper(limits({ startups: { start: 1, rate: 100, full: 5 } }), () => 0.999_999);
      expect(hard.admit('a', '10.0.0.1', 1, T0).ok).to.equal(true);
      expect(hard.admit('b', '10.0.0.2', 1, T0)).to.deep.equal({ ok: false, reason: 'startups' });
      const soft = new Gatekeeper(limits({ startups: { start: 1, rate: 0, full: 3 } }), () => 0);
      expect(soft.admit('a', '10.0.0.1', 1, T0).ok).to.equal(true);
      expect(soft.admit('b', '10.0.0.2', 1, T0).ok, 'p = 0 at start with rate 0').to.equal(true);
    });

    it('at full every unauthenticated connection is refused, whatever random() says', function () {
      const { random, calls } = scripted(0.999_999);
      const g = new Gatekeeper(limits({ startups: { start: 1, rate: 0, full: 3 } }), random);
      for (let i = 0; i < 3; i++) expect(g.admit(`c${i}`, `10.0.0.${i}`, 1, T0).ok).to.equal(true);
      const before = calls();
      for (let i = 0; i < 5; i++) expect(g.admit(`x${i}`, `10.0.9.${i}`, 1, T0)).to.deep.equal({ ok: false, reason: 'startups' });
      expect(calls(), 'at full the answer does not depend on chance').to.equal(before);
    });

    it('authenticated connections do not count towards MaxStartups', function () {
      const g = new Gatekeeper(limits({ startups: { start: 2, rate: 100, full: 2 } }), noRandom);
      expect(g.admit('a', '10.0.0.1', 1, T0).ok).to.equal(true);
      expect(g.admit('b', '10.0.0.1', 1, T0).ok).to.equal(true);
      expect(g.admit('c', '10.0.0.1', 1, T0)).to.deep.equal({ ok: false, reason: 'startups' });
      g.login('a', 'alice');
      g.login('a', 'alice'); // twice: must not free two slots
      g.login('nobody', 'alice');
      expect(g.admit('d', '10.0.0.1', 1, T0).ok).to.equal(true);
      expect(g.admit('e', '10.0.0.1', 1, T0)).to.deep.equal({ ok: false, reason: 'startups' });
      g.login('b', 'bob');
      g.closed('a'); // closing an authenticated connection does not touch the unauthenticated count
      expect(g.admit('f', '10.0.0.1', 1, T0).ok).to.equal(true);
      expect(g.admit('g', '10.0.0.1', 1, T0)).to.deep.equal({ ok: false, reason: 'startups' });
      g.closed('d'); // an unauthenticated one closing frees a startup slot
      expect(g.admit('h', '10.0.0.1', 1, T0).ok).to.equal(true);
    });
  });

  describe('sessions per user (--max-sessions-per-user)', function () {
    it('counts each user\'s logged-in connections across workers; a login over the limit is refused and stays unauthenticated; a close frees a slot', function () {
      const g = new Gatekeeper(limits({ maxSessionsPerUser: 2 }), noRandom);
      for (const [id, worker] of [['a1', 1], ['a2', 2], ['a3', 1], ['b1', 2]] as const) expect(g.admit(id, '10.0.0.1', worker, T0).ok).to.equal(true);
      expect(g.login('a1', 'alice')).to.deep.equal({ ok: true });
      expect(g.login('a2', 'alice')).to.deep.equal({ ok: true });
      expect(g.login('a3', 'alice')).to.deep.equal({ ok: false, reason: 'per_user_limit' });
      expect(g.login('b1', 'bob'), 'another user has slots of their own').to.deep.equal({ ok: true });
      expect([g.sessionsOf('alice'), g.sessionsOf('bob')]).to.deep.equal([2, 1]);
      g.closed('a3'); // the refused one closes: it was never a session
      expect(g.sessionsOf('alice')).to.equal(2);
      g.closed('a1');
      expect(g.sessionsOf('alice')).to.equal(1);
      expect(g.admit('a4', '10.0.0.1', 1, T0).ok).to.equal(true);
      expect(g.login('a4', 'alice')).to.deep.equal({ ok: true });
      g.workerGone(2); // a2 and b1 die with their worker
      expect([g.sessionsOf('alice'), g.sessionsOf('bob')]).to.deep.equal([1, 0]);
    });

    it('a login the worker let in without asking (no answer in time) is counted even over the limit; a refused one stays unauthenticated', function () {
      const g = new Gatekeeper(limits({ maxSessionsPerUser: 1, startups: { start: 2, rate: 100, full: 2 } }), noRandom);
      expect(g.admit('a1', '10.0.0.1', 1, T0).ok).to.equal(true);
      expect(g.admit('a2', '10.0.0.1', 1, T0).ok).to.equal(true);
      expect(g.login('a1', 'alice').ok).to.equal(true);
      expect(g.login('a2', 'alice')).to.deep.equal({ ok: false, reason: 'per_user_limit' });
      // a2 still holds one of the two unauthenticated slots (MaxStartups full at 2 with the next one).
      expect(g.admit('x', '10.0.0.2', 1, T0).ok).to.equal(true);
      expect(g.admit('y', '10.0.0.3', 1, T0)).to.deep.equal({ ok: false, reason: 'startups' });
      // Its worker did let it in (the refusal came too late): counted, and its startup slot given back.
      expect(g.login('a2', 'alice', true)).to.deep.equal({ ok: true });
      expect(g.sessionsOf('alice')).to.equal(2);
      expect(g.admit('y', '10.0.0.3', 1, T0).ok).to.equal(true);
      g.closed('a2');
      expect(g.sessionsOf('alice')).to.equal(1);
    });

    it('0 is no limit; a connection the gatekeeper never admitted (its worker failed open) logs in uncounted', function () {
      const g = new Gatekeeper(limits(), noRandom);
      for (let i = 0; i < 50; i++) {
        expect(g.admit(`c${i}`, '10.0.0.1', 1, T0).ok).to.equal(true);
        expect(g.login(`c${i}`, 'alice').ok).to.equal(true);
      }
      expect(g.sessionsOf('alice')).to.equal(50);
      const capped = new Gatekeeper(limits({ maxSessionsPerUser: 1 }), noRandom);
      expect(capped.login('unknown', 'alice')).to.deep.equal({ ok: true });
      expect(capped.sessionsOf('alice')).to.equal(0);
    });
  });

  describe('penalties, bans and delays', function () {
    it('penalties accumulate within the window and expire after it', function () {
      const g = new Gatekeeper(limits({ banThreshold: 100, banWindowMs: 10_000 }), noRandom);
      expect(g.penalty('10.0.0.1', 2, T0).delayMs).to.equal(1_000);
      expect(g.penalty('10.0.0.1', 2, T0 + 1_000).delayMs).to.equal(2_000);
      expect(g.penalty('10.0.0.1', 1, T0 + 9_000).delayMs, 'score 5').to.equal(2_500);
      // At T0 + 10 001 the points of T0 are out of the window: 2 + 1 + 3 = 6.
      expect(g.penalty('10.0.0.1', 3, T0 + 10_001).delayMs).to.equal(3_000);
      // Far later everything has expired: only the new points count.
      expect(g.penalty('10.0.0.1', 2, T0 + 60_000).delayMs).to.equal(1_000);
      expect(g.penalty('10.0.0.9', 2, T0 + 60_000).delayMs, 'scores are per address').to.equal(1_000);
    });

    it('bans an address when its score reaches the threshold, and only that address', function () {
      const g = new Gatekeeper(limits({ banThreshold: 6, banWindowMs: 60_000, banDurationMs: 30_000 }), noRandom);
      expect(g.penalty('10.0.0.1', 2, T0).banned).to.equal(false);
      expect(g.penalty('10.0.0.1', 2, T0 + 100).banned).to.equal(false);
      expect(g.admit('pre', '10.0.0.1', 1, T0 + 200).ok, 'not banned below the threshold').to.equal(true);
      const third = g.penalty('10.0.0.1', 2, T0 + 300);
      expect(third.banned, 'score 6 >= threshold 6').to.equal(true);
      expect(g.activeBans(T0 + 300)).to.equal(1);
      const refused = g.admit('x', '10.0.0.1', 1, T0 + 1_000);
      expect(refused).to.deep.equal({ ok: false, reason: 'banned', retryAfterSeconds: 30 });
      expect(g.admit('y', '10.0.0.2', 1, T0 + 1_000).ok, 'another address').to.equal(true);
    });

    it('a ban is checked before every other limit and reports the seconds left', function () {
      const g = new Gatekeeper(limits({ maxConnections: 1, banThreshold: 3, banDurationMs: 10_000 }), noRandom);
      g.admit('fill', '10.0.0.2', 1, T0);
      g.penalty('10.0.0.1', 3, T0);
      expect(g.admit('x', '10.0.0.1', 1, T0 + 2_500)).to.deep.equal({ ok: false, reason: 'banned', retryAfterSeconds: 8 });
      expect(g.admit('x', '10.0.0.1', 1, T0 + 9_999)).to.deep.equal({ ok: false, reason: 'banned', retryAfterSeconds: 1 });
    });

    it('a ban expires after its duration', function () {
      const g = new Gatekeeper(limits({ banThreshold: 4, banWindowMs: 60_000, banDurationMs: 30_000 }), noRandom);
      g.penalty('10.0.0.1', 4, T0);
      expect(g.admit('a', '10.0.0.1', 1, T0 + 29_999).ok).to.equal(false);
      expect(g.activeBans(T0 + 29_999)).to.equal(1);
      expect(g.activeBans(T0 + 30_000)).to.equal(0);
      expect(g.admit('b', '10.0.0.1', 1, T0 + 30_000)).to.deep.equal({ ok: true });
    });

    it('the score that caused a ban does not carry over: after the ban a fresh threshold applies', function () {
      const g = new Gatekeeper(limits({ banThreshold: 4, banWindowMs: 600_000, banDurationMs: 1_000 }), noRandom);
      g.penalty('10.0.0.1', 4, T0);
      expect(g.admit('a', '10.0.0.1', 1, T0 + 2_000).ok).to.equal(true);
      expect(g.penalty('10.0.0.1', 2, T0 + 2_000).banned, 'a single later failure does not re-ban at once').to.equal(false);
      expect(g.penalty('10.0.0.1', 2, T0 + 2_100).banned).to.equal(true);
    });

    it('a ban starts once (started only then); penalties during it are not added up', function () {
      const g = new Gatekeeper(limits({ banThreshold: 4, banWindowMs: 60_000, banDurationMs: 30_000 }), noRandom);
      expect(g.penalty('10.0.0.1', 4, T0)).to.deep.include({ banned: true, started: true });
      for (let i = 1; i <= 1_000; i++) expect(g.penalty('10.0.0.1', 4, T0 + i).started, `penalty ${i} during the ban`).to.equal(false);
      expect(g.admit('a', '10.0.0.1', 1, T0 + 30_000).ok, 'the ban did not grow').to.equal(true);
      expect(g.penalty('10.0.0.1', 2, T0 + 30_000).banned, 'a fresh count after the ban').to.equal(false);
    });

    it('a flood of penalties (bans off) costs O(1) each and still expires by the window', function () {
      this.timeout(20_000); // quadratic bookkeeping would take minutes here; the O(1) one takes well under a second
      const g = new Gatekeeper(limits({ banThreshold: 0, banWindowMs: 10_000 }), noRandom);
      for (let i = 0; i < 300_000; i++) g.penalty('10.0.0.1', 1, T0 + Math.floor(i / 100));
      // 300 000 points over 3 s: all within the window, so the delay is at its cap; 20 s later all expired.
      expect(g.penalty('10.0.0.1', 1, T0 + 3_000).delayMs).to.equal(5_000);
      expect(g.penalty('10.0.0.1', 1, T0 + 23_000).delayMs, 'only the new point counts').to.equal(500);
    });

    it('threshold 0 disables bans (delays still apply)', function () {
      const g = new Gatekeeper(limits({ banThreshold: 0 }), noRandom);
      for (let i = 0; i < 50; i++) {
        const r = g.penalty('10.0.0.1', 3, T0 + i);
        expect(r.banned).to.equal(false);
      }
      expect(g.activeBans(T0 + 100)).to.equal(0);
      expect(g.admit('a', '10.0.0.1', 1, T0 + 100)).to.deep.equal({ ok: true });
      expect(g.penalty('10.0.0.1', 2, T0 + 101).delayMs).to.equal(5_000);
    });

    it('an exempt address earns no points: never banned, never scored, each failure delayed by a fixed 1 s', function () {
      const g = new Gatekeeper(limits({ banThreshold: 4, exempt: (ip) => ip === '10.0.0.9' }), noRandom);
      for (let i = 0; i < 10; i++) expect(g.penalty('10.0.0.9', 2, T0 + i)).to.deep.equal({ delayMs: 1_000, banned: false, started: false });
      expect(g.penalty('10.0.0.9', 0, T0 + 11).delayMs, 'no points, no delay').to.equal(0);
      expect(g.scored(T0 + 12)).to.deep.equal([]);
      expect(g.admit('a', '10.0.0.9', 1, T0 + 12)).to.deep.equal({ ok: true });
      expect(g.penalty('10.0.0.8', 2, T0).banned, 'others are scored as before').to.equal(false);
      expect(g.penalty('10.0.0.8', 2, T0 + 1).banned).to.equal(true);
    });

    it('the delay is 500 ms per point of score, capped at 5 s', function () {
      const g = new Gatekeeper(limits({ banThreshold: 0 }), noRandom);
      const delays: number[] = [];
      for (let i = 0; i < 8; i++) delays.push(g.penalty('10.0.0.1', 2, T0 + i).delayMs);
      expect(delays).to.deep.equal([1_000, 2_000, 3_000, 4_000, 5_000, 5_000, 5_000, 5_000]);
      expect(g.penalty('10.0.0.2', 1, T0).delayMs).to.equal(500);
      expect(g.penalty('10.0.0.3', 1_000, T0).delayMs, 'a huge score is still capped').to.equal(5_000);
    });

    it('the delay grows with the score across failures that lead to a ban', function () {
      const g = new Gatekeeper(limits({ banThreshold: 6 }), noRandom);
      const a = g.penalty('10.0.0.1', 2, T0);
      const b = g.penalty('10.0.0.1', 2, T0 + 1);
      const c = g.penalty('10.0.0.1', 2, T0 + 2);
      expect([a.delayMs, b.delayMs, c.delayMs]).to.deep.equal([1_000, 2_000, 3_000]);
      expect([a.banned, b.banned, c.banned]).to.deep.equal([false, false, true]);
    });

    it('penalty() on an address that is already banned reports banned: true', function () {
      // The method's contract: "Returns the delay … and whether the address is now banned." A penalty
      // from a connection that was already open when the ban started is still from a banned address.
      const g = new Gatekeeper(limits({ banThreshold: 6, banDurationMs: 60_000 }), noRandom);
      g.penalty('10.0.0.1', 6, T0);
      expect(g.activeBans(T0 + 1_000)).to.equal(1);
      expect(g.penalty('10.0.0.1', 2, T0 + 1_000).banned, 'the address is banned at T0+1s').to.equal(true);
      expect(g.penalty('10.0.0.1', 1, T0 + 60_000).banned, 'and no longer once the ban is over').to.equal(false);
    });

    it('bans() lists the banned addresses, longest left first; unban() lifts a ban with its points, or forgets the points of an address not banned', function () {
      const g = new Gatekeeper(limits({ banThreshold: 4, banDurationMs: 60_000 }), noRandom);
      g.penalty('10.0.0.1', 4, T0);
      g.penalty('2001:db8::1', 4, T0 + 10_000);
      g.penalty('10.0.0.3', 2, T0); // points, no ban
      expect(g.bans(T0 + 10_000)).to.deep.equal([
        { address: '2001:db8::1', secondsLeft: 60 },
        { address: '10.0.0.1', secondsLeft: 50 },
      ]);
      expect(g.unban('10.0.0.3', T0 + 10_000), 'not banned, with points').to.deep.equal({ banned: false, points: 2 });
      expect(g.penalty('10.0.0.3', 2, T0 + 10_001).delayMs, 'its next failure starts from nothing').to.equal(1_000);
      expect(g.unban('10.0.0.9', T0 + 10_000), 'unknown').to.equal(null);
      expect(g.unban('10.0.0.1', T0 + 10_000)).to.deep.equal({ banned: true, points: 0 });
      expect(g.admit('a', '10.0.0.1', 1, T0 + 10_000).ok).to.equal(true);
      expect(g.penalty('10.0.0.1', 2, T0 + 10_001).banned, 'its points went with the ban').to.equal(false);
      expect(g.bans(T0 + 10_001).map((b) => b.address)).to.deep.equal(['2001:db8::1']);
      expect(g.unban('2001:db8::1', T0 + 70_000), 'expired').to.equal(null);
      expect(g.bans(T0 + 70_000)).to.deep.equal([]);
    });

    it('scored() lists banned addresses and those with points in the window: banned first, then most points; points expire with the window', function () {
      const g = new Gatekeeper(limits({ banThreshold: 6, banWindowMs: 10_000, banDurationMs: 60_000 }), noRandom);
      g.penalty('10.0.0.1', 6, T0); // banned, points reset
      g.penalty('10.0.0.2', 2, T0);
      g.penalty('10.0.0.3', 3, T0 + 5_000);
      g.penalty('10.0.0.2', 2, T0 + 5_000);
      g.penalty('2001:db8::1', 3, T0 + 5_000);
      expect(g.scored(T0 + 5_000)).to.deep.equal([
        { address: '10.0.0.1', secondsLeft: 55, points: 0 },
        { address: '10.0.0.2', secondsLeft: 0, points: 4 },
        { address: '10.0.0.3', secondsLeft: 0, points: 3 },
        { address: '2001:db8::1', secondsLeft: 0, points: 3 },
      ]);
      // T0's points leave the window at T0 + 10 s; the banned address keeps its ban, with no points.
      expect(g.scored(T0 + 10_000)).to.deep.equal([
        { address: '10.0.0.1', secondsLeft: 50, points: 0 },
        { address: '10.0.0.3', secondsLeft: 0, points: 3 },
        { address: '2001:db8::1', secondsLeft: 0, points: 3 },
        { address: '10.0.0.2', secondsLeft: 0, points: 2 },
      ]);
      expect(g.bans(T0 + 10_000), 'bans() still lists only the banned').to.deep.equal([{ address: '10.0.0.1', secondsLeft: 50 }]);
      expect(g.scored(T0 + 60_000), 'everything expired').to.deep.equal([]);
    });

    it('prune forgets expired scores and expired bans, keeps live ones', function () {
      const g = new Gatekeeper(limits({ banThreshold: 4, banWindowMs: 10_000, banDurationMs: 20_000 }), noRandom);
      g.penalty('10.0.0.1', 1, T0); // score only
      g.penalty('10.0.0.2', 4, T0); // banned until T0 + 20 s
      g.penalty('10.0.0.3', 1, T0 + 9_000); // score, still fresh at T0 + 10 s
      g.prune(T0 + 10_001);
      expect(g.activeBans(T0 + 10_001)).to.equal(1);
      // 10.0.0.1 was forgotten: one more point gives score 1 (delay 500), not 2.
      expect(g.penalty('10.0.0.1', 1, T0 + 10_002).delayMs).to.equal(500);
      // 10.0.0.3 is still within its window: 1 + 1 = 2 (delay 1000).
      expect(g.penalty('10.0.0.3', 1, T0 + 10_002).delayMs).to.equal(1_000);
      g.prune(T0 + 20_001);
      expect(g.activeBans(T0 + 20_001)).to.equal(0);
      expect(g.admit('a', '10.0.0.2', 1, T0 + 20_001).ok).to.equal(true);
    });

    it('prune bounds the map: 10 000 one-off offenders are all forgotten once their window passes', function () {
      const g = new Gatekeeper(limits({ banThreshold: 3, banWindowMs: 1_000, banDurationMs: 1_000 }), noRandom);
      for (let i = 0; i < 10_000; i++) g.penalty(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, i % 2 === 0 ? 1 : 3, T0);
      expect(g.activeBans(T0)).to.equal(5_000);
      g.prune(T0 + 2_000);
      expect(g.activeBans(T0 + 2_000)).to.equal(0);
      // Observable effect of forgetting: re-offending starts from zero (delay of 1 point = 500 ms).
      expect(g.penalty('10.0.0.1', 1, T0 + 2_000).delayMs).to.equal(500);
      // And the internal map really shrank (white-box: the scores map must not keep dead entries).
      const scores = (g as unknown as { scores: Map<string, unknown> }).scores;
      expect(scores.size).to.equal(1);
    });
  });
});
