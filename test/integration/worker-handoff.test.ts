/**
 * A worker that dies while node:cluster's primary is handing it a connection (round-robin scheduling: the
 * primary accepts, sends the handle, and closes its own copy only when the worker acknowledges it). Without
 * server/primary/handoff-guard.ts the client waited forever for a greeting and the primary kept the socket
 * (CLOSE-WAIT once the client gave up) until it stopped: one per worker killed under a stream of connections.
 *
 * To make "a connection is in flight to the worker when it dies" deterministic, the worker is stopped
 * (SIGSTOP) first, as a worker stuck in a long computation would be: the round-robin hands it one connection,
 * which it cannot acknowledge, and nothing more (the primary waits for that acknowledgement first); then it
 * is SIGKILLed.
 */
import { expect } from 'chai';
import { statusJson, waitWorkersReady } from '../helpers/admin-cli.js';
import { releaseAll } from '../helpers/common.js';
import { processAlive, sleep, waitUntil } from '../helpers/lifecycle-util.js';
import { rawAlive, RawClient } from '../helpers/raw-client.js';
import { DEFAULT_USERS, TestServer } from '../helpers/server.js';
import { metric, metricsPortOf } from '../helpers/hardening-proc.js';

describe('worker killed while a connection is being handed to it', function () {
  this.timeout(60_000);

  const servers: TestServer[] = [];
  const raws: RawClient[] = [];
  /** Processes this test stopped with SIGSTOP: killed by pid if a failed test left them stopped. */
  const stopped: number[] = [];

  afterEach(async function () {
    this.timeout(90_000);
    for (const pid of stopped.splice(0)) if (processAlive(pid)) process.kill(pid, 'SIGKILL');
    await releaseAll({ raws, servers });
  });

  it('the connection is closed at once instead of hanging without a greeting; the other connections and new ones are served', async () => {
    const server = await TestServer.start({ workers: 2 });
    servers.push(server);
    await waitWorkersReady(server.adminSocket, 2);
    const [victim] = server.workerPids();
    expect(victim, 'a worker pid').to.be.a('number');

    process.kill(victim!, 'SIGSTOP');
    stopped.push(victim!);
    // Four connections at once: the stopped worker gets exactly one, the other worker greets the rest.
    const conns = await Promise.all([0, 1, 2, 3].map(() => RawClient.connect(server.port)));
    raws.push(...conns);
    await waitUntil('three greetings from the running worker', () => conns.filter((c) => c.receivedByteCount > 0).length >= 3, 20_000);
    await sleep(300);
    const stuck = conns.filter((c) => c.receivedByteCount === 0);
    expect(stuck.length, 'connections handed to the stopped worker').to.equal(1);
    const served = conns.filter((c) => c.receivedByteCount > 0);

    process.kill(victim!, 'SIGKILL');
    await server.waitForLog((l) => l.msg === 'worker died; restarting' && l['workerPid'] === victim, 10_000);
    const outcome = await Promise.race([stuck[0]!.closed.then(() => 'closed by the server'), sleep(10_000).then(() => 'still open after 10 s')]);
    expect(outcome, 'the connection handed to the killed worker').to.equal('closed by the server');
    expect(stuck[0]!.receivedByteCount, 'bytes it received').to.equal(0);
    const notice = await server.waitForLog((l) => l.msg === 'closed connections handed to a worker that died before taking them', 5_000);
    expect(notice['workerPid']).to.equal(victim);
    expect(notice['connections']).to.equal(1);

    // The guard closed nothing else: the running worker's connections still work, and new ones are greeted.
    for (const [i, c] of served.entries()) {
      expect((await c.nextHeader())['status'], `greeting on connection ${i}`).to.equal('hello');
      expect(await rawAlive(c, 100 + i), `connection ${i} on the running worker`).to.equal(true);
    }
    const { client, first } = await RawClient.greet(server.port);
    raws.push(client);
    expect(first['status']).to.equal('hello');
  });

  it('a message to a worker that has just died (EPIPE before its exit is seen) does not crash the primary', async () => {
    const server = await TestServer.start({ workers: 2 });
    servers.push(server);
    await waitWorkersReady(server.adminSocket, 2);
    const [victim] = server.workerPids();
    const primary = server.proc.pid!;
    // Stopped for longer than the metrics endpoint's 5 s refresh: when the primary runs again its timer
    // fires (timers run before I/O is polled) and queries the dead worker before its channel end is read.
    process.kill(primary, 'SIGSTOP');
    stopped.push(primary);
    process.kill(victim!, 'SIGKILL');
    await sleep(5_500);
    process.kill(primary, 'SIGCONT');
    stopped.splice(stopped.indexOf(primary), 1);
    await server.waitForLog((l) => l.msg === 'worker died; restarting' && l['workerPid'] === victim, 10_000);
    const st = await waitWorkersReady(server.adminSocket, 2);
    expect(st.pid, 'the same primary answers').to.equal(primary);
    expect(server.proc.exitCode, 'the primary is running').to.equal(null);
  });
});

describe('a worker with no free file descriptor when a connection is handed to it (EMFILE)', function () {
  this.timeout(120_000);

  const servers: TestServer[] = [];
  const raws: RawClient[] = [];

  afterEach(async function () {
    this.timeout(90_000);
    await releaseAll({ raws, servers });
  });

  it('that connection is closed and counted; the worker keeps getting connections once descriptors are free again (it was out of the rotation for good)', async () => {
    // 64 descriptors for one worker: about 40 sessions fit. The socket of a connection handed over beyond that
    // arrives without its descriptor (MSG_CTRUNC), and node:cluster never offered that worker another one.
    const server = await TestServer.start({ workers: 1, openFiles: 64, args: ['--max-connections-per-ip', '500', '--max-startups', '100:100:200'] });
    servers.push(server);
    expect(server.lines.filter((l) => String(l.msg).startsWith('the open-file limit (64) is below --max-connections (2000) + 100')).map((l) => l.level), 'the start warns of it').to.deep.equal(['warn']);
    const held: RawClient[] = [];
    let refused = 0;
    for (let i = 0; i < 80; i += 5) {
      const batch = await Promise.allSettled([0, 1, 2, 3, 4].map(() => RawClient.login({ port: server.port, timeoutMs: 10_000 }, ALICE.user, ALICE.password)));
      for (const r of batch) {
        if (r.status === 'fulfilled') held.push(r.value);
        else refused++;
      }
    }
    raws.push(...held);
    expect(refused, `logins that failed with ${held.length} sessions open`).to.be.greaterThan(0);
    const port = await metricsPortOf(server);
    const undelivered = await metric(port, 'fts_rejections_total', { reason: 'no_descriptor' });
    expect(undelivered, 'fts_rejections_total{reason="no_descriptor"}').to.be.within(1, refused);
    const lines = server.lines.filter((l) => String(l.msg).startsWith('a connection could not be handed to a worker'));
    expect(lines.length, 'one log line, not one per connection').to.equal(1);
    expect(lines[0]!['level']).to.equal('error');

    for (const c of held) c.close();
    await waitUntil('the worker to have closed the sessions', async () => ((await sessionsCount(server)) === 0 ? true : undefined), 20_000, 200);
    for (let i = 0; i < 5; i++) {
      const fresh = await RawClient.login({ port: server.port, timeoutMs: 5_000 }, ALICE.user, ALICE.password);
      raws.push(fresh);
      expect(await rawAlive(fresh, 200 + i), `fresh session ${i + 1}`).to.equal(true);
      fresh.close();
    }
  });
});

async function sessionsCount(server: TestServer): Promise<number> {
  return (await statusJson(server.adminSocket)).sessions;
}

const ALICE = DEFAULT_USERS[0]!;
