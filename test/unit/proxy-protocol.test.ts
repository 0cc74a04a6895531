import { expect } from 'chai';
import { parseProxyV2, ProxyRefusalLog } from '../../server/worker/proxy-protocol.js';
import { proxyV2Header, proxyV2HeaderIpv6, proxyV2Local, proxyV2Raw } from '../helpers/multinode-direct.js';

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

  const parse = (buf: Buffer): unknown => {
    const parsed = parseProxyV2(buf);
    if (!parsed.done) throw new Error('incomplete');
    return 'error' in parsed ? parsed.error : parsed.result;
  };

  it('only the LOCAL command is the proxy\'s own connection; a relayed client without an address (UNSPEC, UNIX) is not', function () {
    expect(parse(proxyV2Local())).to.deep.equal({ local: true, address: null, port: null });
    expect(parse(proxyV2Raw(0x20, 0x11, Buffer.alloc(12))), 'LOCAL with an address block: still LOCAL').to.deep.equal({ local: true, address: null, port: null });
    expect(parse(proxyV2Raw(0x21, 0x00, Buffer.alloc(0))), 'UNSPEC').to.deep.equal({ local: false, address: null, port: null });
    expect(parse(proxyV2Raw(0x21, 0x31, Buffer.alloc(216))), 'UNIX stream').to.deep.equal({ local: false, address: null, port: null });
    expect(parse(proxyV2Header({ address: '10.1.2.3', port: 7 }, { address: '127.0.0.1', port: 5421 }))).to.deep.equal({ local: false, address: '10.1.2.3', port: 7 });
  });

  it('refuses an address block shorter than its family needs, a datagram or unknown transport, and an unknown family', function () {
    expect(parse(proxyV2Raw(0x21, 0x11, Buffer.alloc(11)))).to.equal('PROXY address block too short for its family');
    expect(parse(proxyV2Raw(0x21, 0x21, Buffer.alloc(35)))).to.equal('PROXY address block too short for its family');
    expect(parse(proxyV2Raw(0x21, 0x31, Buffer.alloc(100)))).to.equal('PROXY address block too short for its family');
    expect(parse(proxyV2Raw(0x21, 0x12, Buffer.alloc(12))), 'IPv4 over UDP').to.equal('unsupported PROXY transport (not a stream)');
    expect(parse(proxyV2Raw(0x21, 0x10, Buffer.alloc(12))), 'IPv4, transport UNSPEC').to.equal('unsupported PROXY transport (not a stream)');
    expect(parse(proxyV2Raw(0x21, 0x13, Buffer.alloc(12)))).to.equal('unsupported PROXY transport (not a stream)');
    expect(parse(proxyV2Raw(0x21, 0x41, Buffer.alloc(12)))).to.equal('unsupported PROXY address family');
  });
});
