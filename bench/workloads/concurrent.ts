/**
 * Many `fts` processes at once, each moving one medium file: aggregate throughput from the first spawn
 * to the last exit, and the server's peak RSS meanwhile.
 */
import { mkdir, readdir, unlink } from 'node:fs/promises';
import path from 'node:path';
import type { Workload } from '../context.js';
import type { Row } from '../report.js';
import { MiB, makeRandomFile, mibPerSecond } from '../util.js';
import { checkExit } from './common.js';

export const UPLOAD_MIBS = 340;
export const DOWNLOAD_MIBS = 280;
/** "server RSS ≤ 210 MB": decimal megabytes. */
export const RSS_LIMIT_BYTES = 210e6;

export const concurrentCli: Workload = {
  id: 'concurrent',
  title: 'concurrent fts CLI clients',
  async run(ctx) {
    const n = ctx.config.concurrentClients;
    const mib = ctx.config.concurrentMiB;
    const dir = await ctx.scratch('concurrent');
    const src = await makeRandomFile(path.join(dir, 'medium.bin'), mib * MiB);
    const total = n * src.size;
    const section = `Concurrency (${n} \`fts\` processes at once)`;
    return ctx.withServer('concurrent', async (server) => {
      const rows: Row[] = [];
      ctx.progress(`concurrent: ${n} × fts upload ${mib} MiB`);
      const up = await ctx.measure(() => Promise.all(Array.from({ length: n }, (_, i) => ctx.cli(server, ['upload', src.path, `m${i}.bin`], { user: ctx.users[i % ctx.users.length] }))));
      up.value.forEach((r, i) => {
        checkExit(`fts upload #${i}`, r);
        if (!r.stdout.includes(`sha256 ${src.sha256}`)) throw new Error(`fts upload #${i}: unexpected output ${r.stdout.trim()}`);
      });
      const upRate = mibPerSecond(total, up.ms);
      rows.push({
        id: 'concurrent-upload',
        section,
        workload: `${n} × ${mib} MiB upload, aggregate`,
        value: upRate,
        unit: 'MiB/s',
        limits: [{ name: 'durable-write', value: ctx.limits.durableWrite, ratio: upRate / ctx.limits.durableWrite }],
        target: { text: `≥ ${UPLOAD_MIBS} MiB/s`, pass: upRate >= UPLOAD_MIBS },
        serverRssPeak: up.rss.peakBytes,
        notes: `${(up.ms / 1000).toFixed(2)} s wall; slowest process ${(Math.max(...up.value.map((r) => r.ms)) / 1000).toFixed(2)} s; server CPU ${up.rss.cpuSeconds.toFixed(2)} s`,
        details: { ms: up.ms, bytes: total, serverCpuSeconds: up.rss.cpuSeconds, perProcessMs: up.value.map((r) => r.ms) },
      });

      const dl = path.join(dir, 'dl');
      ctx.progress(`concurrent: ${n} × fts download ${mib} MiB`);
      await mkdir(dl);
      const down = await ctx.measure(() =>
        Promise.all(Array.from({ length: n }, (_, i) => ctx.cli(server, ['download', `m${i}.bin`, path.join(dl, `m${i}.bin`)], { user: ctx.users[i % ctx.users.length] }))),
      );
      down.value.forEach((r, i) => {
        checkExit(`fts download #${i}`, r);
        if (!r.stdout.includes(`sha256 ${src.sha256}`)) throw new Error(`fts download #${i}: unexpected output ${r.stdout.trim()}`);
      });
      for (const f of await readdir(dl)) await unlink(path.join(dl, f));
      const downRate = mibPerSecond(total, down.ms);
      rows.push({
        id: 'concurrent-download',
        section,
        workload: `${n} × ${mib} MiB download, aggregate`,
        value: downRate,
        unit: 'MiB/s',
        limits: [{ name: 'raw copy', value: ctx.limits.rawCopy, ratio: downRate / ctx.limits.rawCopy }],
        target: { text: `≥ ${DOWNLOAD_MIBS} MiB/s`, pass: downRate >= DOWNLOAD_MIBS },
        serverRssPeak: down.rss.peakBytes,
        notes: `${(down.ms / 1000).toFixed(2)} s wall; slowest process ${(Math.max(...down.value.map((r) => r.ms)) / 1000).toFixed(2)} s; server CPU ${down.rss.cpuSeconds.toFixed(2)} s`,
        details: { ms: down.ms, bytes: total, serverCpuSeconds: down.rss.cpuSeconds, perProcessMs: down.value.map((r) => r.ms) },
      });
      const peak = Math.max(up.rss.peakBytes, down.rss.peakBytes);
      const anonPeak = Math.max(up.rss.peakAnonBytes, down.rss.peakAnonBytes);
      rows.push({
        id: 'concurrent-rss',
        section,
        workload: `server peak RSS during ${n} × ${mib} MiB`,
        value: peak / MiB,
        unit: 'MiB',
        target: { text: '≤ 210 MB (200.3 MiB)', pass: peak <= RSS_LIMIT_BYTES },
        serverRssPeak: peak,
        notes: `summed VmRSS of ${Math.max(up.rss.processes, down.rss.processes)} server processes, sampled every 100 ms; upload peak ${(up.rss.peakBytes / MiB).toFixed(0)} MiB, download peak ${(down.rss.peakBytes / MiB).toFixed(0)} MiB; RssAnon peak ${(anonPeak / MiB).toFixed(0)} MiB`,
        details: { peakAnonBytes: anonPeak },
      });
      return rows;
    });
  },
};
