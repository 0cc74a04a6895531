import { expect } from 'chai';
import { banAddress, parseAdminRequest } from '../../protocol/index.js';

describe('admin protocol: bans and unban', function () {
  it('banAddress gives the form the server keeps bans under (the kernel\'s): IPv6 compressed, lower case; IPv4-mapped as IPv4', function () {
    expect(banAddress('203.0.113.7')).to.equal('203.0.113.7');
    expect(banAddress('::1')).to.equal('::1');
    expect(banAddress('FE80:0:0:0:0:0:0:1')).to.equal('fe80::1');
    expect(banAddress('2001:DB8:0:0:1:0:0:1')).to.equal('2001:db8::1:0:0:1');
    expect(banAddress('::ffff:203.0.113.7')).to.equal('203.0.113.7');
    expect(banAddress('::FFFF:cb00:7107')).to.equal('203.0.113.7');
    expect(banAddress('FE80:0::1%eth0')).to.equal('fe80::1%eth0');
  });

  it('parses bans and unban; an unban address must be an IP address', function () {
    expect(parseAdminRequest({ cmd: 'bans' })).to.deep.equal({ cmd: 'bans' });
    expect(parseAdminRequest({ cmd: 'unban', address: '::ffff:10.0.0.1' })).to.deep.equal({ cmd: 'unban', address: '10.0.0.1' });
    for (const address of [undefined, 7, '', '10.0.0', '10.0.0.256', 'example.com', '10.0.0.1/24', '[::1]']) {
      expect(() => parseAdminRequest({ cmd: 'unban', address }), JSON.stringify(address)).to.throw('address must be an IPv4 or IPv6 address');
    }
  });
});
