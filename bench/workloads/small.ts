/**
 * Many small files through one library session, pipelined: every call is made at once without awaiting
 * the previous one (the library writes requests in call order and matches replies in order).
 */
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import type { BenchContext, Workload } from '../context.js';
import { PUBLISH_PARALLEL } from '../limits.js';
import type { LimitRef, Row } from '../report.js';
import { cpuNote, makeSmallFiles, perOperationNote, serverCounts } from './common.js';

export const UPLOAD_FILES_PER_S = 1750;
export const DOWNLOAD_FILES_PER_S = 1400;

/**
 * Both directions end in a durable publication per file (the server's staging rename for an upload, the
 * client's temporary-file rename for a download), so the publish limits bound them.
 */
function publishLimits(ctx: BenchContext, rate: number): LimitRef[] {
  const { publishSerial, publishParallel } = ctx.limits;
  return [
    { name: 'publish serial', value: publishSerial, ratio: rate / publishSerial },
    { name: `publish ×${PUBLISH_PARALLEL}`, value: publishParallel, ratio: rate / publishParallel },
  ];
}

export const smallFiles: Workload = {
  id: 'small',
  title: 'small files, library',
  async run(ctx) {
    const { smallFiles: count, smallBytes } = ctx.config;
    const kib = `${smallBytes / 1024} KiB`;
    const dir = await ctx.scratch('small');
    const files = await makeSmallFiles(path.join(dir, 'src'), count, smallBytes);
    const dl = path.join(dir, 'dl');
    await mkdir(dl);
    return ctx.withServer('small', async (server) => {
      const client = await ctx.connect(server);
      const rows: Row[] = [];
      try {
        ctx.progress(`small: ${count} × ${kib} uploads (library, pipelined)`);
        const up = await ctx.measure(() => Promise.all(files.map((f) => client.upload(f.path, f.name))));
        up.value.forEach((r, i) => {
          if (r.sha256 !== files[i]!.sha256) throw new Error(`upload of ${files[i]!.name}: sha256 differs`);
        });
        const upRate = count / (up.ms / 1000);
        rows.push({
          id: 'upload-small',
          section: 'Small files (library, one session, pipelined)',
          workload: `${count} × ${kib} uploads`,
          value: upRate,
          unit: 'files/s',
          limits: publishLimits(ctx, upRate),
          target: { text: `≥ ${UPLOAD_FILES_PER_S} files/s`, pass: upRate >= UPLOAD_FILES_PER_S },
          serverRssPeak: up.rss.peakBytes,
          notes: `${up.ms.toFixed(0)} ms; ${cpuNote(up)}; ${perOperationNote(up, count)}`,
          details: { ms: up.ms, files: count, ...serverCounts(up), clientCpuSeconds: up.clientCpuSeconds },
        });

        ctx.progress(`small: ${count} × ${kib} downloads (library, pipelined)`);
        const down = await ctx.measure(() => Promise.all(files.map((f) => client.download(f.name, path.join(dl, f.name)))));
        down.value.forEach((r, i) => {
          if (r.sha256 !== files[i]!.sha256) throw new Error(`download of ${files[i]!.name}: sha256 differs`);
        });
        const downRate = count / (down.ms / 1000);
        rows.push({
          id: 'download-small',
          section: 'Small files (library, one session, pipelined)',
          workload: `${count} × ${kib} downloads (to files)`,
          value: downRate,
          unit: 'files/s',
          limits: publishLimits(ctx, downRate),
          target: { text: `≥ ${DOWNLOAD_FILES_PER_S} files/s`, pass: downRate >= DOWNLOAD_FILES_PER_S },
          serverRssPeak: down.rss.peakBytes,
          notes: `${down.ms.toFixed(0)} ms; ${cpuNote(down)}; ${perOperationNote(down, count)}`,
          details: { ms: down.ms, files: count, ...serverCounts(down), clientCpuSeconds: down.clientCpuSeconds },
        });

        // In memory: separates the client's per-file durability work (temp file, fsync, rename) from the rest.
        const mem = await ctx.measure(() => Promise.all(files.map((f) => client.downloadBuffer(f.name))));
        mem.value.forEach((r, i) => {
          if (r.sha256 !== files[i]!.sha256) throw new Error(`downloadBuffer of ${files[i]!.name}: sha256 differs`);
        });
        const memRate = count / (mem.ms / 1000);
        rows.push({
          id: 'download-small-buffer',
          section: 'Small files (library, one session, pipelined)',
          workload: `${count} × ${kib} downloads (downloadBuffer)`,
          value: memRate,
          unit: 'files/s',
          serverRssPeak: mem.rss.peakBytes,
          notes: `${mem.ms.toFixed(0)} ms; ${cpuNote(mem)}; ${perOperationNote(mem, count)} (reference: no local file writes)`,
          details: { ms: mem.ms, files: count, ...serverCounts(mem), clientCpuSeconds: mem.clientCpuSeconds },
        });
        await client.quit();
      } finally {
        client.close();
      }
      return rows;
    });
  },
};
