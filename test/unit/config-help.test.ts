/**
 * fts-server --help gives the range of every numeric option; the range shown is the one the parser
 * enforces (pure: parseConfig only parses, nothing is read or started).
 */
import { expect } from 'chai';
import { ConfigError, parseConfig, usage } from '../../server/config.js';

/** `--flag` → [min, max] as --help shows them. */
function rangesInHelp(): Map<string, [number, number]> {
  const ranges = new Map<string, [number, number]>();
  for (const line of usage().split('\n')) {
    const m = /^\s+(--[a-z-]+)\s.*, (\d+)-(\d+)(?: or \w+)?\]$/.exec(line);
    if (m) ranges.set(m[1]!, [Number(m[2]), Number(m[3])]);
  }
  return ranges;
}

function problemWith(flag: string, value: string): string | null {
  try {
    parseConfig([`${flag}=${value}`], {}); // with =, so that -1 is a value and not an option
    return null;
  } catch (err) {
    if (err instanceof ConfigError) return err.message;
    throw err;
  }
}

describe('fts-server --help: value ranges', function () {
  it('names a range for every integer option, and exactly that range is accepted', function () {
    const ranges = rangesInHelp();
    for (const flag of ['--port', '--workers', '--grace', '--lock-timeout', '--max-header-bytes', '--ban-threshold', '--metrics-port', '--token-ttl']) {
      expect(ranges.has(flag), `--help gives ${flag} a range`).to.equal(true);
    }
    for (const [flag, [min, max]] of ranges) {
      expect(problemWith(flag, String(min)), `${flag} ${min}`).to.equal(null);
      expect(problemWith(flag, String(max)), `${flag} ${max}`).to.equal(null);
      for (const outside of [min - 1, max + 1]) {
        expect(problemWith(flag, String(outside)), `${flag} ${outside}`).to.match(new RegExp(`^${flag}: must be an integer from ${min} to ${max}\\b`));
      }
    }
  });
});
