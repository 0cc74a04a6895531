import { expect } from 'chai';
import { canonicalIp, hostPort, parseAdminRequest } from '../../protocol/index.js';

describe('admin protocol: bans and unban', function () {
  it('hostPort brackets an IPv6 address (so its port can be told from its last group), and only that', function () {
    expect(hostPort('127.0.0.1', 5421)).to.equal('127.0.0.1:5421');
    expect(hostPort('::1', 5421)).to.equal('[::1]:5421');
    expect(hostPort('::ffff:127.0.0.1', '?')).to.equal('[::ffff:127.0.0.1]:?');
    expect(hostPort('localhost', 0)).to.equal('localhost:0');
  });

  it('canonicalIp gives the one form the server keeps bans under, whatever the source: IPv6 compressed, lower case; IPv4-mapped as IPv4', function () {
    expect(canonicalIp('203.0.113.7')).to.equal('203.0.113.7');
    expect(canonicalIp('::1')).to.equal('::1');
    expect(canonicalIp('FE80:0:0:0:0:0:0:1')).to.equal('fe80::1');
    expect(canonicalIp('2001:DB8:0:0:1:0:0:1')).to.equal('2001:db8::1:0:0:1');
    expect(canonicalIp('::ffff:203.0.113.7')).to.equal('203.0.113.7');
    expect(canonicalIp('::FFFF:cb00:7107')).to.equal('203.0.113.7');
    expect(canonicalIp('FE80:0::1%eth0')).to.equal('fe80::1%eth0');
    // As a PROXY v2 header's address is written (8 groups), and as the kernel writes the same addresses.
    expect(canonicalIp('2001:db8:0:0:0:0:0:1')).to.equal(canonicalIp('2001:db8::1'));
    expect(canonicalIp('0:0:0:0:0:ffff:a01:203')).to.equal('10.1.2.3');
    expect(canonicalIp('::1.2.3.4')).to.equal(canonicalIp('0:0:0:0:0:0:102:304'));
    expect(canonicalIp('not an address')).to.equal('not an address');
  });

  it('parses bans and unban; an unban address must be an IP address', function () {
    expect(parseAdminRequest({ cmd: 'bans' })).to.deep.equal({ cmd: 'bans' });
    expect(parseAdminRequest({ cmd: 'bans', points: true })).to.deep.equal({ cmd: 'bans', points: true });
    expect(parseAdminRequest({ cmd: 'bans', points: false })).to.deep.equal({ cmd: 'bans' });
    for (const points of [1, 'yes', null]) {
      expect(() => parseAdminRequest({ cmd: 'bans', points }), JSON.stringify(points)).to.throw('points must be true or false');
    }
    expect(parseAdminRequest({ cmd: 'unban', address: '::ffff:10.0.0.1' })).to.deep.equal({ cmd: 'unban', address: '10.0.0.1' });
    for (const address of [undefined, 7, '', '10.0.0', '10.0.0.256', 'example.com', '10.0.0.1/24', '[::1]']) {
      expect(() => parseAdminRequest({ cmd: 'unban', address }), JSON.stringify(address)).to.throw('address must be an IPv4 or IPv6 address');
    }
  });
});
