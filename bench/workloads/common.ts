/** Helpers shared by the workload modules. */
import { mkdir, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import type { Measured } from '../context.js';
import { GiB, sha256 } from '../util.js';

/** "server CPU 3.1 s (2.9 s/GiB), client CPU 2.0 s (1.9 s/GiB)" */
export function cpuNote(m: Measured<unknown>, bytes?: number): string {
  const perGiB = (s: number): string => (bytes === undefined || bytes === 0 ? '' : ` (${(s / (bytes / GiB)).toFixed(2)} s/GiB)`);
  return `server CPU ${m.rss.cpuSeconds.toFixed(2)} s${perGiB(m.rss.cpuSeconds)}, client CPU ${m.clientCpuSeconds.toFixed(2)} s${perGiB(m.clientCpuSeconds)}`;
}

/**
 * "1930 µs server CPU, 4.3 write + 2.2 read syscalls, 20.7 context switches per file": the server's cost of
 * one operation. The counts are steadier than times on a shared machine, so they show what a change saves.
 */
export function perOperationNote(m: Measured<unknown>, count: number, unit = 'file'): string {
  const per = (n: number, digits = 1): string => (n / count).toFixed(digits);
  return `${per(m.rss.cpuSeconds * 1e6, 0)} µs server CPU, ${per(m.rss.syscalls.write)} write + ${per(m.rss.syscalls.read)} read syscalls, ${per(m.rss.contextSwitches)} context switches per ${unit}`;
}

/** The same counts for a row's JSON details. */
export function serverCounts(m: Measured<unknown>): { serverCpuSeconds: number; serverSyscalls: { read: number; write: number }; serverContextSwitches: number } {
  return { serverCpuSeconds: m.rss.cpuSeconds, serverSyscalls: m.rss.syscalls, serverContextSwitches: m.rss.contextSwitches };
}

export interface SmallFile {
  name: string;
  path: string;
  sha256: string;
}

/** `count` files of `bytes` random bytes named f00000.bin … in `dir`. */
export async function makeSmallFiles(dir: string, count: number, bytes: number, prefix = 'f'): Promise<SmallFile[]> {
  await mkdir(dir, { recursive: true });
  const files: SmallFile[] = [];
  for (let i = 0; i < count; i++) {
    const name = `${prefix}${String(i).padStart(5, '0')}.bin`;
    const data = randomBytes(bytes);
    const file = path.join(dir, name);
    await writeFile(file, data);
    files.push({ name, path: file, sha256: sha256(data) });
  }
  return files;
}

/** Throws with the CLI's stderr when it did not exit 0. */
export function checkExit(what: string, r: { code: number | null; signal: NodeJS.Signals | null; stderr: string }): void {
  if (r.code !== 0) throw new Error(`${what} exited with ${r.code ?? r.signal}: ${r.stderr.trim().slice(0, 500)}`);
}
