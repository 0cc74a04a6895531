/**
 * The networks file (--networks-file): its syntax, and which addresses each user may log in from.
 */
import { expect } from 'chai';
import { memberOf, Networks, parseNetworksFile } from '../../server/auth/networks.js';

describe('networks file (--networks-file)', function () {
  it('parses addresses, CIDR networks (IPv4 and IPv6) and any, with comments, spaces and a * line', function () {
    const { perUser, star, problems } = parseNetworksFile('# offices\nalice: 10.0.0.0/8, 192.0.2.7 # vpn\nbob:2001:db8::/32,::1\nadmin:ANY\n*:127.0.0.0/8\n');
    expect(problems).to.deep.equal([]);
    expect([...perUser.keys()]).to.deep.equal(['alice', 'bob', 'admin']);
    expect(perUser.get('admin')).to.equal(null);
    expect(star).to.not.equal(undefined);
  });

  it('reports every malformed line with its number', function () {
    const { problems } = parseNetworksFile('a:10.0.0.0/33\nb:\nc:10.0.0.0/8,\nd:host.example\ne:::1/129\nf:10.0.0.1/x\ng:1.2.3.4/08\ng:1.2.3.4\nh:fe80::1%eth0\n');
    expect(problems.map((p) => p.line)).to.deep.equal([1, 2, 3, 4, 5, 6, 8, 9]);
    expect(problems[0]!.reason).to.include('separated by commas');
    expect(problems[6]!.reason).to.include('twice');
    expect(problems[7]!.reason, 'a zone would be dropped, widening the rule').to.include('no %zone');
  });

  it('allows a named user only from their networks; IPv4 clients on IPv6 sockets are judged as IPv4', function () {
    const n = Networks.fromFile('alice:10.0.0.0/8,192.0.2.7\nbob:2001:db8::/32\nadmin:any\n');
    expect(n.allows('alice', '10.1.2.3')).to.equal(true);
    expect(n.allows('alice', '::ffff:10.1.2.3'), 'IPv4-mapped').to.equal(true);
    expect(n.allows('alice', '192.0.2.7')).to.equal(true);
    expect(n.allows('alice', '192.0.2.8')).to.equal(false);
    expect(n.allows('alice', '127.0.0.1')).to.equal(false);
    expect(n.allows('alice', '2001:db8::1'), 'an IPv6 address is in no IPv4 network').to.equal(false);
    expect(n.allows('bob', '2001:DB8:0:0::5')).to.equal(true);
    expect(n.allows('bob', '2001:db9::5')).to.equal(false);
    expect(n.allows('admin', '203.0.113.9')).to.equal(true);
    expect(n.allows('carol', '203.0.113.9'), 'a user the file does not name, without a * line: anywhere').to.equal(true);
    expect(n.allows('alice', 'unknown'), 'an address that is none').to.equal(false);
  });

  it('a * line applies to every user the file does not name; no file allows everyone', function () {
    const n = Networks.fromFile('*:127.0.0.0/8\nbob:any\n');
    expect(n.allows('carol', '127.0.0.2')).to.equal(true);
    expect(n.allows('carol', '10.0.0.1')).to.equal(false);
    expect(n.allows('bob', '10.0.0.1')).to.equal(true);
    expect(Networks.fromFile(null).allows('anyone', '198.51.100.1')).to.equal(true);
  });
});

describe('memberOf (--ban-exempt, a list of networks)', function () {
  it('matches addresses in the list, IPv4 clients seen as ::ffff:a.b.c.d too; no list matches nothing', function () {
    const exempt = memberOf('10.0.0.0/8, 192.0.2.7, 2001:db8::/32');
    for (const ip of ['10.1.2.3', '::ffff:10.1.2.3', '192.0.2.7', '2001:db8::5']) expect(exempt(ip), ip).to.equal(true);
    for (const ip of ['11.0.0.1', '192.0.2.8', '2001:db9::1', '', 'not-an-address']) expect(exempt(ip), ip).to.equal(false);
    expect(memberOf(null)('127.0.0.1')).to.equal(false);
  });
});
