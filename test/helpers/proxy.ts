/**
 * A fault-injecting TCP proxy for resume tests: listens on 127.0.0.1:0 and forwards every connection to
 * the server, optionally
 *
 *   - corrupting one byte of the client→server stream, either at a raw stream position or at a position
 *     counted in data-frame payload bytes only (the proxy follows the frame boundaries, so the byte is
 *     certainly inside a payload and the frame's CRC32C no longer matches);
 *   - cutting the connection once N bytes went client→server or server→client (the bytes up to the cut are
 *     delivered, then that side sees end-of-stream and the other side is destroyed);
 *   - throttling either direction to a byte rate.
 *
 * The plan can differ per connection (a function of the connection's index, 0-based), so that for example
 * only the first connection is cut and a reconnection passes. close() destroys every socket.
 */
import net from 'node:net';

/** How long a side whose peer went away may take to flush what was forwarded to it. */
const LINGER_MS = 2_000;

export interface FaultPlan {
  /** XOR 0xff into the byte at this position of the client→server stream (0-based). */
  corruptUpAt?: number;
  /** XOR 0xff into the byte at this position of the client→server data-frame payloads (CRC bytes excluded). */
  corruptPayloadAt?: number;
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

interface Direction {
  from: net.Socket;
  to: net.Socket;
  cutAfter: number | undefined;
  rate: number | undefined;
  corruptAt?: number | undefined;
  corruptPayloadAt?: number | undefined;
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
      this.pipe({ from: upstream, to: client, cutAfter: plan.cutDownAfter, rate: plan.throttleDown });
      client.resume();
    });
  }

  /** Forwards one direction, one chunk at a time (paused while a chunk is written, drained and paced). */
  private pipe(d: Direction): void {
    let forwarded = 0;
    let cut = false;
    const locator = d.corruptPayloadAt !== undefined ? new PayloadLocator() : null;
    d.from.on('data', (data: Buffer) => {
      if (cut) return;
      let chunk = Buffer.from(data); // our own copy: it may be modified
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
