/**
 * A fault-injecting TCP proxy for resume tests: listens on 127.0.0.1:0 and forwards every connection to
 * the server, optionally
 *
 *   - corrupting one byte of the client→server stream, either at a raw stream position or at a position
 *     counted in data-frame payload bytes only (the proxy follows the frame boundaries, so the byte is
 *     certainly inside a payload and the frame's CRC32C no longer matches);
 *   - corrupting one payload byte of the server→client data frames (a download), either leaving the frame's
 *     CRC32C as it was (the client's per-frame check must catch it) or recomputing it over the altered
 *     payload (the frame checks out, and only the whole-file SHA-256 of the final reply can catch it);
 *   - cutting the connection once N bytes went client→server or server→client (the bytes up to the cut are
 *     delivered, then that side sees end-of-stream and the other side is destroyed);
 *   - throttling either direction to a byte rate.
 *
 * The plan can differ per connection (a function of the connection's index, 0-based), so that for example
 * only the first connection is cut and a reconnection passes. close() destroys every socket.
 */
import net from 'node:net';
import { crc32c } from '../../protocol/crc32c.js';

/** How long a side whose peer went away may take to flush what was forwarded to it. */
const LINGER_MS = 2_000;

export interface FaultPlan {
  /** XOR 0xff into the byte at this position of the client→server stream (0-based). */
  corruptUpAt?: number;
  /** XOR 0xff into the byte at this position of the client→server data-frame payloads (CRC bytes excluded). */
  corruptPayloadAt?: number;
  /** XOR 0xff into the byte at this position of the server→client data-frame payloads (CRC bytes excluded). */
  corruptDownPayloadAt?: number;
  /**
   * With corruptDownPayloadAt: also replace that frame's CRC32C by the CRC32C of the altered payload, so the
   * frame is self-consistent and the corruption is invisible to the per-frame check.
   */
  corruptDownFixCrc?: boolean;
  /** Forward this many client→server bytes, then cut the connection. */
  cutUpAfter?: number;
  /** Forward this many server→client bytes, then cut the connection. */
  cutDownAfter?: number;
  /** Client→server rate limit, bytes per second. */
  throttleUp?: number;
  /** Server→client rate limit, bytes per second. */
  throttleDown?: number;
}

/** Follows fts frame boundaries in one direction, to find payload bytes of data frames. */
class PayloadLocator {
  private prefix = Buffer.alloc(5);
  private prefixFill = 0;
  /** Bytes of the current frame body still to come; of those, the first `crcLeft` are the CRC. */
  private bodyLeft = 0;
  private crcLeft = 0;
  private isData = false;
  /** Payload bytes seen so far, over all data frames. */
  payloadSeen = 0;

  /** Calls `hit(i)` for the index within `chunk` of payload byte number `target`, if it is in this chunk. */
  scan(chunk: Buffer, target: number, hit: (i: number) => void): void {
    for (let i = 0; i < chunk.length; ) {
      if (this.bodyLeft === 0) {
        this.prefix[this.prefixFill++] = chunk[i++]!;
        if (this.prefixFill === 5) {
          this.prefixFill = 0;
          this.isData = this.prefix[0] === 0x44;
          this.bodyLeft = this.prefix.readUInt32BE(1);
          this.crcLeft = this.isData ? Math.min(4, this.bodyLeft) : 0;
        }
        continue;
      }
      if (this.crcLeft > 0) {
        const n = Math.min(this.crcLeft, chunk.length - i);
        this.crcLeft -= n;
        this.bodyLeft -= n;
        i += n;
        continue;
      }
      const n = Math.min(this.bodyLeft, chunk.length - i);
      if (this.isData && target >= this.payloadSeen && target < this.payloadSeen + n) hit(i + (target - this.payloadSeen));
      if (this.isData) this.payloadSeen += n;
      this.bodyLeft -= n;
      i += n;
    }
  }
}

/**
 * Corrupts payload byte number `target` (counted over all data-frame payloads of one direction), optionally
 * fixing the frame's CRC32C. The CRC precedes the payload, so to recompute it the proxy holds the whole
 * frame that contains the target back until it is complete; every other byte passes through as it comes
 * (at most an incomplete 5-byte frame prefix is held until the rest of it arrives).
 */
class FrameCorrupter {
  /** Bytes received and not yet released. */
  private pending: Buffer = Buffer.alloc(0);
  /** Bytes of the current frame (prefix included) that may pass through unexamined. */
  private passLeft = 0;
  private payloadSeen = 0;
  private done = false;

  constructor(
    private readonly target: number,
    private readonly fixCrc: boolean,
    private readonly onCorrupt: () => void,
  ) {}

  /** Takes the next chunk of the stream; returns the bytes that may be forwarded now, in order. */
  push(chunk: Buffer): Buffer {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    const out: Buffer[] = [];
    for (;;) {
      if (this.passLeft > 0) {
        const n = Math.min(this.passLeft, this.pending.length);
        if (n === 0) break;
        out.push(this.pending.subarray(0, n));
        this.pending = this.pending.subarray(n);
        this.passLeft -= n;
        continue;
      }
      if (this.pending.length < 5) break; // an incomplete frame prefix: wait for the rest of it
      const bodyLength = this.pending.readUInt32BE(1);
      const isData = this.pending[0] === 0x44 && bodyLength >= 4;
      const payloadLength = isData ? bodyLength - 4 : 0;
      const hits = isData && !this.done && this.target >= this.payloadSeen && this.target < this.payloadSeen + payloadLength;
      if (!hits) {
        this.payloadSeen += payloadLength;
        this.passLeft = 5 + bodyLength;
        continue;
      }
      if (this.pending.length < 5 + bodyLength) break; // the target frame: hold it until it is whole
      const frame = Buffer.from(this.pending.subarray(0, 5 + bodyLength)); // our own copy: it is modified
      this.pending = this.pending.subarray(5 + bodyLength);
      const payload = frame.subarray(9);
      payload[this.target - this.payloadSeen]! ^= 0xff;
      if (this.fixCrc) frame.writeUInt32BE(crc32c(payload), 5);
      this.payloadSeen += payloadLength;
      this.done = true;
      this.onCorrupt();
      out.push(frame);
    }
    return out.length === 1 ? out[0]! : Buffer.concat(out);
  }
}

interface Direction {
  from: net.Socket;
  to: net.Socket;
  cutAfter: number | undefined;
  rate: number | undefined;
  corruptAt?: number | undefined;
  corruptPayloadAt?: number | undefined;
  corruptDownPayloadAt?: number | undefined;
  corruptDownFixCrc?: boolean | undefined;
}

export class FaultProxy {
  /** Connections accepted so far. */
  connections = 0;
  /** Connections cut by a cutUpAfter/cutDownAfter rule. */
  cuts = 0;
  /** Bytes corrupted so far. */
  corruptions = 0;
  port = 0;
  private readonly sockets = new Set<net.Socket>();
  private readonly server: net.Server;

  private constructor(
    private targetPort: number,
    private readonly plan: (index: number) => FaultPlan,
  ) {
    this.server = net.createServer((client) => this.accept(client));
  }

  static async start(targetPort: number, plan: FaultPlan | ((index: number) => FaultPlan) = {}): Promise<FaultProxy> {
    const proxy = new FaultProxy(targetPort, typeof plan === 'function' ? plan : () => plan);
    await new Promise<void>((resolve, reject) => {
      proxy.server.once('error', reject);
      proxy.server.listen({ host: '127.0.0.1', port: 0 }, () => resolve());
    });
    const address = proxy.server.address();
    if (address === null || typeof address === 'string') throw new Error('proxy has no TCP address');
    proxy.port = address.port;
    return proxy;
  }

  /** Later connections go to this port (for example a restarted server's). */
  retarget(port: number): void {
    this.targetPort = port;
  }

  /** Cuts every connection open now (as a network failure would); later ones are accepted as usual. */
  dropAll(): void {
    for (const s of this.sockets) s.destroy();
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private track(s: net.Socket): void {
    this.sockets.add(s);
    s.on('close', () => this.sockets.delete(s));
    s.on('error', () => undefined); // surfaces as 'close'
  }

  private accept(client: net.Socket): void {
    const index = this.connections++;
    const plan = this.plan(index);
    client.pause();
    const upstream = net.connect({ host: '127.0.0.1', port: this.targetPort });
    this.track(client);
    this.track(upstream);
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    // Either side going away ends the other (after what was already forwarded to it is delivered): a
    // killed client must not leave its upload running on the server.
    const endOther = (other: net.Socket) => (): void => {
      if (other.destroyed) return;
      other.end();
      setTimeout(() => other.destroy(), LINGER_MS).unref();
    };
    client.on('close', endOther(upstream));
    upstream.on('close', endOther(client));
    upstream.once('connect', () => {
      this.pipe({ from: client, to: upstream, cutAfter: plan.cutUpAfter, rate: plan.throttleUp, corruptAt: plan.corruptUpAt, corruptPayloadAt: plan.corruptPayloadAt });
      this.pipe({ from: upstream, to: client, cutAfter: plan.cutDownAfter, rate: plan.throttleDown, corruptDownPayloadAt: plan.corruptDownPayloadAt, corruptDownFixCrc: plan.corruptDownFixCrc });
      client.resume();
    });
  }

  /** Forwards one direction, one chunk at a time (paused while a chunk is written, drained and paced). */
  private pipe(d: Direction): void {
    let forwarded = 0;
    let cut = false;
    const locator = d.corruptPayloadAt !== undefined ? new PayloadLocator() : null;
    const corrupter =
      d.corruptDownPayloadAt !== undefined
        ? new FrameCorrupter(d.corruptDownPayloadAt, d.corruptDownFixCrc === true, () => {
            this.corruptions++;
          })
        : null;
    d.from.on('data', (data: Buffer) => {
      if (cut) return;
      let chunk: Buffer = Buffer.from(data); // our own copy: it may be modified
      if (corrupter !== null) {
        chunk = corrupter.push(chunk);
        if (chunk.length === 0) return; // all of it held back (part of the frame to corrupt)
      }
      if (d.corruptAt !== undefined && d.corruptAt >= forwarded && d.corruptAt < forwarded + chunk.length) {
        chunk[d.corruptAt - forwarded]! ^= 0xff;
        this.corruptions++;
      }
      if (locator !== null && d.corruptPayloadAt !== undefined) {
        const target = d.corruptPayloadAt;
        locator.scan(chunk, target, (i) => {
          chunk[i]! ^= 0xff;
          this.corruptions++;
        });
      }
      if (d.cutAfter !== undefined && forwarded + chunk.length >= d.cutAfter) {
        cut = true;
        this.cuts++;
        chunk = chunk.subarray(0, d.cutAfter - forwarded);
        forwarded += chunk.length;
        // Deliver what came before the cut, then end-of-stream; the sender's side is dropped at once.
        d.to.end(chunk);
        d.from.destroy();
        return;
      }
      forwarded += chunk.length;
      d.from.pause();
      const flushed = d.to.write(chunk);
      const delay = d.rate !== undefined ? (chunk.length / d.rate) * 1000 : 0;
      const resume = (): void => {
        if (!d.from.destroyed) d.from.resume();
      };
      const afterDrain = (): void => {
        if (delay > 0) setTimeout(resume, delay);
        else resume();
      };
      if (flushed) afterDrain();
      else d.to.once('drain', afterDrain);
    });
    d.from.on('end', () => {
      if (!cut) d.to.end();
    });
  }
}
