/**
 * The limits every fts number is compared with, measured in the same run with the same file:
 *   rawCopy       a minimal Node TCP sender → receiver process writing a file (no hashing, no fsync)
 *   rawCopyFsync  the same, followed by fsync of the received file
 *   durableWrite  the disk alone: the file written with large sequential writes, then fsync (dd conv=fsync)
 *   publish…      durable small-file publication, what an fts upload of a small file must at least do:
 *                 create a temporary file, write 4 KiB, fsync, close, rename into place, fsync the
 *                 directory; one at a time (serial) and 16 at once (parallel: fsyncs can share journal
 *                 commits). In files/s.
 * Each is the median of `repeats` runs. On the shared, virtualised test machine single runs scatter by a
 * factor of two in both directions (a host-side write cache sometimes absorbs a whole GiB "durably"), so
 * the best run would be an outlier and the worst one noise; the median is the honest middle.
 */
import { fork } from 'node:child_process';
import { closeSync, createReadStream, fsyncSync, openSync, readSync, writeSync } from 'node:fs';
import { mkdir, open, rename, rm, unlink } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { track } from './procs.js';
import { median, mibPerSecond, MiB, now, syncFile, withTimeout, type LocalFile } from './util.js';

export interface Limits {
  /** MiB/s */
  rawCopy: number;
  rawCopyFsync: number;
  durableWrite: number;
  /** files/s */
  publishSerial: number;
  publishParallel: number;
  /** Every individual run (MiB/s, files/s). */
  runs: Record<'rawCopy' | 'rawCopyFsync' | 'durableWrite' | 'publishSerial' | 'publishParallel', number[]>;
}

const RECEIVER = path.join(path.dirname(fileURLToPath(import.meta.url)), 'limit-receiver.js');

/** One raw copy of `src` over loopback into `out`; resolves with the elapsed milliseconds. */
export function rawCopyOnce(src: LocalFile, out: string, fsync: boolean, timeoutMs: number): Promise<number> {
  const child = track(fork(RECEIVER, [out, ...(fsync ? ['--fsync'] : [])], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] }));
  const run = new Promise<number>((resolve, reject) => {
    let t0 = 0;
    child.on('message', (m: { port?: number; done?: boolean; bytes?: number; error?: string }) => {
      if (m.port !== undefined) {
        t0 = now();
        const socket = net.connect({ host: '127.0.0.1', port: m.port });
        socket.on('error', reject);
        socket.on('connect', () => createReadStream(src.path, { highWaterMark: 4 * MiB }).pipe(socket));
      } else if (m.done) {
        const ms = now() - t0;
        if (m.error !== undefined) reject(new Error(`raw copy receiver: ${m.error}`));
        else if (m.bytes !== src.size) reject(new Error(`raw copy received ${m.bytes} of ${src.size} bytes`));
        else resolve(ms);
      }
    });
    child.once('exit', (code) => reject(new Error(`raw copy receiver exited (${code}) before reporting`)));
  });
  return withTimeout(run, timeoutMs, 'raw copy').finally(() => {
    if (child.exitCode === null && child.pid !== undefined) child.kill('SIGKILL');
  });
}

/** dd conv=fsync: sequential large writes of the file's bytes, then one fsync. Synchronous on purpose. */
export function durableWriteOnce(src: LocalFile, out: string, blockBytes = 8 * MiB): number {
  const buf = Buffer.allocUnsafe(blockBytes);
  const inFd = openSync(src.path, 'r');
  const t0 = now();
  const outFd = openSync(out, 'w', 0o600);
  try {
    for (let pos = 0; pos < src.size; ) {
      const n = readSync(inFd, buf, 0, Math.min(buf.length, src.size - pos), pos);
      if (n === 0) throw new Error('source file shrank');
      for (let done = 0; done < n; ) done += writeSync(outFd, buf, done, n - done, pos + done);
      pos += n;
    }
    fsyncSync(outFd);
  } finally {
    closeSync(outFd);
    closeSync(inFd);
  }
  return now() - t0;
}

/** Parallelism of the parallel publish limit. */
export const PUBLISH_PARALLEL = 16;

/**
 * Publishes `count` files of `bytes` bytes durably (temp file, write, fsync, close, rename, directory
 * fsync), `concurrency` at a time; returns the elapsed milliseconds.
 */
export async function publishOnce(dir: string, count: number, bytes: number, concurrency: number): Promise<number> {
  const staging = path.join(dir, 'staging');
  const target = path.join(dir, 'published');
  await mkdir(staging, { recursive: true });
  await mkdir(target, { recursive: true });
  const data = Buffer.alloc(bytes, 0x5a);
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < count) {
      const i = next++;
      const tmp = path.join(staging, `p${i}.part`);
      const fh = await open(tmp, 'wx', 0o600);
      try {
        await fh.write(data, 0, data.length, 0);
        await fh.sync();
      } finally {
        await fh.close();
      }
      await rename(tmp, path.join(target, `p${i}.bin`));
      const dh = await open(target, 'r');
      try {
        await dh.sync();
      } finally {
        await dh.close();
      }
    }
  };
  const t0 = now();
  await Promise.all(Array.from({ length: concurrency }, lane));
  const ms = now() - t0;
  await rm(staging, { recursive: true, force: true });
  await rm(target, { recursive: true, force: true });
  return ms;
}

export async function measureLimits(
  src: LocalFile,
  dir: string,
  repeats: number,
  publish: { files: number; bytes: number },
  progress: (m: string) => void,
): Promise<Limits> {
  const runs: Limits['runs'] = { rawCopy: [], rawCopyFsync: [], durableWrite: [], publishSerial: [], publishParallel: [] };
  const out = path.join(dir, 'limit.out');
  const timeoutMs = 60_000 + (src.size / MiB) * 200; // far above any plausible run: ≥ 5 MiB/s
  for (let i = 0; i < repeats; i++) {
    progress(`limits: raw loopback copy (${i + 1}/${repeats})`);
    runs.rawCopy.push(mibPerSecond(src.size, await rawCopyOnce(src, out, false, timeoutMs)));
    await syncFile(out); // untimed: its write-back must not slow the next measurement
    await unlink(out);
    progress(`limits: raw loopback copy + fsync (${i + 1}/${repeats})`);
    runs.rawCopyFsync.push(mibPerSecond(src.size, await rawCopyOnce(src, out, true, timeoutMs)));
    await unlink(out);
    progress(`limits: durable write (${i + 1}/${repeats})`);
    runs.durableWrite.push(mibPerSecond(src.size, durableWriteOnce(src, out)));
    await unlink(out);
    progress(`limits: durable publish of ${publish.files} small files, serial and ${PUBLISH_PARALLEL} parallel (${i + 1}/${repeats})`);
    const pubDir = path.join(dir, 'publish-limit');
    runs.publishSerial.push(publish.files / ((await publishOnce(pubDir, publish.files, publish.bytes, 1)) / 1000));
    runs.publishParallel.push(publish.files / ((await publishOnce(pubDir, publish.files, publish.bytes, PUBLISH_PARALLEL)) / 1000));
  }
  return {
    rawCopy: median(runs.rawCopy),
    rawCopyFsync: median(runs.rawCopyFsync),
    durableWrite: median(runs.durableWrite),
    publishSerial: median(runs.publishSerial),
    publishParallel: median(runs.publishParallel),
    runs,
  };
}
