/**
 * fts-server --help gives the range of every numeric option; the range shown is the one the parser
 * enforces (pure: parseConfig only parses, nothing is read or started).
 */
import { expect } from 'chai';
import { ConfigError, isLoopbackHost, parseConfig, usage } from '../../server/config.js';

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

/** The configuration `args` make (not --help or --version). */
function configOf(args: string[]): Exclude<ReturnType<typeof parseConfig>, string> {
  const config = parseConfig(args, {});
  if (typeof config === 'string') throw new Error('expected a configuration');
  return config;
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

describe('fts-server numbers and environment values', function () {
  it('takes decimal digits only: 0x4e20, 1e4, 0b101, " 20001", "+5" and "5.0" are refused, not read as numbers', function () {
    for (const value of ['0x4e20', '1e4', '0b100111000100010', ' 20001', '20001 ', '+5', '5.0', '']) {
      expect(problemWith('--port', value), JSON.stringify(value)).to.match(/^--port: must be an integer from 0 to 65535 \(got /);
    }
    expect(problemWith('--port', '020001')).to.equal(null); // leading zeros are still decimal
  });

  it('an empty variable is an unset one (the default), as fts and fts-admin read theirs', function () {
    const config = parseConfig([], { FTS_PORT: '', FTS_ADMIN_SOCKET: '', FTS_GRACE: '', FTS_PROXY_PROTOCOL: '' });
    if (typeof config === 'string') throw new Error('expected a configuration');
    expect(config).to.include({ port: 5421, graceSeconds: 30, proxyProtocol: false });
    expect(config.adminSocket).to.match(/admin\.sock$/);
  });

  it('on/off variables take 1/true and 0/false in any case; anything else is refused', function () {
    const proxy = (value: string): boolean => {
      const config = parseConfig([], { FTS_PROXY_PROTOCOL: value });
      if (typeof config === 'string') throw new Error('expected a configuration');
      return config.proxyProtocol;
    };
    for (const on of ['1', 'true', 'TRUE', 'True']) expect(proxy(on), on).to.equal(true);
    for (const off of ['0', 'false', 'FALSE', '']) expect(proxy(off), off).to.equal(false);
    expect(() => proxy('yes')).to.throw(ConfigError, /FTS_PROXY_PROTOCOL must be 1 or true/);
  });
});

describe('fts-server: which --host is loopback (no warning about plaintext)', function () {
  it('127.0.0.0/8, ::1 and localhost are; any other address, the wildcards included, is not', function () {
    for (const host of ['127.0.0.1', '127.0.0.2', '127.255.255.254', '::1', 'localhost']) expect(isLoopbackHost(host), host).to.equal(true);
    for (const host of ['0.0.0.0', '::', '10.0.0.1', '192.168.1.5', '128.0.0.1', '::ffff:10.0.0.1', 'fts.example', '127.example']) expect(isLoopbackHost(host), host).to.equal(false);
  });
});

describe('fts-server --proxy-from', function () {
  it('any (the default) is null; a list of addresses and CIDR prefixes is kept; anything else is refused', function () {
    const proxyFrom = (args: string[]): string | null => configOf(args).proxyFrom;
    expect(proxyFrom([])).to.equal(null);
    expect(proxyFrom(['--proxy-from', 'ANY'])).to.equal(null);
    expect(proxyFrom(['--proxy-from', '10.0.0.0/8, 127.0.0.2,2001:db8::/32'])).to.equal('10.0.0.0/8, 127.0.0.2,2001:db8::/32');
    for (const bad of ['', 'haproxy.example', '10.0.0.0/33', '10.0.0.1,', 'fe80::1%eth0']) {
      expect(problemWith('--proxy-from', bad), JSON.stringify(bad)).to.match(/^--proxy-from: must be any, or IPv4\/IPv6 addresses and CIDR prefixes separated by commas/);
    }
  });
});

describe('fts-server --ban-exempt', function () {
  it('none (the default) is null; a list of addresses and CIDR prefixes is kept; any is refused (say --ban-threshold 0), so is anything else', function () {
    const banExempt = (args: string[]): string | null => configOf(args).banExempt;
    expect(banExempt([])).to.equal(null);
    expect(banExempt(['--ban-exempt', 'None'])).to.equal(null);
    expect(banExempt(['--ban-exempt', '192.0.2.0/24, ::1'])).to.equal('192.0.2.0/24, ::1');
    expect(problemWith('--ban-exempt', 'any')).to.match(/^--ban-exempt: any would exempt every address; use --ban-threshold 0/);
    for (const bad of ['', 'monitor.example', '10.0.0.0/33', '10.0.0.1,']) {
      expect(problemWith('--ban-exempt', bad), JSON.stringify(bad)).to.match(/^--ban-exempt: must be none, or IPv4\/IPv6 addresses and CIDR prefixes separated by commas/);
    }
  });
});
