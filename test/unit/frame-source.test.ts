import { expect } from 'chai';
import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import v8 from 'node:v8';
import vm from 'node:vm';
import { FRAME_HEADER, MAX_CHUNK_BYTES, encodeData, encodeHeader } from '../../protocol/index.js';
import { FrameSource, HIGH_WATER_BYTES } from '../../server/worker/frame-source.js';

/** The limits of a session without a rate limit. */
const LIMITS = { maxHeaderBytes: 16 * 1024, maxDataBytes: MAX_CHUNK_BYTES, highWaterBytes: HIGH_WATER_BYTES };
import { workerPayloads } from '../../server/worker/payloads.js';

/** Just what FrameSource uses of a socket: 'data'/'end'/'close' events, pause() and resume(). */
class FakeSocket extends EventEmitter {
  paused = false;
  pause(): this {
    this.paused = true;
    return this;
  }
  resume(): this {
    this.paused = false;
    return this;
  }
}

/** Feeds `frames` one per 'data' event while the source keeps reading; returns how many it took. */
function feedUntilPaused(socket: FakeSocket, frames: Buffer[]): number {
  let fed = 0;
  for (const f of frames) {
    if (socket.paused) break;
    socket.emit('data', f);
    fed++;
  }
  return fed;
}

describe('FrameSource (the worker reads frames only as fast as the session takes them)', function () {
  it('a peer that pipelines requests nobody takes is paused after 32 headers, whatever their size', function () {
    for (const header of [{ op: 'noop', id: 1 }, { op: 'noop', id: 1, x: Array.from({ length: 3000 }, () => ({})) }]) {
      const socket = new FakeSocket();
      const source = new FrameSource(socket as unknown as Socket, LIMITS);
      const fed = feedUntilPaused(socket, Array.from({ length: 1000 }, () => encodeHeader(header)));
      expect(fed, 'headers read before the socket was paused').to.equal(32);
      source.dispose();
    }
  });

  it('keeps queued headers as bytes and decodes each when it is taken, in order with data frames', async function () {
    const socket = new FakeSocket();
    const source = new FrameSource(socket as unknown as Socket, LIMITS);
    // 16 KiB of nested arrays: decoded, ~450 KiB each; 32 of them queued would hold ~14 MiB of objects.
    const depth = 8000;
    const nested = '{"op":"noop","x":' + '['.repeat(depth) + ']'.repeat(depth) + '}';
    const body = Buffer.from(nested);
    const rawHeader = (b: Buffer): Buffer => {
      const prefix = Buffer.alloc(5);
      prefix[0] = FRAME_HEADER;
      prefix.writeUInt32BE(b.length, 1);
      return Buffer.concat([prefix, b]);
    };
    const collect = (): number => {
      v8.setFlagsFromString('--expose-gc');
      (vm.runInNewContext('gc') as () => void)();
      return process.memoryUsage().heapUsed;
    };
    const before = collect();
    const fed = feedUntilPaused(socket, Array.from({ length: 40 }, () => rawHeader(body)));
    expect(fed).to.equal(32);
    const grown = collect() - before;
    expect(grown, `JavaScript heap held by 32 queued 16 KiB headers: ${grown} bytes`).to.be.below(4 * 1024 * 1024);
    for (let i = 0; i < 32; i++) {
      const event = await source.next();
      expect(event.kind).to.equal('header');
      if (event.kind === 'header') expect(event.header['op']).to.equal('noop');
    }
    expect(socket.paused).to.equal(false);
    source.dispose();

    // Order and decoding outcomes survive the queue: header, data, a body that is not JSON, header.
    const mixed = new FakeSocket();
    const second = new FrameSource(mixed as unknown as Socket, LIMITS);
    mixed.emit('data', Buffer.concat([encodeHeader({ op: 'a' }), encodeData(Buffer.from('xyz')), rawHeader(Buffer.from('{nope')), encodeHeader({ op: 'b' })]));
    const kinds: string[] = [];
    for (let i = 0; i < 4; i++) {
      const event = await second.next();
      kinds.push(event.kind === 'header' ? `header ${String(event.header['op'])}` : event.kind);
      if (event.kind === 'data') workerPayloads.release(event.payload);
    }
    expect(kinds).to.deep.equal(['header a', 'data', 'bad-header', 'header b']);
    second.dispose();
  });

  it('resumes once the session has taken half of what was queued, and data frames count by their size', async function () {
    const socket = new FakeSocket();
    const source = new FrameSource(socket as unknown as Socket, LIMITS);
    const fed = feedUntilPaused(socket, Array.from({ length: 100 }, () => encodeData(Buffer.alloc(256 * 1024, 1))));
    expect(fed, '256 KiB data frames read before the pause (2 MiB)').to.equal(8);
    const take = async (): Promise<void> => {
      const event = await source.next();
      if (event.kind === 'data') workerPayloads.release(event.payload);
    };
    for (let i = 0; i < 4; i++) await take();
    expect(socket.paused, 'paused while 1 MiB or more waits').to.equal(true);
    await take();
    expect(socket.paused, 'resumed below half the high-water mark').to.equal(false);
    source.dispose();
  });
});
