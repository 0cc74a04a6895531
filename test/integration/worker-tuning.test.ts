/**
 * The flags and variables the primary forks its workers with (server/primary/worker-flags.ts), read back
 * from the real worker processes in /proc (Linux).
 */
import { expect } from 'chai';
import { readFile } from 'node:fs/promises';
import { TestServer } from '../helpers/server.js';

async function procList(pid: number, file: 'cmdline' | 'environ'): Promise<string[]> {
  return (await readFile(`/proc/${pid}/${file}`, 'latin1')).split('\0');
}

describe('worker tuning (real server, /proc)', function () {
  this.timeout(60_000);
  let server: TestServer | null = null;

  afterEach(async function () {
    await server?.stop();
    server = null;
  });

  it('workers run with the 2 MiB semispace cap, 16 thread-pool threads and 8 MiB of glibc top padding; the primary does not', async () => {
    server = await TestServer.start({ workers: 2 });
    const workers = server.workerPids();
    expect(workers).to.have.length(2);
    for (const pid of workers) {
      expect(await procList(pid, 'cmdline'), `worker ${pid}`).to.include('--max-semi-space-size=2');
      const env = await procList(pid, 'environ');
      expect(env, `worker ${pid}`).to.include.members(['UV_THREADPOOL_SIZE=16', `MALLOC_TOP_PAD_=${8 * 1024 * 1024}`]);
    }
    expect(await procList(server.pid, 'cmdline'), 'primary').to.not.include('--max-semi-space-size=2');
  });

  it("an operator's NODE_OPTIONS semispace and environment variables win", async () => {
    server = await TestServer.start({
      workers: 1,
      env: { NODE_OPTIONS: '--max-semi-space-size=8', UV_THREADPOOL_SIZE: '6', MALLOC_TOP_PAD_: '65536' },
    });
    const [pid] = server.workerPids();
    expect(pid).to.be.a('number');
    expect((await procList(pid!, 'cmdline')).filter((a) => a.includes('semi-space'))).to.deep.equal([]);
    const env = await procList(pid!, 'environ');
    expect(env).to.include.members(['NODE_OPTIONS=--max-semi-space-size=8', 'UV_THREADPOOL_SIZE=6', 'MALLOC_TOP_PAD_=65536']);
  });
});
