#!/usr/bin/env node
/**
 * fts benchmark: `npm run bench [-- --quick] [-- --json] [-- --size MiB] [-- --only a,b]`.
 *
 * Starts its own servers (one fresh server per workload) with storage under os.tmpdir(), measures the
 * machine's limits with the same test file, runs the workloads and prints one table (or, with --json,
 * one JSON document on stdout; progress always goes to stderr). Everything it creates is removed at the
 * end, also on failure and on Ctrl+C. Exit status: 0 when the benchmark ran (targets missed print FAIL
 * but do not change it), 1 when a workload broke or an integrity check failed, 2 for a usage error,
 * 130 on Ctrl+C.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { createContext, type BenchConfig } from './context.js';
import { measureLimits, PUBLISH_PARALLEL } from './limits.js';
import { killAll } from './procs.js';
import { renderJson, renderTable, type Report, type Row } from './report.js';
import { RssSampler } from './rss.js';
import { benchServerArgs, REPO_ROOT, type BenchUser } from './server.js';
import { errorText, makeRandomFile, MiB, now, withTimeout } from './util.js';
import { WORKLOADS } from './workloads/index.js';

const USAGE = `usage: node dist/bench/run.js [--quick] [--json] [--size MiB] [--rss-size MiB] [--workers N] [--only ids]
  --quick        smaller sizes for a fast sanity run (128 MiB, 200 files, ...)
  --json         print one JSON document instead of the table
  --size MiB     size of the large-file workloads and limits (default 1024; quick 128)
  --rss-size MiB size of the RSS-growth upload (default 4096; quick 512)
  --workers N    fts-server --workers (default 2)
  --only ids     comma-separated workload ids: ${WORKLOADS.map((w) => w.id).join(', ')}
  --cpu-prof DIR run every server under node --cpu-prof; profiles go to DIR/<workload>/
                 (summarise one with: node dist/bench/profile-summary.js FILE.cpuprofile)`;

/** No single workload may take longer than this (a hang is a broken benchmark, not a slow result). */
const WORKLOAD_TIMEOUT_MS = 10 * 60 * 1000;

function positiveInt(raw: string | undefined, flag: string, fallback: number): number {
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`${flag} must be a positive integer (got "${raw}")`);
  return n;
}

class UsageError extends Error {}

function parseConfig(argv: string[]): BenchConfig {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        quick: { type: 'boolean' },
        json: { type: 'boolean' },
        size: { type: 'string' },
        'rss-size': { type: 'string' },
        workers: { type: 'string' },
        only: { type: 'string' },
        'cpu-prof': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    throw new UsageError(err instanceof Error ? err.message : String(err));
  }
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  const quick = values.quick === true;
  const only = (values.only ?? '').split(',').map((s) => s.trim()).filter((s) => s !== '');
  for (const id of only) if (!WORKLOADS.some((w) => w.id === id)) throw new UsageError(`unknown workload "${id}"`);
  return {
    quick,
    json: values.json === true,
    sizeMiB: positiveInt(values.size, '--size', quick ? 128 : 1024),
    rssUploadMiB: positiveInt(values['rss-size'], '--rss-size', quick ? 512 : 4096),
    smallFiles: quick ? 200 : 1000,
    smallBytes: 4 * 1024,
    publishFiles: quick ? 100 : 300,
    listDirFiles: quick ? 2000 : 10_000,
    concurrentClients: 16,
    concurrentMiB: quick ? 8 : 64,
    mixedClients: 64,
    mixedOpsPerClient: quick ? 10 : 25,
    idleSessions: quick ? 200 : 1000,
    workers: positiveInt(values.workers, '--workers', 2),
    limitRepeats: quick ? 1 : 3,
    only,
    cpuProfDir: values['cpu-prof'] === undefined ? null : path.resolve(values['cpu-prof']),
  };
}

function gitDescription(): string | null {
  try {
    const rev = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: REPO_ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: REPO_ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim() !== '';
    return dirty ? `${rev} (with uncommitted changes)` : rev;
  } catch {
    return null;
  }
}

async function main(): Promise<number> {
  let config: BenchConfig;
  try {
    config = parseConfig(process.argv.slice(2));
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`bench: ${err.message}\n${USAGE}\n`);
    return 2;
  }
  const started = now();
  const progress = (m: string): void => {
    process.stderr.write(`[${((now() - started) / 1000).toFixed(1).padStart(6)} s] ${m}\n`);
  };

  const root = await mkdtemp(path.join(os.tmpdir(), 'fts-bench-'));
  let interrupted = false;
  const cleanupSync = (): void => {
    killAll();
    rmSync(root, { recursive: true, force: true });
  };
  const onSignal = (signal: NodeJS.Signals): void => {
    if (interrupted) return;
    interrupted = true;
    process.stderr.write(`\nbench: ${signal}: stopping and removing ${root}\n`);
    cleanupSync();
    process.exit(signal === 'SIGINT' ? 130 : 143);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('exit', () => {
    if (!interrupted) cleanupSync();
  });

  const sampler = new RssSampler();
  const report: Report = {
    meta: {
      date: new Date().toISOString(),
      git: gitDescription(),
      node: process.version,
      platform: `${os.type()} ${os.release()} ${os.arch()}`,
      cpus: os.availableParallelism(),
      cpuModel: os.cpus()[0]?.model ?? 'unknown',
      memoryGiB: Math.round(os.totalmem() / 2 ** 30),
      tmpdir: os.tmpdir(),
      loadAverageAtStart: os.loadavg().map((l) => Math.round(l * 100) / 100),
      serverArgs: [`--workers ${config.workers}`, ...benchServerArgs()].join(' '),
      config,
    },
    limits: {},
    rows: [],
    errors: [],
  };
  try {
    const users: BenchUser[] = Array.from({ length: 8 }, (_, i) => ({ user: `bench${i}`, password: randomBytes(12).toString('hex') }));
    progress(`writing the ${config.sizeMiB} MiB test file under ${root}`);
    const bigFile = await makeRandomFile(path.join(root, 'testfile.bin'), config.sizeMiB * MiB);
    const publish = { files: config.publishFiles, bytes: config.smallBytes };
    const limits = await measureLimits(bigFile, root, config.limitRepeats, publish, progress);
    report.limits = { bytes: bigFile.size, publishFiles: publish.files, publishBytes: publish.bytes, ...limits };
    const kib = `${config.smallBytes / 1024} KiB`;
    report.rows.push(
      ...(
        [
          ['limit-raw-copy', 'raw loopback copy into a file (1)', limits.rawCopy, limits.runs.rawCopy, 'MiB/s'],
          ['limit-raw-copy-fsync', 'raw loopback copy + fsync (2)', limits.rawCopyFsync, limits.runs.rawCopyFsync, 'MiB/s'],
          ['limit-durable-write', 'durable write: sequential writes + fsync (3)', limits.durableWrite, limits.runs.durableWrite, 'MiB/s'],
          ['limit-publish-serial', `durable publish of ${kib} files, one at a time (4)`, limits.publishSerial, limits.runs.publishSerial, 'files/s'],
          ['limit-publish-parallel', `durable publish of ${kib} files, ${PUBLISH_PARALLEL} at once (5)`, limits.publishParallel, limits.runs.publishParallel, 'files/s'],
        ] as const
      ).map(
        ([id, workload, value, runs, unit]): Row => ({
          id,
          section: `Limits (same ${config.sizeMiB} MiB file; median of ${config.limitRepeats} run${config.limitRepeats === 1 ? '' : 's'})`,
          workload,
          value,
          unit,
          notes: runs.length > 1 ? `runs: ${runs.map((r) => r.toFixed(0)).join(', ')} ${unit}` : undefined,
          details: { runs },
        }),
      ),
    );
    const ctx = createContext({ config, root, bigFile, limits, sampler, users, progress });
    for (const workload of WORKLOADS) {
      if (config.only.length > 0 && !config.only.includes(workload.id)) continue;
      progress(`workload ${workload.id}: ${workload.title}`);
      try {
        report.rows.push(...(await withTimeout(workload.run(ctx), WORKLOAD_TIMEOUT_MS, workload.id)));
      } catch (err) {
        progress(`workload ${workload.id} FAILED: ${errorText(err)}`);
        report.errors.push({ workload: workload.id, error: errorText(err) });
      }
    }
  } catch (err) {
    report.errors.push({ workload: 'setup', error: errorText(err) });
  } finally {
    await sampler.stop();
  }
  report.meta['durationSeconds'] = Math.round((now() - started) / 1000);
  report.meta['loadAverageAtEnd'] = os.loadavg().map((l) => Math.round(l * 100) / 100);
  progress('done');

  if (config.json) process.stdout.write(renderJson(report));
  else {
    const m = report.meta;
    const lines = [
      `fts benchmark — ${String(m['date'])}, git ${String(m['git'])}, node ${String(m['node'])}, ${String(m['cpus'])} CPUs (${String(m['cpuModel'])}), ${String(m['memoryGiB'])} GiB RAM`,
      `server: ${String(m['serverArgs'])}, log level info (to a file), one fresh server per workload; client and server share the machine`,
      `load average (1/5/15 min) at start ${(m['loadAverageAtStart'] as number[]).join(' ')}, at end ${(m['loadAverageAtEnd'] as number[]).join(' ')} (the end includes this benchmark)`,
      ...((m['loadAverageAtStart'] as number[])[0]! > 0.5 * os.availableParallelism()
        ? ['WARNING: the machine was busy with other work when the benchmark started; expect lower and noisier numbers']
        : []),
      ...(config.quick ? ['QUICK MODE: reduced sizes; PASS/FAIL is indicative only'] : []),
      '',
      renderTable(report),
      '',
      `total ${String(m['durationSeconds'])} s`,
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
  }
  await rm(root, { recursive: true, force: true });
  const integrityBroken = report.rows.some((r) => r.id === 'mixed-integrity' && r.value > 0);
  return report.errors.length > 0 || integrityBroken ? 1 : 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 1;
  },
);
