import { expect } from 'chai';
import { parseProxyV2, ProxyRefusalLog } from '../../server/worker/proxy-protocol.js';
import { proxyV2Header, proxyV2HeaderIpv6, proxyV2Local } from '../helpers/multinode-direct.js';

describe('ProxyRefusalLog', function () {
  it('writes the first refusal at once, then at most one line a minute carrying the count since the last line', function () {
    const lines: Array<{ remote: string; problem: string; refusedSinceLastLine: number }> = [];
    const log = new ProxyRefusalLog((fields) => lines.push(fields));
    log.refused('10.0.0.1:1', 'not a PROXY protocol v2 header', 1_000);
    expect(lines).to.deep.equal([{ remote: '10.0.0.1:1', problem: 'not a PROXY protocol v2 header', refusedSinceLastLine: 1 }]);
    for (let i = 0; i < 500; i++) log.refused(`10.0.0.2:${i}`, 'no PROXY protocol v2 header within 5 s', 2_000 + i * 100);
    expect(lines, 'a flood inside the minute writes nothing more').to.have.length(1);
    log.refused('10.0.0.3:3', 'PROXY header too long', 61_000);
    expect(lines[1]).to.deep.equal({ remote: '10.0.0.3:3', problem: 'PROXY header too long', refusedSinceLastLine: 501 });
    log.refused('10.0.0.4:4', 'unsupported PROXY command', 121_001);
    expect(lines[2]).to.deep.equal({ remote: '10.0.0.4:4', problem: 'unsupported PROXY command', refusedSinceLastLine: 1 });
  });
});

describe('parseProxyV2 addresses', function () {
  it('gives an IPv6 source in the one canonical form (compressed; IPv4-mapped as IPv4), an IPv4 one as it is', function () {
    const src = (header: Buffer): string | null => {
      const parsed = parseProxyV2(header);
      if (!parsed.done || 'error' in parsed) throw new Error(`not parsed: ${JSON.stringify(parsed)}`);
      return parsed.result.address;
    };
    const dst = { address: '::1', port: 5421 };
    expect(src(proxyV2HeaderIpv6({ address: '2001:db8:0:0:0:0:0:7', port: 1 }, dst))).to.equal('2001:db8::7');
    expect(src(proxyV2HeaderIpv6({ address: '::ffff:a01:203', port: 1 }, dst))).to.equal('10.1.2.3');
    expect(src(proxyV2Header({ address: '10.1.2.3', port: 1 }, { address: '127.0.0.1', port: 5421 }))).to.equal('10.1.2.3');
    expect(src(proxyV2Local())).to.equal(null);
  });
});
