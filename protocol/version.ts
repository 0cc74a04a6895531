import { readFileSync } from 'node:fs';

/**
 * The package version, read once from package.json (two levels up from dist/protocol/, one from protocol/),
 * for the greeting, `fts-admin status` and each tool's --version. Not part of the protocol index: the codec
 * stays free of file reads.
 */
function readVersion(): string {
  for (const rel of ['../../package.json', '../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'fts' && typeof pkg.version === 'string') return pkg.version;
    } catch {
      // try the next candidate
    }
  }
  return '0.0.0';
}

export const PACKAGE_VERSION = readVersion();
