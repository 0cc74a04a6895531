/**
 * Whether the storage is there and answers: its root holds the key its first start wrote (an unmounted
 * storage leaves an empty mount point, on which statfs alone would report the parent file system), and
 * statfs answers within a bound (a hung NFS mount must not hang /metrics or fts-admin status). One probe
 * serves every reader for a second, so a scrape's gauges and a status agree; a probe still hanging is
 * waited on again rather than repeated.
 */
import { stat, statfs } from 'node:fs/promises';
import type { StatsFs } from 'node:fs';
import { errnoReason } from '../../protocol/index.js';
import { saltKeyPath } from '../storage/salt-key.js';

export type StorageProbe = { ok: true; fs: StatsFs } | { ok: false; problem: string };

/** How long a probe may take before the storage counts as not answering. */
export const PROBE_TIMEOUT_MS = 2_000;
/** How long one probe's answer is reused. */
const REUSE_MS = 1_000;

export class StorageHealth {
  private last: { at: number; probe: Promise<StorageProbe> } | null = null;
  /** The file-system calls of the probe under way: never a second one beside it (a hung mount would take a thread each). */
  private inFlight: Promise<StorageProbe> | null = null;

  constructor(private readonly root: string) {}

  probe(): Promise<StorageProbe> {
    const now = Date.now();
    if (this.last !== null && now - this.last.at < REUSE_MS) return this.last.probe;
    if (this.inFlight === null) {
      const calls = probeOnce(this.root);
      this.inFlight = calls;
      void calls.finally(() => {
        if (this.inFlight === calls) this.inFlight = null;
      });
    }
    const probe = withTimeout(this.inFlight, PROBE_TIMEOUT_MS);
    this.last = { at: now, probe };
    return probe;
  }
}

async function probeOnce(root: string): Promise<StorageProbe> {
  const marker = saltKeyPath(root);
  try {
    // The key, not the directory: uploads make .fts's directories again on an empty mount point.
    const st = await stat(marker);
    if (!st.isFile()) return { ok: false, problem: `${marker} is not a file` };
    return { ok: true, fs: await statfs(root) };
  } catch (err) {
    // ENOENT: unmounted (the mount point left behind has none) or removed.
    return { ok: false, problem: `${marker}: ${errnoReason(err)}` };
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
