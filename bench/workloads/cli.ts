/**
 * The same small-file work through the `fts` command as a whole process (wall time from spawn to exit,
 * so Node start-up and module loading count), plus `fts list` of the files it uploaded.
 */
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import type { Workload } from '../context.js';
import type { Row } from '../report.js';
import { median } from '../util.js';
import { checkExit, makeSmallFiles } from './common.js';
import { DOWNLOAD_FILES_PER_S, UPLOAD_FILES_PER_S } from './small.js';

export const LIST_MS_TARGET = 350;
const LIST_RUNS = 5;

export const cliSmallFiles: Workload = {
  id: 'cli',
  title: 'fts CLI: mput, mget, list',
  async run(ctx) {
    const { smallFiles: count, smallBytes } = ctx.config;
    const kib = `${smallBytes / 1024} KiB`;
    const dir = await ctx.scratch('cli');
    const files = await makeSmallFiles(path.join(dir, 'src'), count, smallBytes, 'c');
    const dl = path.join(dir, 'dl');
    await mkdir(dl);
    const section = '`fts` CLI (whole process, wall time incl. start-up)';
    return ctx.withServer('cli', async (server) => {
      const rows: Row[] = [];
      const help = await ctx.cli(server, ['--help']);
      checkExit('fts --help', help);

      ctx.progress(`cli: fts mput ${count} × ${kib}`);
      const up = await ctx.measure(() => ctx.cli(server, ['mput', ...files.map((f) => f.path)]));
      checkExit('fts mput', up.value);
      const upLines = up.value.stdout.split('\n').filter((l) => l.startsWith('uploaded '));
      if (upLines.length !== count) throw new Error(`fts mput reported ${upLines.length} of ${count} uploads`);
      const upRate = count / (up.ms / 1000);
      rows.push({
        id: 'cli-mput',
        section,
        workload: `fts mput ${count} × ${kib}`,
        value: upRate,
        unit: 'files/s',
        serverRssPeak: up.rss.peakBytes,
        notes: `${up.ms.toFixed(0)} ms wall; server CPU ${up.rss.cpuSeconds.toFixed(2)} s (library target ${UPLOAD_FILES_PER_S} files/s applies to the library row)`,
        details: { ms: up.ms, files: count, serverCpuSeconds: up.rss.cpuSeconds },
      });

      ctx.progress(`cli: fts list (${count} files) × ${LIST_RUNS}`);
      const listRuns: number[] = [];
      let peak = 0;
      for (let i = 0; i < LIST_RUNS; i++) {
        const ls = await ctx.measure(() => ctx.cli(server, ['list']));
        checkExit('fts list', ls.value);
        const names = ls.value.stdout.split('\n').filter((l) => l !== '');
        if (names.length !== count) throw new Error(`fts list printed ${names.length} names, expected ${count}`);
        listRuns.push(ls.ms);
        peak = Math.max(peak, ls.rss.peakBytes);
      }
      const listMs = median(listRuns);
      rows.push({
        id: 'cli-list',
        section,
        workload: `fts list (${count} files), median of ${LIST_RUNS}`,
        value: listMs,
        unit: 'ms',
        limits: [{ name: 'fts --help', value: help.ms, ratio: listMs / help.ms }],
        target: { text: `≤ ${LIST_MS_TARGET} ms`, pass: listMs <= LIST_MS_TARGET },
        serverRssPeak: peak,
        notes: `runs ${listRuns.map((ms) => ms.toFixed(0)).join(', ')} ms; process start-up floor (fts --help) ${help.ms.toFixed(0)} ms`,
        details: { runsMs: listRuns, helpMs: help.ms },
      });

      ctx.progress(`cli: fts mget ${count} × ${kib}`);
      const down = await ctx.measure(() => ctx.cli(server, ['mget', '--dir', dl, ...files.map((f) => f.name)]));
      checkExit('fts mget', down.value);
      const reported = new Map<string, string>();
      for (const line of down.value.stdout.split('\n')) {
        const m = /^downloaded (\S+) -> .* sha256 ([0-9a-f]{64})\)$/.exec(line);
        if (m) reported.set(m[1]!, m[2]!);
      }
      for (const f of files) if (reported.get(f.name) !== f.sha256) throw new Error(`fts mget: ${f.name} missing or with another sha256`);
      const downRate = count / (down.ms / 1000);
      rows.push({
        id: 'cli-mget',
        section,
        workload: `fts mget ${count} × ${kib}`,
        value: downRate,
        unit: 'files/s',
        serverRssPeak: down.rss.peakBytes,
        notes: `${down.ms.toFixed(0)} ms wall; server CPU ${down.rss.cpuSeconds.toFixed(2)} s (library target ${DOWNLOAD_FILES_PER_S} files/s applies to the library row)`,
        details: { ms: down.ms, files: count, serverCpuSeconds: down.rss.cpuSeconds },
      });
      return rows;
    });
  },
};
