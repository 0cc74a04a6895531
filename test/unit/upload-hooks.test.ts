/**
 * UploadHooks' queue, with a real program (a shell script) and small limits: users are served in turn, so
 * one user's flood does not hold the others' files back; past a user's queue limit a file is dropped
 * (logged and counted); finish() after a stop logs queued files as not run; runs that name the same file
 * run one after another, in order; a change of a kind not hooked runs nothing.
 */
import { expect } from 'chai';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Logger } from '../../server/log.js';
import { WorkerMetrics } from '../../server/metrics/worker-metrics.js';
import { UploadHooks, type HookJob } from '../../server/worker/upload-hooks.js';
import { waitUntil } from '../helpers/lifecycle-util.js';

interface Line {
  result: string;
  user: string;
  file: string;
}

/** A logger that keeps the hook lines. */
function recorder(): { log: Logger; lines: Line[] } {
  const lines: Line[] = [];
  const keep = (obj: unknown): void => {
    lines.push(obj as Line);
  };
  return { log: { info: keep, warn: keep } as unknown as Logger, lines };
}

describe('UploadHooks (the queue of --upload-hook runs)', function () {
  this.timeout(30_000);
  let dir: string;
  let program: string;

  beforeEach(async function () {
    dir = await mkdtemp(path.join(os.tmpdir(), 'fts-hooks-unit-'));
    program = path.join(dir, 'hook.sh');
    // Notes who it ran for, then waits for `go`.
    await writeFile(program, `#!/bin/sh\necho "$FTS_USER $FTS_NAME" >> '${dir}/order'\nwhile [ ! -e '${dir}/go' ]; do sleep 0.02; done\n`);
    await chmod(program, 0o755);
  });

  afterEach(async function () {
    await writeFile(path.join(dir, 'go'), '');
    await rm(dir, { recursive: true, force: true });
  });

  const file = (user: string, name: string): HookJob => ({ event: 'upload', user, name, path: path.join(dir, name), size: 1, sha256: '0'.repeat(64), mtime: 0, remote: '127.0.0.1' });
  const order = async (): Promise<string[]> => (await readFile(path.join(dir, 'order'), 'utf8').catch(() => '')).split('\n').filter((l) => l !== '');

  it('takes the users in turn, drops what is past a user\'s queue limit, and logs every end', async function () {
    const { log, lines } = recorder();
    const hooks = new UploadHooks(program, 10_000, log, new WorkerMetrics(), ['upload'], { concurrency: 1, queuedPerUser: 3 });
    // One run at a time: mallory's first runs, then her flood waits; alice's file comes after it.
    for (let i = 0; i < 5; i++) hooks.happened(file('mallory', `m${i}`));
    hooks.happened(file('alice', 'a0'));
    expect(lines.filter((l) => l.result === 'dropped').map((l) => l.file), 'past 3 waiting').to.deep.equal(['m4']);
    await writeFile(path.join(dir, 'go'), '');
    await waitUntil('every run ended', () => (lines.filter((l) => l.result === 'ok').length === 5 ? true : undefined), 20_000);
    // After m0 (running when the rest came): alice's one file is not kept waiting behind mallory's.
    expect(await order()).to.deep.equal(['mallory m0', 'mallory m1', 'alice a0', 'mallory m2', 'mallory m3']);
    await hooks.finish(Date.now());
    expect(hooks.pending).to.equal(0);
  });

  it('stop() logs what waits as not run, and so is anything published afterwards', async function () {
    const { log, lines } = recorder();
    const hooks = new UploadHooks(program, 10_000, log, new WorkerMetrics(), ['upload'], { concurrency: 1, queuedPerUser: 10 });
    hooks.happened(file('alice', 'a0'));
    hooks.happened(file('alice', 'a1'));
    await waitUntil('the first run started', async () => ((await order()).length === 1 ? true : undefined), 10_000);
    hooks.stop();
    hooks.happened(file('alice', 'a2'));
    expect(lines.map((l) => [l.file, l.result])).to.deep.equal([
      ['a1', 'unrun'],
      ['a2', 'unrun'],
    ]);
    await hooks.finish(Date.now());
    expect(lines.map((l) => [l.file, l.result])).to.deep.include(['a0', 'killed']);
  });

  it('runs that name the same file wait for each other, in the order of the changes; other files run meanwhile', async function () {
    // Notes each run and whether `go` existed when it started: a run that had to wait for another says after.
    await writeFile(program, `#!/bin/sh\n[ -e '${dir}/go' ] && w=after || w=before\necho "$FTS_EVENT $FTS_FROM_NAME>$FTS_NAME $w" >> '${dir}/order'\nwhile [ ! -e '${dir}/go' ]; do sleep 0.02; done\n`);
    const { log, lines } = recorder();
    const hooks = new UploadHooks(program, 10_000, log, new WorkerMetrics(), ['upload', 'delete', 'rename'], { concurrency: 4, queuedPerUser: 10 });
    const at = (name: string): string => path.join(dir, name);
    const base = { user: 'alice', size: 1, remote: '127.0.0.1' };
    hooks.happened({ ...base, event: 'upload', name: 'x', path: at('x'), sha256: '0'.repeat(64), mtime: 0 });
    hooks.happened({ ...base, event: 'delete', name: 'x', path: at('x') });
    hooks.happened({ ...base, event: 'upload', name: 'y', path: at('y'), sha256: '0'.repeat(64), mtime: 0 });
    hooks.happened({ ...base, event: 'rename', name: 'z', from: 'y', path: at('z'), fromPath: at('y'), replaced: false });
    hooks.happened({ ...base, event: 'delete', name: 'z', path: at('z') });
    await waitUntil('the two uploads running', async () => ((await order()).length === 2 ? true : undefined), 10_000);
    await writeFile(path.join(dir, 'go'), '');
    await waitUntil('every run ended', () => (lines.filter((l) => l.result === 'ok').length === 5 ? true : undefined), 20_000);
    const runs = await order();
    expect([...runs].sort()).to.deep.equal(['delete >x after', 'delete >z after', 'rename y>z after', 'upload >x before', 'upload >y before']);
    expect(runs.indexOf('rename y>z after'), runs.join('; ')).to.be.below(runs.indexOf('delete >z after'));
    await hooks.finish(Date.now());
  });

  it('a change of a kind not in its events runs nothing and logs nothing', async function () {
    const { log, lines } = recorder();
    const hooks = new UploadHooks(program, 10_000, log, new WorkerMetrics(), ['upload'], { concurrency: 1, queuedPerUser: 10 });
    hooks.happened({ event: 'delete', user: 'alice', name: 'x', path: path.join(dir, 'x'), size: 1, remote: '127.0.0.1' });
    expect(hooks.pending).to.equal(0);
    expect(lines).to.deep.equal([]);
    await hooks.finish(Date.now());
  });
});
