/**
 * One large file through one library session: upload (hashed by the client, verified and made durable
 * by the server), then download (verified by the client, written to a temporary file, fsynced, renamed).
 */
import { unlink } from 'node:fs/promises';
import path from 'node:path';
import type { Workload } from '../context.js';
import type { Row } from '../report.js';
import { mibPerSecond, now } from '../util.js';
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
        const upPhases = new Phases();
        const up = await ctx.measure(() => {
          upPhases.start();
          return client.upload(bigFile.path, 'big.bin', { onProgress: () => upPhases.progress() });
        });
        upPhases.end();
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
          notes: `${(up.ms / 1000).toFixed(2)} s = ${upPhases.describe(['before the data (offset; hashing unless streamed)', 'sending', 'server commit (fsync+rename)'], bigFile.size)}; ${cpuNote(up, bigFile.size)}`,
          details: { ms: up.ms, phasesMs: upPhases.durations(), bytes: bigFile.size, serverCpuSeconds: up.rss.cpuSeconds, clientCpuSeconds: up.clientCpuSeconds },
        });

        const local = path.join(dir, 'big.download');
        ctx.progress(`large: download ${sizeLabel}`);
        const downPhases = new Phases();
        const down = await ctx.measure(() => {
          downPhases.start();
          return client.download('big.bin', local, { onProgress: () => downPhases.progress() });
        });
        downPhases.end();
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
          notes: `${(down.ms / 1000).toFixed(2)} s = ${downPhases.describe(['request', 'receiving', 'client commit (fsync+rename)'], bigFile.size)}; ${cpuNote(down, bigFile.size)}`,
          details: { ms: down.ms, phasesMs: downPhases.durations(), bytes: bigFile.size, serverCpuSeconds: down.rss.cpuSeconds, clientCpuSeconds: down.clientCpuSeconds },
        });
        await client.quit();
      } finally {
        client.close();
      }
      return rows;
    });
  },
};

/**
 * Splits a transfer by its progress callbacks: before the first data frame (hashing, or the request),
 * between first and last (the data phase), after the last (the commit: fsync, rename, final reply).
 */
class Phases {
  private t0 = 0;
  private first = 0;
  private last = 0;
  private t1 = 0;

  start(): void {
    this.t0 = now();
  }

  progress(): void {
    const t = now();
    if (this.first === 0) this.first = t;
    this.last = t;
  }

  end(): void {
    this.t1 = now();
  }

  durations(): [number, number, number] {
    if (this.first === 0) return [this.t1 - this.t0, 0, 0];
    return [this.first - this.t0, this.last - this.first, this.t1 - this.last];
  }

  describe(labels: [string, string, string], bytes: number): string {
    const [a, b, c] = this.durations();
    return `${labels[0]} ${(a / 1000).toFixed(2)} s + ${labels[1]} ${(b / 1000).toFixed(2)} s (${mibPerSecond(bytes, b).toFixed(0)} MiB/s) + ${labels[2]} ${(c / 1000).toFixed(2)} s`;
  }
}
