/**
 * Whether the storage is there and answers: its root holds the `.fts` directory every start makes (an
 * unmounted storage leaves an empty mount point, on which statfs alone would report the parent file
 * system), and statfs answers within a bound (a hung NFS mount must not hang /metrics or fts-admin
 * status). One probe serves every reader for a second, so a scrape's gauges and a status agree.
 */
import { stat, statfs } from 'node:fs/promises';
import type { StatsFs } from 'node:fs';
import { errnoReason } from '../../protocol/index.js';
import { internalDir } from '../storage/paths.js';

export type StorageProbe = { ok: true; fs: StatsFs } | { ok: false; problem: string };

/** How long a probe may take before the storage counts as not answering. */
export const PROBE_TIMEOUT_MS = 2_000;
/** How long one probe's answer is reused. */
const REUSE_MS = 1_000;

export class StorageHealth {
  private last: { at: number; probe: Promise<StorageProbe> } | null = null;

  constructor(private readonly root: string) {}

  probe(): Promise<StorageProbe> {
    const now = Date.now();
    if (this.last !== null && now - this.last.at < REUSE_MS) return this.last.probe;
    const probe = withTimeout(probeOnce(this.root), PROBE_TIMEOUT_MS);
    this.last = { at: now, probe };
    return probe;
  }
}

async function probeOnce(root: string): Promise<StorageProbe> {
  try {
    const st = await stat(internalDir(root));
    if (!st.isDirectory()) return { ok: false, problem: `${internalDir(root)} is not a directory` };
    return { ok: true, fs: await statfs(root) };
  } catch (err) {
    // ENOENT: unmounted (or removed); the mount point left behind has no .fts.
    return { ok: false, problem: `${internalDir(root)}: ${errnoReason(err)}` };
  }
}

async function withTimeout(probe: Promise<StorageProbe>, ms: number): Promise<StorageProbe> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<StorageProbe>((resolve) => {
    timer = setTimeout(() => resolve({ ok: false, problem: `the storage did not answer within ${ms / 1000} s` }), ms);
  });
  try {
    return await Promise.race([probe, late]);
  } finally {
    clearTimeout(timer);
  }
}
