import { expect } from 'chai';
import { workerEnv, workerExecArgv } from '../../server/primary/worker-flags.js';

describe('worker tuning (worker-flags)', () => {
  it("adds the 2 MiB semispace cap to the primary's own node flags", () => {
    expect(workerExecArgv([], undefined)).to.deep.equal(['--max-semi-space-size=2']);
    expect(workerExecArgv(['--enable-source-maps'], '--no-warnings')).to.deep.equal(['--enable-source-maps', '--max-semi-space-size=2']);
  });

  it("leaves the semispace to the operator when NODE_OPTIONS or node's command line chooses it, in any spelling", () => {
    for (const opts of ['--max-semi-space-size=8', '--trace-gc  --max_semi_space_size=8', '--max-semi-space-size 8']) {
      expect(workerExecArgv([], opts), opts).to.deep.equal([]);
    }
    expect(workerExecArgv(['--max-semi-space-size=32'], undefined)).to.deep.equal(['--max-semi-space-size=32']);
  });

  it('does not take a longer flag that merely starts alike for the semispace one', () => {
    expect(workerExecArgv([], '--max-semi-space-size-x=1')).to.deep.equal(['--max-semi-space-size=2']);
  });

  it("sets 16 thread-pool threads and 8 MiB of glibc top padding unless the operator's environment sets them", () => {
    expect(workerEnv({})).to.deep.equal({ UV_THREADPOOL_SIZE: '16', MALLOC_TOP_PAD_: String(8 * 1024 * 1024) });
    expect(workerEnv({ UV_THREADPOOL_SIZE: '4', MALLOC_TOP_PAD_: '0' })).to.deep.equal({ UV_THREADPOOL_SIZE: '4', MALLOC_TOP_PAD_: '0' });
  });
});
