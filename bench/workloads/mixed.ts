/**
 * Many library clients at once, each running a reproducible random mix of operations on its own files:
 * upload (small and medium, from memory), download (verified by the library and again here by SHA-256),
 * view, list and delete. Reports per-operation latency percentiles and integrity failures.
 */
import { randomBytes } from 'node:crypto';
import type { FtsClient } from '../../client/index.js';
import { FtsError } from '../../client/index.js';
import type { Workload } from '../context.js';
import type { Row } from '../report.js';
import { KiB, MiB, now, percentile, prng, sha256 } from '../util.js';

type Op = 'upload-small' | 'upload-medium' | 'download' | 'view' | 'list' | 'delete';

/** Cumulative weights of the mix. */
const MIX: Array<[Op, number]> = [
  ['upload-small', 0.25],
  ['upload-medium', 0.35], // 256 KiB – 1 MiB
  ['download', 0.7],
  ['view', 0.82],
  ['list', 0.92],
  ['delete', 1],
];

interface Tally {
  latencies: Map<Op, number[]>;
  integrityFailures: string[];
  errors: string[];
  bytes: number;
}

/** Random bytes shared by all generated files; each file is a slice of it behind a unique prefix. */
const POOL = randomBytes(2 * MiB);

function content(name: string, size: number, rand: () => number): Buffer {
  const data = Buffer.allocUnsafe(size);
  const from = Math.floor(rand() * (POOL.length - size));
  POOL.copy(data, 0, from, from + size);
  data.write(`${name}\n`, 0, Math.min(size, 64), 'utf8');
  return data;
}

function pick(r: number): Op {
  for (const [op, upTo] of MIX) if (r < upTo) return op;
  return 'list';
}

async function clientRun(client: FtsClient, index: number, ops: number, tally: Tally): Promise<void> {
  const rand = prng(0x5eed + index);
  const mine = new Map<string, Buffer>(); // name → content this client last uploaded
  let serial = 0;
  const any = (): string | undefined => {
    const names = [...mine.keys()];
    return names.length === 0 ? undefined : names[Math.floor(rand() * names.length)];
  };
  for (let i = 0; i < ops; i++) {
    let op = i < 2 ? 'upload-small' : pick(rand());
    const target = any();
    if ((op === 'download' || op === 'view' || op === 'delete') && target === undefined) op = 'upload-small';
    const t0 = now();
    try {
      switch (op) {
        case 'upload-small':
        case 'upload-medium': {
          const size = op === 'upload-small' ? 4 * KiB + Math.floor(rand() * 60 * KiB) : 256 * KiB + Math.floor(rand() * 768 * KiB);
          const name = `c${index}-${serial++}.bin`;
          const data = content(name, size, rand);
          const r = await client.uploadBuffer(name, data);
          if (r.sha256 !== sha256(data)) tally.integrityFailures.push(`upload ${name}: reply sha256 differs`);
          mine.set(name, data);
          tally.bytes += size;
          break;
        }
        case 'download': {
          const want = mine.get(target!)!;
          const r = await client.downloadBuffer(target!);
          if (!r.data.equals(want) || sha256(r.data) !== sha256(want)) tally.integrityFailures.push(`download ${target}: content differs`);
          tally.bytes += r.data.length;
          break;
        }
        case 'view': {
          const want = mine.get(target!)!;
          const data = await client.view(target!);
          if (!data.equals(want.subarray(0, 1024))) tally.integrityFailures.push(`view ${target}: content differs`);
          break;
        }
        case 'list': {
          const names = new Set((await client.list({ long: true })).map((e) => e.name));
          for (const name of mine.keys()) if (!names.has(name)) tally.integrityFailures.push(`list: ${name} missing`);
          break;
        }
        case 'delete':
          await client.delete(target!);
          mine.delete(target!);
          break;
      }
      tally.latencies.get(op)!.push(now() - t0);
    } catch (err) {
      const integrity = err instanceof FtsError && (err.code === 'CHECKSUM_MISMATCH' || err.code === 'CHUNK_CORRUPT');
      (integrity ? tally.integrityFailures : tally.errors).push(`${op}: ${err instanceof Error ? err.message : String(err)}`);
      if (!client.connected) return;
    }
  }
}

export const mixedClients: Workload = {
  id: 'mixed',
  title: 'concurrent library clients, mixed operations',
  async run(ctx) {
    const n = ctx.config.mixedClients;
    const ops = ctx.config.mixedOpsPerClient;
    return ctx.withServer('mixed', async (server) => {
      const tally: Tally = { latencies: new Map(MIX.map(([op]) => [op, []])), integrityFailures: [], errors: [], bytes: 0 };
      ctx.progress(`mixed: ${n} library clients × ${ops} operations`);
      const clients = await Promise.all(Array.from({ length: n }, (_, i) => ctx.connect(server, ctx.users[i % ctx.users.length])));
      let m;
      try {
        m = await ctx.measure(() => Promise.all(clients.map((c, i) => clientRun(c, i, ops, tally))));
        await Promise.all(clients.map((c) => c.quit().catch(() => undefined)));
      } finally {
        for (const c of clients) c.close();
      }
      const all = [...tally.latencies.values()].flat();
      const section = `Mixed load (${n} library clients at once)`;
      const perOp = [...tally.latencies].map(([op, l]) => `${op} ${l.length}× p50 ${percentile(l, 50).toFixed(0)}/p99 ${percentile(l, 99).toFixed(0)} ms`).join('; ');
      const common = { section, serverRssPeak: m.rss.peakBytes };
      const rows: Row[] = [
        {
          ...common,
          id: 'mixed-p50',
          workload: `operation latency p50 (${all.length} ops)`,
          value: percentile(all, 50),
          unit: 'ms',
          notes: perOp,
          details: Object.fromEntries([...tally.latencies].map(([op, l]) => [op, { count: l.length, p50: percentile(l, 50), p99: percentile(l, 99) }])),
        },
        { ...common, id: 'mixed-p99', workload: 'operation latency p99', value: percentile(all, 99), unit: 'ms' },
        {
          ...common,
          id: 'mixed-throughput',
          workload: 'operations completed per second',
          value: all.length / (m.ms / 1000),
          unit: 'ops/s',
          notes: `${(m.ms / 1000).toFixed(2)} s; ${(tally.bytes / MiB).toFixed(0)} MiB moved; server CPU ${m.rss.cpuSeconds.toFixed(2)} s`,
        },
        {
          ...common,
          id: 'mixed-integrity',
          workload: 'integrity failures',
          value: tally.integrityFailures.length,
          unit: 'failures',
          target: { text: '= 0', pass: tally.integrityFailures.length === 0 },
          notes: tally.integrityFailures.slice(0, 3).join('; ') || undefined,
          details: { failures: tally.integrityFailures.slice(0, 50) },
        },
        {
          ...common,
          id: 'mixed-errors',
          workload: 'operation errors',
          value: tally.errors.length,
          unit: 'errors',
          target: { text: '= 0', pass: tally.errors.length === 0 },
          notes: tally.errors.slice(0, 3).join('; ') || undefined,
          details: { errors: tally.errors.slice(0, 50) },
        },
      ];
      return rows;
    });
  },
};
