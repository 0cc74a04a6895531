/**
 * `fts-admin restart-workers` when workers fail during it, against a real fts-server: an old worker that
 * dies before its turn, a replacement that dies (or never listens) before it listens, and an old worker
 * that hangs instead of draining. Replacements are held in their "forked, not listening" state with
 * WorkerHold, so each failure happens at a known point of the restart.
 */
import { expect } from 'chai';
import { runAdmin, startAdmin, statusJson, waitWorkersReady, type AdminRun } from '../helpers/admin-cli.js';
import { continueStopped, releaseAll } from '../helpers/common.js';
import { processAlive, waitUntil } from '../helpers/lifecycle-util.js';
import { TestServer, type LogLine } from '../helpers/server.js';
import { WorkerHold } from '../helpers/worker-hold.js';

function lines(text: string): string[] {
  return text.split('\n').filter((l) => l.trim() !== '');
}

/** Pids of every worker the server has forked, in order. */
function forked(server: TestServer): number[] {
  return server.lines.filter((l) => l.msg === 'worker started').map((l) => Number(l['workerPid']));
}

function about(pid: number, msg: string): (l: LogLine) => boolean {
  return (l) => l.msg === msg && l['workerPid'] === pid;
}

describe('restart-workers when workers fail (end to end)', function () {
  this.timeout(90_000);

  const servers: TestServer[] = [];
  const admins: AdminRun[] = [];
  const holds: WorkerHold[] = [];
  /** Worker pids a test stopped with SIGSTOP: continued before the servers are stopped. */
  const stopped = new Set<number>();
  const cleanups: Array<() => Promise<void>> = [];

  afterEach(async function () {
    this.timeout(90_000);
    continueStopped(stopped);
    for (const h of holds.splice(0)) {
      await h.release();
      cleanups.push(() => h.dispose());
    }
    await releaseAll({ servers, admins, cleanups });
  });

  async function startServer(workers: number, grace: number): Promise<{ server: TestServer; hold: WorkerHold }> {
    const hold = await WorkerHold.create();
    holds.push(hold);
    const server = await TestServer.start({ workers, args: ['--grace', String(grace)], env: hold.env });
    servers.push(server);
    await waitWorkersReady(server.adminSocket, workers);
    return { server, hold };
  }

  /** Waits for the next worker the server forks after the `known` ones. */
  async function nextForked(server: TestServer, known: number): Promise<number> {
    return waitUntil(`worker number ${known + 1} to be forked`, () => forked(server)[known], 15_000, 10);
  }

  it('an old worker that dies before its turn is skipped: exit 0, and the pool keeps --workers workers', async () => {
    const { server, hold } = await startServer(2, 2);
    const [first, second] = server.workerPids() as [number, number];
    await hold.hold();
    const admin = startAdmin(server.adminSocket, ['restart-workers'], 60_000);
    admins.push(admin);
    // The first worker's replacement is starting (held); the second worker dies before its turn.
    const replacement = await nextForked(server, 2);
    process.kill(second, 'SIGKILL');
    await server.waitForLog(about(second, 'worker died; restarting'), 10_000);
    const respawned = await nextForked(server, 3);
    await hold.release();

    const r = await admin.done;
    expect(r.code, `restart-workers: ${r.stderr}`).to.equal(0);
    expect(lines(r.stdout), r.stdout).to.deep.equal([`worker ${first} replaced by ${replacement}`, 'all workers restarted']);
    const st = await waitWorkersReady(server.adminSocket, 2);
    expect(st.workers.map((w) => w.pid).sort(), 'the replacement and the crash respawn').to.deep.equal([replacement, respawned].sort());
    expect(forked(server), 'no other worker was forked').to.have.length(4);
    expect((await statusJson(server.adminSocket)).workers, 'still 2 workers').to.have.length(2);
  });

  it('a replacement that dies before it listens: exit 1 naming it; the old worker keeps serving and is respawned when it dies later', async () => {
    const { server, hold } = await startServer(1, 2);
    const [old] = server.workerPids() as [number];
    await hold.hold();
    const admin = startAdmin(server.adminSocket, ['restart-workers'], 60_000);
    admins.push(admin);
    const replacement = await nextForked(server, 1);
    // While held it is starting, not hung: status says so.
    const starting = await runAdmin(server.adminSocket, ['status']);
    expect(starting.stdout, starting.stdout).to.match(new RegExp(`^${replacement} .*\\(starting\\)$`, 'm'));
    expect((await statusJson(server.adminSocket)).workers.find((w) => w.pid === replacement), 'status --json').to.include({ responding: false, starting: true });
    process.kill(replacement, 'SIGKILL');

    const r = await admin.done;
    expect(r.code, `restart-workers: ${r.stderr}`).to.equal(1);
    expect(r.stderr).to.contain(`replacement worker ${replacement} exited before it was listening (signal SIGKILL); worker ${old} keeps serving`);
    expect(r.stdout).to.equal('');
    await hold.release();
    expect(server.lines.some(about(replacement, 'worker died; restarting')), 'the failed replacement is not respawned as a crash').to.equal(false);
    const st = await statusJson(server.adminSocket);
    expect(st.workers.map((w) => w.pid), 'workers after the failed restart').to.deep.equal([old]);
    expect(st['workerRestarts']).to.equal(0);

    // The old worker is an ordinary worker again: its crash is respawned.
    process.kill(old, 'SIGKILL');
    await server.waitForLog(about(old, 'worker died; restarting'), 10_000);
    const after = await waitUntil('the crashed worker to be respawned', async () => {
      const s = await statusJson(server.adminSocket);
      return s.workers.length === 1 && s.workers[0]!.pid !== old && s.workers[0]!.responding ? s : undefined;
    }, 20_000, 100);
    expect(after['workerRestarts'], 'fts_worker_restarts_total in status').to.equal(1);
  });

  it('a replacement that is not listening within 15 s is killed: exit 1 naming it (fts-admin waits for the reply); the old worker keeps serving', async () => {
    const { server, hold } = await startServer(1, 2);
    const [old] = server.workerPids() as [number];
    await hold.hold();
    const r = await runAdmin(server.adminSocket, ['restart-workers'], 60_000);
    const replacement = forked(server)[1]!;
    expect(r.code, `restart-workers: ${r.stderr}`).to.equal(1);
    expect(r.stderr).to.contain(`replacement worker ${replacement} did not start listening within 15 s and was killed; worker ${old} keeps serving`);
    await server.waitForLog(about(replacement, 'replacement worker exited before listening; not respawned'), 10_000);
    expect(processAlive(replacement), 'the replacement process is gone').to.equal(false);
    await hold.release();
    const st = await waitWorkersReady(server.adminSocket, 1);
    expect(st.workers.map((w) => w.pid)).to.deep.equal([old]);
    expect(forked(server), 'nothing respawned').to.have.length(2);
  });

  it('a hung old worker is killed after draining time, reported, and the restart goes on: exit 0 with a warning', async () => {
    const { server } = await startServer(2, 1);
    const [hung, other] = server.workerPids() as [number, number];
    stopped.add(hung);
    process.kill(hung, 'SIGSTOP');

    const r = await runAdmin(server.adminSocket, ['restart-workers'], 60_000);
    expect(r.code, `restart-workers: ${r.stderr}`).to.equal(0);
    expect(lines(r.stderr), r.stderr).to.deep.equal([
      `fts-admin: worker ${hung} did not exit after draining; killed`,
      `fts-admin: warning: worker ${hung} did not exit after draining and was killed`,
    ]);
    const out = lines(r.stdout);
    expect(out, r.stdout).to.have.length(3);
    expect(out[0]).to.match(new RegExp(`^worker ${hung} replaced by \\d+$`));
    expect(out[1]).to.match(new RegExp(`^worker ${other} replaced by \\d+$`));
    expect(out[2]).to.equal('all workers restarted');
    expect(processAlive(hung), 'the hung worker is gone').to.equal(false);
    stopped.delete(hung);
    const st = await waitWorkersReady(server.adminSocket, 2);
    for (const w of st.workers) expect([hung, other], 'new worker pids').to.not.include(w.pid);
    expect(st['workerRestarts'], 'a rolling restart is not a crash').to.equal(0);
  });
});
