/**
 * Direct connections to one fts node started with --proxy-protocol, bypassing HAProxy: such a node expects
 * a PROXY protocol v2 header before anything else, so the test writes one itself (as HAProxy would) and
 * then speaks fts/1 through the RawClient of test/helpers/raw-client.ts (the header is its connect preamble).
 *
 * PROXY v2 (https://www.haproxy.org/download/2.6/doc/proxy-protocol.txt §2.2): 12-byte signature,
 * version/command byte (0x21 = v2 PROXY), family/transport byte (0x11 = TCP over IPv4), 2-byte length,
 * then source address, destination address, source port, destination port.
 */
import { encodeHeader, type Header } from '../../protocol/index.js';
import { dataFrames as rawDataFrames, RawClient, sha256 as sha256hex } from './raw-client.js';

const SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);

function ipv4(address: string): Buffer {
  const parts = address.split('.').map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) throw new Error(`not an IPv4 address: ${address}`);
  return Buffer.from(parts);
}

type Endpoint = { address: string; port: number };

/**
 * Any PROXY v2 header: the version/command byte (0x21 PROXY, 0x20 LOCAL), the family/transport byte
 * (0x11 TCP/IPv4, 0x21 TCP/IPv6, 0x00 UNSPEC…) and the address block as given, its length prefixed.
 */
export function proxyV2Raw(versionCommand: number, familyTransport: number, block: Buffer): Buffer {
  const head = Buffer.from([versionCommand, familyTransport, 0, 0]);
  head.writeUInt16BE(block.length, 2);
  return Buffer.concat([SIGNATURE, head, block]);
}

/** A PROXY v2 PROXY-command header: `family` (0x11 TCP/IPv4, 0x21 TCP/IPv6), then addresses and ports. */
function proxyV2(family: number, src: Buffer, dst: Buffer, srcPort: number, dstPort: number): Buffer {
  const ports = Buffer.alloc(4);
  ports.writeUInt16BE(srcPort, 0);
  ports.writeUInt16BE(dstPort, 2);
  return proxyV2Raw(0x21, family, Buffer.concat([src, dst, ports]));
}

/** A PROXY v2 header announcing a TCP/IPv4 connection from `src` to `dst`. */
export function proxyV2Header(src: Endpoint, dst: Endpoint): Buffer {
  return proxyV2(0x11, ipv4(src.address), ipv4(dst.address), src.port, dst.port);
}

/** A PROXY v2 header announcing a TCP/IPv6 connection from `src` to `dst`. */
export function proxyV2HeaderIpv6(src: Endpoint, dst: Endpoint): Buffer {
  return proxyV2(0x21, ipv6(src.address), ipv6(dst.address), src.port, dst.port);
}

/** The 16 bytes of an IPv6 address written with 8 groups or with `::`. */
function ipv6(address: string): Buffer {
  const [head = '', tail] = address.split('::');
  const groups = (s: string): string[] => (s === '' ? [] : s.split(':'));
  const missing = 8 - groups(head).length - groups(tail ?? '').length;
  const all = tail === undefined ? groups(head) : [...groups(head), ...Array<string>(missing).fill('0'), ...groups(tail)];
  if (all.length !== 8 || all.some((g) => !/^[0-9a-fA-F]{1,4}$/.test(g))) throw new Error(`not an IPv6 address: ${address}`);
  const out = Buffer.alloc(16);
  all.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}

/** A PROXY v2 LOCAL header: what HAProxy sends for its own health checks (no client address). */
export function proxyV2Local(): Buffer {
  return proxyV2Raw(0x20, 0x00, Buffer.alloc(0));
}

/**
 * The address the direct connections of the test claim to come from (TEST-NET-1, RFC 5737), so their
 * audit lines are told apart from those of clients behind HAProxy.
 */
export const DIRECT_SOURCE = { address: '192.0.2.10', port: 40000 };

/** Connects straight to a --proxy-protocol node, sends the PROXY header and reads the greeting. */
export async function openDirect(port: number, src = DIRECT_SOURCE): Promise<RawClient> {
  return (await RawClient.open({ port, preamble: proxyV2Header(src, { address: '127.0.0.1', port }) })).client;
}

/** openDirect + `auth` (plain, id 1); returns the client and the auth reply (with its token). */
export async function loginDirect(port: number, user: string, password: string, src = DIRECT_SOURCE): Promise<{ client: RawClient; reply: Header }> {
  const client = await openDirect(port, src);
  try {
    return { client, reply: await client.auth(user, password) };
  } catch (err) {
    client.close();
    throw err;
  }
}

/** Data frames for `data` (payloads of at most `chunk` bytes). */
export function dataFrames(data: Buffer, chunk = 256 * 1024): Buffer {
  return rawDataFrames(data, chunk);
}

/** An upload header (with `offset`) followed by the data frames of data[offset..]. */
export function uploadFrom(id: number, name: string, data: Buffer, offset: number, sha256 = sha256hex(data)): Buffer {
  return Buffer.concat([encodeHeader({ op: 'upload', id, name, size: data.length, sha256, offset }), dataFrames(data.subarray(offset))]);
}
