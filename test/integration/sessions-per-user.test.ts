/**
 * --max-sessions-per-user: a user's logged-in connections are counted by the primary across the workers;
 * a login over the limit gets the fatal TOO_MANY_CONNECTIONS (not a failed login: no penalty), other users
 * are not affected, and a session that ends frees its slot.
 */
import { expect } from 'chai';
import { FtsClient, FtsError } from '../../client/index.js';
import { describeRun, runCli } from '../helpers/cli.js';
import { metricsPortOf, scrape } from '../helpers/hardening-proc.js';
import { waitUntil } from '../helpers/lifecycle-util.js';
import { DEFAULT_USERS, TestServer } from '../helpers/server.js';

const [ALICE, BOB] = [DEFAULT_USERS[0]!, DEFAULT_USERS[1]!];

describe('sessions per user (--max-sessions-per-user)', function () {
  this.timeout(60_000);
  let server: TestServer;
  const clients: FtsClient[] = [];

  before(async function () {
    // A ban threshold of 2: were a refusal a penalty (a failed login is 2 points), the address would be banned.
    server = await TestServer.start({ workers: 2, args: ['--max-sessions-per-user', '2', '--ban-threshold', '2'] });
  });

  after(async function () {
    for (const c of clients.splice(0)) c.close();
    await server?.stop();
  });

  async function login(who = ALICE): Promise<FtsClient> {
    const c = await FtsClient.connect({ host: '127.0.0.1', port: server.port });
    clients.push(c);
    await c.auth(who.user, who.password);
    return c;
  }

  async function refusal(who = ALICE): Promise<FtsError> {
    try {
      await login(who);
    } catch (err) {
      expect(err).to.be.instanceOf(FtsError);
      return err as FtsError;
    }
    throw new Error('the login was let in');
  }

  it('the third session of a user is refused on every worker, with TOO_MANY_CONNECTIONS; other users log in; a session that ends frees a slot', async function () {
    // New connections are spread over both workers: the count is the primary's, not a worker's.
    const first = await login();
    await login();
    // Until both workers have refused one (the cluster spreads connections, not strictly in turn); at least 3.
    const refusedBy = (): Set<unknown> => new Set(server.lines.filter((l) => l['event'] === 'auth' && l['code'] === 'TOO_MANY_CONNECTIONS').map((l) => l['worker']));
    for (let i = 0; i < 12 && (i < 3 || refusedBy().size < 2); i++) {
      const err = await refusal();
      expect([err.code, err.fatal]).to.deep.equal(['TOO_MANY_CONNECTIONS', true]);
      expect(err.message).to.include('--max-sessions-per-user');
    }
    expect(refusedBy().size, 'workers that refused a third session').to.equal(2);
    await login(BOB);

    const cli = await runCli(['ls'], { port: server.port, user: ALICE.user, password: ALICE.password });
    expect(cli.code, describeRun(cli)).to.equal(1);
    expect(cli.stderr, describeRun(cli)).to.match(/TOO_MANY_CONNECTIONS\)\n$/);

    await first.quit();
    const next = await waitUntil('a slot to come free', async () => (await login().catch(() => null)) ?? false, 10_000, 100);
    await next.noop();

    const text = await scrape(await metricsPortOf(server));
    const line = text.split('\n').find((l) => l.startsWith('fts_rejections_total{reason="per_user_limit"} '));
    expect(Number(line?.split(' ')[1]), 'fts_rejections_total{reason="per_user_limit"}').to.be.at.least(4);
    // Refused for being busy, not for a bad password: no penalty (no ban at a threshold of 2), and not a
    // failed login in the metrics either.
    expect(server.lines.filter((l) => l['event'] === 'ban')).to.deep.equal([]);
    const failures = text.split('\n').find((l) => l.startsWith('fts_auth_attempts_total{result="failure"} '));
    expect(Number(failures?.split(' ')[1]), 'fts_auth_attempts_total{result="failure"}').to.equal(0);
  });
});
