/**
 * What every workload gets: the configuration, the shared test file, the limits, a fresh server per
 * workload, the RSS sampler, and helpers to connect with the library or run the `fts` CLI.
 */
import { mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { FtsClient } from '../client/index.js';
import type { Limits } from './limits.js';
import { runCommand, type RunResult } from './procs.js';
import type { Row } from './report.js';
import type { RssSampler, RssWindow } from './rss.js';
import { BenchServer, CLIENT_CLI, type BenchUser } from './server.js';
import { now, type LocalFile } from './util.js';

export interface BenchConfig {
  quick: boolean;
  json: boolean;
  /** Size of the large-file workloads, MiB. */
  sizeMiB: number;
  /** Size of the RSS-growth upload, MiB. */
  rssUploadMiB: number;
  smallFiles: number;
  smallBytes: number;
  /** Files per run of the small-file publish limits. */
  publishFiles: number;
  listDirFiles: number;
  concurrentClients: number;
  concurrentMiB: number;
  mixedClients: number;
  mixedOpsPerClient: number;
  idleSessions: number;
  /** fts-server --workers. */
  workers: number;
  limitRepeats: number;
  /** When set, every server runs with node --cpu-prof and writes its profiles under DIR/<workload>/. */
  cpuProfDir: string | null;
  /** Workload ids to run (all when empty). */
  only: string[];
}

export interface Measured<T> {
  ms: number;
  value: T;
  rss: RssWindow;
  /** CPU seconds of this (client) process during the measurement. */
  clientCpuSeconds: number;
}

export interface BenchContext {
  readonly config: BenchConfig;
  /** The benchmark's temporary root (removed at the end). */
  readonly root: string;
  readonly bigFile: LocalFile;
  readonly limits: Limits;
  readonly sampler: RssSampler;
  readonly users: readonly BenchUser[];
  progress(message: string): void;
  /** A fresh directory under the temporary root for this workload's local files. */
  scratch(name: string): Promise<string>;
  /** Runs `fn` against a freshly started server that the sampler watches; stops and removes it after. */
  withServer<T>(name: string, fn: (server: BenchServer) => Promise<T>): Promise<T>;
  connect(server: BenchServer, user?: BenchUser): Promise<FtsClient>;
  /** Times `fn` and records the server's peak RSS and CPU time meanwhile. */
  measure<T>(fn: () => Promise<T>): Promise<Measured<T>>;
  /** Runs the fts CLI as a separate process (password through FTS_PASSWORD). */
  cli(server: BenchServer, args: readonly string[], options?: { user?: BenchUser; cwd?: string; timeoutMs?: number }): Promise<RunResult>;
}

export interface Workload {
  id: string;
  title: string;
  run(ctx: BenchContext): Promise<Row[]>;
}

export function createContext(base: {
  config: BenchConfig;
  root: string;
  bigFile: LocalFile;
  limits: Limits;
  sampler: RssSampler;
  users: readonly BenchUser[];
  progress: (m: string) => void;
}): BenchContext {
  let serial = 0;
  const defaultUser = base.users[0]!;
  return {
    ...base,
    async scratch(name) {
      const dir = path.join(base.root, `${name}-${++serial}`);
      await rm(dir, { recursive: true, force: true });
      await mkdir(dir, { recursive: true });
      return dir;
    },
    async withServer(name, fn) {
      const prof = base.config.cpuProfDir;
      const nodeArgs = prof === null ? [] : ['--cpu-prof', '--cpu-prof-dir', path.join(prof, name)];
      const server = await BenchServer.start(path.join(base.root, `srv-${name}-${++serial}`), base.users, base.config.workers, { nodeArgs });
      base.sampler.watch(server.pid);
      try {
        const result = await fn(server);
        const problems = await server.problems();
        if (problems.length > 0) base.progress(`${name}: server logged ${problems.length} warning(s)/error(s), first: ${problems[0]}`);
        return result;
      } finally {
        base.sampler.watch(null);
        await server.stop();
      }
    },
    async connect(server, user = defaultUser) {
      const client = await FtsClient.connect({ host: '127.0.0.1', port: server.port, connectTimeoutMs: 15_000 });
      await client.auth(user.user, user.password);
      return client;
    },
    async measure(fn) {
      const end = base.sampler.begin();
      const cpu0 = process.cpuUsage();
      const t0 = now();
      let value: Awaited<ReturnType<typeof fn>>;
      try {
        value = await fn();
      } catch (err) {
        await end();
        throw err;
      }
      const ms = now() - t0;
      const cpu = process.cpuUsage(cpu0);
      const rss = await end();
      return { ms, value, rss, clientCpuSeconds: (cpu.user + cpu.system) / 1e6 };
    },
    cli(server, args, options = {}) {
      const user = options.user ?? defaultUser;
      return runCommand(process.execPath, [CLIENT_CLI, '--host', '127.0.0.1', '--port', String(server.port), '--user', user.user, ...args], {
        env: { ...process.env, FTS_PASSWORD: user.password },
        cwd: options.cwd,
        timeoutMs: options.timeoutMs ?? 120_000,
      });
    },
  };
}
