import { expect } from 'chai';
import { GroupCommit } from '../../protocol/group-commit.js';

/** A run that finishes when the test says so, recording when it started. */
function controlledRuns(): { gc: GroupCommit; started: string[]; finish: (fail?: boolean) => void } {
  const started: string[] = [];
  const pending: Array<{ resolve: () => void; reject: (e: Error) => void }> = [];
  const gc = new GroupCommit((key) => {
    started.push(key);
    return new Promise<void>((resolve, reject) => pending.push({ resolve, reject }));
  });
  return {
    gc,
    started,
    finish: (fail = false) => {
      const run = pending.shift()!;
      if (fail) run.reject(new Error('fsync failed'));
      else run.resolve();
    },
  };
}

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('GroupCommit (shared directory fsyncs)', function () {
  it('callers arriving during a run share exactly one next run, which starts after the current one ends', async function () {
    const { gc, started, finish } = controlledRuns();
    const done: number[] = [];
    const first = gc.commit('d').then(() => done.push(0));
    const later = [1, 2, 3].map((i) => gc.commit('d').then(() => done.push(i)));
    await tick();
    expect(started, 'the later callers do not join the run that may predate their change').to.have.length(1);
    finish();
    await first;
    await tick();
    expect(done).to.deep.equal([0]);
    expect(started, 'one shared run for all three').to.have.length(2);
    finish();
    await Promise.all(later);
    expect(done).to.deep.equal([0, 1, 2, 3]);
  });

  it('a failed run rejects its own callers only; the next run still happens', async function () {
    const { gc, started, finish } = controlledRuns();
    const first = gc.commit('d');
    const second = gc.commit('d');
    finish(true);
    let firstError: unknown = null;
    await first.catch((e: unknown) => (firstError = e));
    expect(String(firstError)).to.contain('fsync failed');
    await tick();
    expect(started).to.have.length(2);
    finish();
    await second;
  });

  it('keys are independent, and an idle key starts at once', async function () {
    const { gc, started, finish } = controlledRuns();
    const a = gc.commit('a');
    const b = gc.commit('b');
    await tick();
    expect(started).to.deep.equal(['a', 'b']);
    finish();
    finish();
    await Promise.all([a, b]);
    const c = gc.commit('a');
    await tick();
    expect(started).to.deep.equal(['a', 'b', 'a']);
    finish();
    await c;
  });
});
