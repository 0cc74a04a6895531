/**
 * One large file through one library session: upload (hashed by the client, verified and made durable
 * by the server), then download (verified by the client, written to a temporary file, fsynced, renamed).
 */
import { unlink } from 'node:fs/promises';
import path from 'node:path';
import type { Workload } from '../context.js';
import type { Row } from '../report.js';
import { mibPerSecond } from '../util.js';
import { cpuNote } from './common.js';

export const largeTransfers: Workload = {
  id: 'large',
  title: 'large file upload and download',
  async run(ctx) {
    const { bigFile, limits } = ctx;
    const sizeLabel = ctx.config.sizeMiB >= 1024 ? `${ctx.config.sizeMiB / 1024} GiB` : `${ctx.config.sizeMiB} MiB`;
    const dir = await ctx.scratch('large');
    return ctx.withServer('large', async (server) => {
      const client = await ctx.connect(server);
      const rows: Row[] = [];
      try {
        ctx.progress(`large: upload ${sizeLabel}`);
        const up = await ctx.measure(() => client.upload(bigFile.path, 'big.bin'));
        if (up.value.sha256 !== bigFile.sha256) throw new Error('upload reply names another sha256');
        const upRate = mibPerSecond(bigFile.size, up.ms);
        rows.push({
          id: 'upload-large',
          section: 'Large files (library, one session)',
          workload: `upload ${sizeLabel} (verified, durable)`,
          value: upRate,
          unit: 'MiB/s',
          limits: [
            { name: 'durable-write', value: limits.durableWrite, ratio: upRate / limits.durableWrite },
            { name: 'raw copy+fsync', value: limits.rawCopyFsync, ratio: upRate / limits.rawCopyFsync },
          ],
          target: { text: '≥ 0.90 × durable-write', pass: upRate >= 0.9 * limits.durableWrite },
          serverRssPeak: up.rss.peakBytes,
          notes: `${(up.ms / 1000).toFixed(2)} s; ${cpuNote(up, bigFile.size)}`,
          details: { ms: up.ms, bytes: bigFile.size, serverCpuSeconds: up.rss.cpuSeconds, clientCpuSeconds: up.clientCpuSeconds },
        });

        const local = path.join(dir, 'big.download');
        ctx.progress(`large: download ${sizeLabel}`);
        const down = await ctx.measure(() => client.download('big.bin', local));
        if (down.value.sha256 !== bigFile.sha256 || down.value.size !== bigFile.size) throw new Error('downloaded file differs from the original');
        await unlink(local);
        const downRate = mibPerSecond(bigFile.size, down.ms);
        rows.push({
          id: 'download-large',
          section: 'Large files (library, one session)',
          workload: `download ${sizeLabel} (verified, written, fsynced)`,
          value: downRate,
          unit: 'MiB/s',
          limits: [
            { name: 'raw copy', value: limits.rawCopy, ratio: downRate / limits.rawCopy },
            { name: 'raw copy+fsync', value: limits.rawCopyFsync, ratio: downRate / limits.rawCopyFsync },
          ],
          target: { text: '≥ 0.70 × raw copy', pass: downRate >= 0.7 * limits.rawCopy },
          serverRssPeak: down.rss.peakBytes,
          notes: `${(down.ms / 1000).toFixed(2)} s; ${cpuNote(down, bigFile.size)}`,
          details: { ms: down.ms, bytes: bigFile.size, serverCpuSeconds: down.rss.cpuSeconds, clientCpuSeconds: down.clientCpuSeconds },
        });
        await client.quit();
      } finally {
        client.close();
      }
      return rows;
    });
  },
};
