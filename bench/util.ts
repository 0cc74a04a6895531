/**
 * Small helpers shared by the benchmark modules: timing, sizes, hashing, test-file generation and
 * percentiles. Nothing here talks to the server.
 */
import { createHash, randomFillSync } from 'node:crypto';
import { open } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';

export const KiB = 1024;
export const MiB = 1024 * 1024;
export const GiB = 1024 * MiB;

export interface LocalFile {
  path: string;
  size: number;
  sha256: string;
}

/** Milliseconds since an arbitrary origin, sub-millisecond resolution. */
export function now(): number {
  return performance.now();
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Rejects after `ms` unless `p` settles first; the timer never keeps the process alive. */
export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: timed out after ${Math.round(ms / 1000)} s`)), ms);
    timer.unref();
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

export function mibPerSecond(bytes: number, ms: number): number {
  return bytes / MiB / (ms / 1000);
}

/** The p-th percentile (0..100) by nearest rank of an unsorted sample; NaN when empty. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length)));
  return sorted[rank - 1]!;
}

export function median(values: readonly number[]): number {
  return percentile(values, 50);
}

export function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Deterministic pseudo-random numbers (mulberry32), so a run's operation mix is reproducible. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Writes `size` bytes of incompressible data and fsyncs it (untimed set-up: its write-back must not
 * disturb the first measurement). One random block is reused with the block number stamped into its
 * first bytes, which is much faster than fresh random bytes for a GiB and still unique per block.
 */
export async function makeRandomFile(file: string, size: number, blockBytes = 8 * MiB): Promise<LocalFile> {
  const block = Buffer.allocUnsafe(Math.min(blockBytes, Math.max(size, 1)));
  randomFillSync(block);
  const hash = createHash('sha256');
  const fh = await open(file, 'w', 0o600);
  try {
    for (let written = 0, n = 0; written < size; n++) {
      block.writeUInt32BE(n, 0);
      const piece = block.subarray(0, Math.min(block.length, size - written));
      hash.update(piece);
      for (let done = 0; done < piece.length; ) done += (await fh.write(piece, done, piece.length - done, written + done)).bytesWritten;
      written += piece.length;
    }
    await fh.sync();
  } finally {
    await fh.close();
  }
  return { path: file, size, sha256: hash.digest('hex') };
}

/** A file of `size` zero bytes that occupies no disk blocks (reads of holes cost no I/O). */
export async function makeSparseFile(file: string, size: number): Promise<LocalFile> {
  const fh = await open(file, 'w', 0o600);
  try {
    await fh.truncate(size);
  } finally {
    await fh.close();
  }
  const hash = createHash('sha256');
  const zeros = Buffer.alloc(Math.min(size, 8 * MiB));
  for (let left = size; left > 0; left -= zeros.length) hash.update(left >= zeros.length ? zeros : zeros.subarray(0, left));
  return { path: file, size, sha256: hash.digest('hex') };
}

/** fsyncs a file if it exists (used to settle write-back after an unsynced measurement). */
export async function syncFile(file: string): Promise<void> {
  const fh = await open(file, 'r+').catch(() => null);
  if (fh === null) return;
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

export function errorText(err: unknown): string {
  if (err instanceof Error) return `${err.name === 'Error' ? '' : `${err.name}: `}${err.message}`;
  return String(err);
}
