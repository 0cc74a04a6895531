/**
 * `list` of a large directory through the library. The files are created directly in the user's storage
 * directory (creating 10,000 files through uploads would dominate the run); the server lists whatever
 * regular files with legal names are there, so this is the same directory it would build itself.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Workload } from '../context.js';
import type { Row } from '../report.js';
import { median } from '../util.js';

const RUNS = 3;

export const bigListing: Workload = {
  id: 'list',
  title: 'list of a large directory, library',
  async run(ctx) {
    const count = ctx.config.listDirFiles;
    const user = ctx.users[1]!;
    return ctx.withServer('list', async (server) => {
      const dir = server.userDir(user.user);
      await mkdir(dir, { recursive: true, mode: 0o700 });
      ctx.progress(`list: creating ${count} files in the storage directory`);
      const batch = 200;
      for (let i = 0; i < count; i += batch) {
        const jobs: Array<Promise<void>> = [];
        for (let j = i; j < Math.min(count, i + batch); j++) jobs.push(writeFile(path.join(dir, `entry-${String(j).padStart(6, '0')}.dat`), `file ${j}\n`));
        await Promise.all(jobs);
      }
      const client = await ctx.connect(server, user);
      const rows: Row[] = [];
      try {
        for (const long of [false, true]) {
          ctx.progress(`list: ${count} files${long ? ' --long' : ''} × ${RUNS}`);
          const runs: number[] = [];
          let peak = 0;
          let cpu = 0;
          for (let i = 0; i < RUNS; i++) {
            const m = await ctx.measure(() => client.list({ long }));
            if (m.value.length !== count) throw new Error(`list returned ${m.value.length} entries, expected ${count}`);
            runs.push(m.ms);
            peak = Math.max(peak, m.rss.peakBytes);
            cpu += m.rss.cpuSeconds;
          }
          rows.push({
            id: long ? 'list-long-library' : 'list-library',
            section: 'Listing (library)',
            workload: `list${long ? ' --long' : ''} of ${count} files, median of ${RUNS}`,
            value: median(runs),
            unit: 'ms',
            serverRssPeak: peak,
            notes: `runs ${runs.map((ms) => ms.toFixed(0)).join(', ')} ms; server CPU ${((cpu / RUNS) * 1000).toFixed(0)} ms per list`,
            details: { runsMs: runs, files: count },
          });
        }
        await client.quit();
      } finally {
        client.close();
      }
      return rows;
    });
  },
};
