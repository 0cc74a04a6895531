import { expect } from 'chai';
import { ProxyRefusalLog } from '../../server/worker/proxy-protocol.js';

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
