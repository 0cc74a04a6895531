#!/usr/bin/env node
import cluster from 'node:cluster';
import { PACKAGE_VERSION } from '../protocol/version.js';
import { ConfigError, parseConfig, usage, type Config, type InfoRequest } from './config.js';
import { createLogger } from './log.js';

/**
 * Entry point of fts-server. Exit codes: 0 clean stop, 1 startup or runtime failure, 2 bad flag or
 * environment value. Startup problems are one line on stderr naming the problem.
 */
async function main(): Promise<void> {
  // Each process loads only its own side (a worker none of the primary's modules, and the reverse): less to
  // read at start, and fewer files open at once while Node reads a module graph, which a worker started
  // under a low open-file limit (ulimit -n) would otherwise spend before its first connection.
  if (!cluster.isPrimary) {
    const { runWorker } = await import('./worker/main.js');
    await runWorker(JSON.parse(process.env['FTS_WORKER_CONFIG'] ?? '{}') as Config);
    return;
  }
  let config: Config | InfoRequest;
  try {
    config = parseConfig(process.argv.slice(2));
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`fts-server: ${err.message} (see 'fts-server --help')\n`);
      process.exit(2);
    }
    throw err;
  }
  if (config === 'help' || config === 'version') {
    process.stdout.write(`${config === 'help' ? usage() : `fts-server ${PACKAGE_VERSION}`}\n`);
    return;
  }
  const { runPrimary, StartupError } = await import('./primary/main.js');
  try {
    await runPrimary(config, createLogger(config.logLevel, 'primary'));
  } catch (err) {
    if (err instanceof StartupError) {
      process.stderr.write(`fts-server: ${err.message}\n`);
      process.exit(1);
    }
    throw err;
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`fts-server: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
