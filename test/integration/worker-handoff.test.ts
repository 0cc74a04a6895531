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
import { waitWorkersReady } from '../helpers/admin-cli.js';
import { releaseAll } from '../helpers/common.js';
import { processAlive, sleep, waitUntil } from '../helpers/lifecycle-util.js';
import { rawAlive, RawClient } from '../helpers/raw-client.js';
import { TestServer } from '../helpers/server.js';

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
