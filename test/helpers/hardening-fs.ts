/**
 * Filesystem fixtures for the hostile-filesystem tests: special files (FIFO, device node) made with the
 * system tools, and a small tmpfs mount (root only). Every command is bounded in time.
 */
import { execFile } from 'node:child_process';
import { tempDir } from './temp.js';

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command without a shell; never rejects (the exit code says how it went). */
export function run(cmd: string, args: readonly string[], timeoutMs = 15_000): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(cmd, [...args], { timeout: timeoutMs, encoding: 'utf8' }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof (err as NodeJS.ErrnoException & { code?: unknown }).code === 'number' ? Number((err as { code: unknown }).code) : 1;
      resolve({ code, stdout, stderr: stderr || (err ? err.message : '') });
    });
  });
}

export async function mkfifo(file: string): Promise<void> {
  const r = await run('mkfifo', ['-m', '0600', file]);
  if (r.code !== 0) throw new Error(`mkfifo ${file} failed: ${r.stderr}`);
}

/** mknod of a character device; resolves false when not permitted (not root, or no CAP_MKNOD). */
export async function mknodChar(file: string, major: number, minor: number): Promise<boolean> {
  const r = await run('mknod', ['-m', '0600', file, 'c', String(major), String(minor)]);
  return r.code === 0;
}

export async function mountTmpfs(dir: string, size: string, inodes?: number): Promise<RunResult> {
  return run('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0700${inodes === undefined ? '' : `,nr_inodes=${inodes}`}`, 'tmpfs', dir]);
}

export async function remountReadOnly(dir: string): Promise<RunResult> {
  return run('mount', ['-o', 'remount,ro', dir]);
}

/** True when `dir` is a mount point (per /proc/self/mounts). */
export async function isMountPoint(dir: string): Promise<boolean> {
  const r = await run('cat', ['/proc/self/mounts']);
  return r.stdout.split('\n').some((line) => line.split(' ')[1] === dir);
}

/** Unmounts `dir`, lazily if it is busy; bounded retries. Never throws. */
export async function unmount(dir: string): Promise<void> {
  for (let attempt = 0; attempt < 5 && (await isMountPoint(dir)); attempt++) {
    const r = await run('umount', [dir]);
    if (r.code === 0) return;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  if (await isMountPoint(dir)) await run('umount', ['-l', dir]);
}

/**
 * Mounts `source` at `dir` with every owner shown as nobody (bindfs --force-user), as NFS all_squash or
 * CIFS uid= would: a file this process creates there is shown with another uid than its own.
 * Needs bindfs and FUSE (the exit code says whether it worked); unmount with unmount().
 */
export async function mountOwnerMapped(source: string, dir: string): Promise<RunResult> {
  return run('bindfs', ['--force-user=nobody', '--force-group=nogroup', source, dir]);
}

/**
 * A tmpfs mounted on a fresh temporary directory, for a `describe` whose storage root it is: `mount()` in
 * `before` (false, with a line saying why, when mounting is not allowed: not root), `release()` in `after`
 * (unmounts, then removes the directory; throws if it stays mounted).
 */
export function tmpfsStorage(prefix: string, size: string, inodes?: number): { dir: () => string; mount: () => Promise<boolean>; release: () => Promise<void> } {
  let dir = '';
  let cleanup: (() => Promise<void>) | null = null;
  let mounted = false;
  return {
    dir: () => dir,
    mount: async () => {
      const t = await tempDir(prefix);
      dir = t.dir;
      cleanup = t.cleanup;
      const r = await mountTmpfs(dir, size, inodes);
      if (r.code !== 0) {
        await cleanup();
        cleanup = null;
        console.log(`      (skipped: mount -t tmpfs failed: ${r.stderr.trim()}; these tests need root / CAP_SYS_ADMIN)`);
        return false;
      }
      mounted = true;
      return true;
    },
    release: async () => {
      if (mounted) await unmount(dir);
      if (cleanup) {
        if (await isMountPoint(dir)) throw new Error(`could not unmount ${dir}`);
        await cleanup();
      }
    },
  };
}
