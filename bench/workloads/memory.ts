/**
 * Server memory: how much the summed RSS (primary + workers) grows during one large upload, and what
 * 1000 idle authenticated sessions cost. Both on a fresh server, after warm-up sessions, so the baseline
 * already includes the code paths' one-time cost. For the growth, the warm-up includes a large upload per
 * session: the first large upload a worker receives touches its first aligned-arena slabs and thread
 * arenas once and for all (5–6 MiB, measured), which is a cost of starting, not growth with size.
 */
import path from 'node:path';
import type { FtsClient } from '../../client/index.js';
import type { BenchContext, Workload } from '../context.js';
import type { BenchServer } from '../server.js';
import { MiB, makeSparseFile, mibPerSecond, sleep } from '../util.js';
import { cpuNote } from './common.js';

export const GROWTH_LIMIT_MIB = 16;
export const IDLE_LIMIT_MIB = 64;
/** Connections opened (and authenticated) at once while building up the idle sessions. */
const CONNECT_BATCH = 50;

/** Large enough for the direct-I/O path (8 MiB to come) and a few aligned slabs in flight. */
const WARM_LARGE_MIB = 32;

async function warmUp(ctx: BenchContext, server: BenchServer, large: string | null = null): Promise<void> {
  // One session per worker is not guaranteed (the cluster picks), so a few.
  for (let i = 0; i < 4; i++) {
    const c = await ctx.connect(server);
    await c.uploadBuffer('warm.bin', Buffer.alloc(64 * 1024, i));
    if (large !== null) await c.upload(large, 'warm-large.bin');
    await c.downloadBuffer('warm.bin');
    await c.list();
    await c.quit();
  }
  await sleep(500);
}

/** The lowest of a few samples: transient garbage should not count as the baseline. */
async function baseline(ctx: BenchContext): Promise<{ rss: number; anon: number }> {
  let rss = Infinity;
  let anon = Infinity;
  for (let i = 0; i < 5; i++) {
    const s = await ctx.sampler.now();
    rss = Math.min(rss, s.lastBytes);
    anon = Math.min(anon, s.lastAnonBytes);
    await sleep(100);
  }
  return { rss, anon };
}

export const rssGrowth: Workload = {
  id: 'rss-growth',
  title: 'server RSS growth during a large upload',
  async run(ctx) {
    const mib = ctx.config.rssUploadMiB;
    const dir = await ctx.scratch('rss');
    const file = await makeSparseFile(path.join(dir, 'sparse.bin'), mib * MiB);
    const warm = await makeSparseFile(path.join(dir, 'warm.bin'), WARM_LARGE_MIB * MiB);
    return ctx.withServer('rss-growth', async (server) => {
      const cold = await baseline(ctx);
      await warmUp(ctx, server, warm.path);
      const base = await baseline(ctx);
      const client = await ctx.connect(server);
      try {
        ctx.progress(`rss-growth: upload ${mib} MiB (sparse local file of zeros)`);
        const up = await ctx.measure(() => client.upload(file.path, 'growth.bin'));
        if (up.value.sha256 !== file.sha256) throw new Error('upload reply names another sha256');
        await client.quit();
        const growth = (up.rss.peakBytes - base.rss) / MiB;
        const anonGrowth = (up.rss.peakAnonBytes - base.anon) / MiB;
        return [
          {
            id: 'rss-growth',
            section: 'Server memory',
            workload: `RSS growth during a ${mib >= 1024 ? `${mib / 1024} GiB` : `${mib} MiB`} upload`,
            value: growth,
            unit: 'MiB',
            target: { text: `≤ ${GROWTH_LIMIT_MIB} MiB`, pass: growth <= GROWTH_LIMIT_MIB },
            serverRssPeak: up.rss.peakBytes,
            notes: `summed VmRSS ${(cold.rss / MiB).toFixed(0)} MiB at start, baseline after the warm-up uploads (4 × ${WARM_LARGE_MIB} MiB) ${(base.rss / MiB).toFixed(0)} MiB, peak ${(up.rss.peakBytes / MiB).toFixed(0)} MiB over ${up.rss.samples} samples (RssAnon growth ${anonGrowth.toFixed(1)} MiB); upload ${mibPerSecond(file.size, up.ms).toFixed(0)} MiB/s; ${cpuNote(up, file.size)}`,
            details: { startBytes: cold.rss, baselineBytes: base.rss, peakBytes: up.rss.peakBytes, baselineAnonBytes: base.anon, peakAnonBytes: up.rss.peakAnonBytes, ms: up.ms, bytes: file.size },
          },
        ];
      } finally {
        client.close();
      }
    });
  },
};

export const idleSessions: Workload = {
  id: 'idle',
  title: 'idle authenticated sessions',
  async run(ctx) {
    const n = ctx.config.idleSessions;
    return ctx.withServer('idle', async (server) => {
      await warmUp(ctx, server);
      const base = await baseline(ctx);
      const clients: FtsClient[] = [];
      try {
        ctx.progress(`idle: opening ${n} authenticated sessions`);
        const opened = await ctx.measure(async () => {
          for (let i = 0; i < n; i += CONNECT_BATCH) {
            const batch = await Promise.all(
              Array.from({ length: Math.min(CONNECT_BATCH, n - i) }, (_, j) => ctx.connect(server, ctx.users[(i + j) % ctx.users.length])),
            );
            clients.push(...batch);
          }
        });
        await sleep(1000);
        const settled = await ctx.sampler.now();
        const cost = (settled.lastBytes - base.rss) / MiB;
        const anonCost = (settled.lastAnonBytes - base.anon) / MiB;
        return [
          {
            id: 'idle-sessions',
            section: 'Server memory',
            workload: `RSS of ${n} idle authenticated sessions`,
            value: cost,
            unit: 'MiB',
            target: { text: `≤ ${IDLE_LIMIT_MIB} MiB`, pass: cost <= IDLE_LIMIT_MIB },
            serverRssPeak: Math.max(opened.rss.peakBytes, settled.lastBytes),
            notes: `summed VmRSS baseline ${(base.rss / MiB).toFixed(0)} MiB, with sessions ${(settled.lastBytes / MiB).toFixed(0)} MiB (${((settled.lastBytes - base.rss) / n / 1024).toFixed(1)} KiB/session; RssAnon +${anonCost.toFixed(1)} MiB); connect+auth of all took ${(opened.ms / 1000).toFixed(2)} s`,
            details: { baselineBytes: base.rss, withSessionsBytes: settled.lastBytes, baselineAnonBytes: base.anon, withSessionsAnonBytes: settled.lastAnonBytes, connectMs: opened.ms },
          },
        ];
      } finally {
        for (const c of clients) c.close();
      }
    });
  },
};
