import { isIP } from 'node:net';

/**
 * The one written form of a client address, under which the primary counts connections, scores penalties
 * and keeps bans, and in which `fts-admin bans` lists them and `unban` finds them, wherever the address came
 * from (the kernel, a PROXY v2 header, an operator): IPv4 as it is; IPv6 compressed and in lower case (WHATWG
 * URL serialisation, which is RFC 5952's), with an IPv4-mapped address (::ffff:1.2.3.4) as its IPv4 address.
 * A zone (fe80::1%eth0) is kept as given. Anything that is not an IP address is returned unchanged.
 */
export function canonicalIp(address: string): string {
  if (isIP(address) !== 6) return address;
  // URL does not parse a zone; interface names keep their case.
  const at = address.indexOf('%');
  const zone = at < 0 ? '' : address.slice(at);
  let canonical: string;
  try {
    canonical = new URL(`http://[${at < 0 ? address : address.slice(0, at)}]/`).hostname.slice(1, -1);
  } catch {
    return address.toLowerCase(); // not expected for what isIP accepts
  }
  const mapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(canonical);
  if (mapped === null) return canonical + zone;
  const hi = parseInt(mapped[1]!, 16);
  const lo = parseInt(mapped[2]!, 16);
  return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
}

/**
 * `host:port` as URLs and most tools write it, with an IPv6 address in brackets (`[::1]:5421`): without
 * them the port cannot be told from the address's last group.
 */
export function hostPort(host: string, port: number | string): string {
  return `${host.includes(':') ? `[${host}]` : host}:${port}`;
}
