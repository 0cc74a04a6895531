import type net from 'node:net';
import { canonicalIp } from '../../protocol/index.js';
import { ThrottledLines } from '../throttled-lines.js';

/**
 * PROXY protocol version 2 (the binary form HAProxy sends with `send-proxy-v2`), so that per-address
 * limits, bans and the audit log see the real client address behind a load balancer. Only the header is
 * parsed; TLVs are skipped. Spec: https://www.haproxy.org/download/2.6/doc/proxy-protocol.txt §2.2.
 */

const SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
const HEADER_BYTES = 16;
/** The longest header we accept (addresses plus TLVs); HAProxy's are far shorter. */
const MAX_HEADER_BYTES = 16 + 536;
const READ_TIMEOUT_MS = 5_000;

/** How often a worker may log connections refused for want of a PROXY header. */
export const REFUSAL_LOG_INTERVAL_MS = 60_000;

/**
 * Reports connections refused for want of a valid PROXY header, throttled (ThrottledLines). One such line
 * is how an operator learns that the load balancer lacks `send-proxy-v2` (every client is refused) or that
 * clients bypass it.
 */
export class ProxyRefusalLog {
  private readonly lines: ThrottledLines<{ remote: string; problem: string }>;

  constructor(write: (fields: { remote: string; problem: string; refusedSinceLastLine: number }) => void) {
    this.lines = new ThrottledLines(REFUSAL_LOG_INTERVAL_MS, (fields, refusedSinceLastLine) => write({ ...fields, refusedSinceLastLine }));
  }

  refused(remote: string, problem: string, now = Date.now()): void {
    this.lines.note({ remote, problem }, now);
  }
}

export interface ProxiedAddress {
  /**
   * The proxy's own connection (command LOCAL: its health check), relaying no client. Only this makes a
   * connection a health check; a relayed one without an address (below) is an ordinary client.
   */
  local: boolean;
  /**
   * The client's source address; null for LOCAL, and for a relayed client whose address the proxy does not
   * know or that has none (family UNSPEC, or UNIX: a client of a UNIX-socket frontend): the connection's own
   * address stands for it then, as the spec says, in every limit and ban.
   */
  address: string | null;
  port: number | null;
}

export type ProxyParse = { done: false } | { done: true; result: ProxiedAddress; consumed: number } | { done: true; error: string };

/** Pure: parses a PROXY v2 header from the start of `buf`. */
export function parseProxyV2(buf: Buffer): ProxyParse {
  if (buf.length < HEADER_BYTES) {
    return buf.subarray(0, Math.min(buf.length, SIGNATURE.length)).equals(SIGNATURE.subarray(0, Math.min(buf.length, SIGNATURE.length)))
      ? { done: false }
      : { done: true, error: 'not a PROXY protocol v2 header' };
  }
  if (!buf.subarray(0, 12).equals(SIGNATURE)) return { done: true, error: 'not a PROXY protocol v2 header' };
  const versionCommand = buf[12]!;
  if (versionCommand >> 4 !== 2) return { done: true, error: 'unsupported PROXY protocol version' };
  const length = buf.readUInt16BE(14);
  if (HEADER_BYTES + length > MAX_HEADER_BYTES) return { done: true, error: 'PROXY header too long' };
  if (buf.length < HEADER_BYTES + length) return { done: false };
  const consumed = HEADER_BYTES + length;
  const command = versionCommand & 0x0f;
  // LOCAL: the spec says to ignore the family and address block whatever they hold.
  if (command === 0x0) return { done: true, result: { local: true, address: null, port: null }, consumed };
  if (command !== 0x1) return { done: true, error: 'unsupported PROXY command' };
  const family = buf[13]! >> 4;
  const transport = buf[13]! & 0x0f;
  const body = buf.subarray(HEADER_BYTES, consumed);
  if (family === 0x0) return { done: true, result: { local: false, address: null, port: null }, consumed }; // UNSPEC
  if (family > 0x3) return { done: true, error: 'unsupported PROXY address family' };
  // fts is a stream protocol: a relayed datagram (or an unknown transport) is not one of its connections.
  if (transport !== 0x1) return { done: true, error: 'unsupported PROXY transport (not a stream)' };
  if (body.length < ADDRESS_BLOCK_BYTES[family]!) return { done: true, error: 'PROXY address block too short for its family' };
  if (family === 0x1) {
    return { done: true, result: { local: false, address: [...body.subarray(0, 4)].join('.'), port: body.readUInt16BE(8) }, consumed };
  }
  if (family === 0x2) {
    const groups: string[] = [];
    for (let i = 0; i < 16; i += 2) groups.push(body.readUInt16BE(i).toString(16));
    // In the form the kernel gives for direct connections, so logs, sessions and bans show one address one way.
    return { done: true, result: { local: false, address: canonicalIp(groups.join(':')), port: body.readUInt16BE(32) }, consumed };
  }
  return { done: true, result: { local: false, address: null, port: null }, consumed }; // UNIX
}

/** Address block length by family (spec §2.2): INET 2×4+2×2, INET6 2×16+2×2, UNIX 2×108. */
const ADDRESS_BLOCK_BYTES = [0, 12, 36, 216];

/**
 * Reads the PROXY v2 header that must open every connection when --proxy-protocol is on. Resolves with the
 * client's address (bytes after the header are pushed back onto the socket), or null after destroying a
 * connection that does not start with a valid header in time (`refused` is told why).
 */
export function readProxyHeader(socket: net.Socket, refused: (reason: string) => void = () => undefined): Promise<ProxiedAddress | null> {
  return new Promise((resolve) => {
    let buffered = Buffer.alloc(0);
    const finish = (value: ProxiedAddress | null, reason = ''): void => {
      clearTimeout(timer);
      socket.off('data', onData);
      if (value === null) {
        socket.destroy();
        refused(reason);
      }
      resolve(value);
    };
    const timer = setTimeout(() => finish(null, `no PROXY protocol v2 header within ${READ_TIMEOUT_MS / 1000} s`), READ_TIMEOUT_MS);
    const onData = (chunk: Buffer): void => {
      buffered = Buffer.concat([buffered, chunk]);
      const parsed = parseProxyV2(buffered);
      if (!parsed.done) return;
      if ('error' in parsed) return finish(null, parsed.error);
      socket.pause();
      if (buffered.length > parsed.consumed) socket.unshift(buffered.subarray(parsed.consumed));
      finish(parsed.result);
    };
    socket.on('data', onData);
  });
}
