/**
 * Holds the workers a test server starts from now on in the "forked, not listening yet" state, for as long
 * as the test wants (test/helpers/hold-worker-start.ts does the holding inside the worker). Workers already
 * running are not affected.
 */
import { rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { tempDir } from './temp.js';

const HOOK = path.join(path.dirname(fileURLToPath(import.meta.url)), 'hold-worker-start.js');

export class WorkerHold {
  private constructor(
    private readonly file: string,
    private readonly cleanupDir: () => Promise<void>,
  ) {}

  static async create(): Promise<WorkerHold> {
    const { dir, cleanup } = await tempDir('fts-hold-');
    return new WorkerHold(path.join(dir, 'hold'), cleanup);
  }

  /** Environment for TestServer.start: the server's workers load the hook. */
  get env(): NodeJS.ProcessEnv {
    const inherited = process.env['NODE_OPTIONS'] ?? '';
    return { NODE_OPTIONS: `${inherited} --import=${pathToFileURL(HOOK).href}`.trim(), FTSTEST_HOLD_WORKERS: this.file };
  }

  /** Workers that start from now on wait (up to 60 s each) until release(). */
  async hold(): Promise<void> {
    await writeFile(this.file, '');
  }

  async release(): Promise<void> {
    await rm(this.file, { force: true });
  }

  /** Releases any held worker and removes the directory. */
  async dispose(): Promise<void> {
    await this.release();
    await this.cleanupDir();
  }
}
