import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { encodeData, encodeHeader, FrameDecoder } from '../../protocol/index.js';
import { AlignedSlabs, DIRECT_IO_ALIGNMENT, directIoPrefix } from '../../protocol/aligned-slabs.js';
import { PayloadPool } from '../../protocol/payload-pool.js';

/**
 * Takes `rounds` payloads of lengthOf(i) bytes, each checked against every live one for overlap, filled,
 * and released some rounds later in an order unlike the order of taking (once more than `keep` are live),
 * after checking that nothing overwrote it meanwhile.
 */
function churn(pool: PayloadPool, rounds: number, lengthOf: (i: number) => number, keep: number, onTake?: (buf: Buffer) => void): void {
  const live = new Map<Buffer, number>();
  for (let i = 0; i < rounds; i++) {
    const buf = pool.take(lengthOf(i));
    onTake?.(buf);
    for (const other of live.keys()) {
      if (other.buffer !== buf.buffer) continue;
      const overlap = buf.byteOffset < other.byteOffset + other.length && other.byteOffset < buf.byteOffset + buf.length;
      expect(overlap, `payload ${i} overlaps a live one`).to.equal(false);
    }
    buf.fill(i & 0xff);
    live.set(buf, i & 0xff);
    if (live.size > keep) {
      const victims = [...live.keys()].filter((_, k) => (k + i) % 3 === 0);
      for (const v of victims) {
        expect(v.every((x) => x === live.get(v)), 'a live payload was overwritten').to.equal(true);
        pool.release(v);
        live.delete(v);
      }
    }
  }
}

/** Whether all of `buffers` (at least one) can be written with O_DIRECT at `position`. */
function directIoAligned(buffers: readonly Buffer[], position: number): boolean {
  return buffers.length > 0 && directIoPrefix(buffers, position) === buffers.length;
}

describe('PayloadPool (recycled payload memory)', function () {
  it('cuts payloads of exactly the asked length, side by side, from one slab', function () {
    const pool = new PayloadPool(1024, 4);
    const a = pool.take(100);
    const b = pool.take(200);
    expect(a.length).to.equal(100);
    expect(b.length).to.equal(200);
    expect(a.buffer).to.equal(b.buffer);
    expect(b.byteOffset).to.equal(a.byteOffset + 100);
  });

  it('never hands out memory that is still in use', function () {
    churn(new PayloadPool(1000, 2), 2000, (i) => 1 + ((i * 7919) % 700), 5);
  });

  it('reuses a slab once every payload cut from it is back, and keeps at most keepFree free slabs', function () {
    const pool = new PayloadPool(100, 1);
    const first = [pool.take(60), pool.take(60)]; // the second does not fit: a new slab, the first retired
    expect(first[0]!.buffer).to.not.equal(first[1]!.buffer);
    pool.release(first[0]!);
    expect(pool.freeSlabs).to.equal(1);
    const third = pool.take(60); // does not fit beside first[1]: the free slab is reused
    expect(third.buffer).to.equal(first[0]!.buffer);
    expect(pool.freeSlabs).to.equal(0);
  });

  it('ignores double releases and foreign buffers', function () {
    const pool = new PayloadPool(100, 2);
    const a = pool.take(10);
    const b = pool.take(10);
    pool.release(a);
    pool.release(a); // must not count b as released
    pool.release(Buffer.alloc(10));
    for (let i = 0; i < 12; i++) {
      const c = pool.take(10);
      const overlaps = c.buffer === b.buffer && c.byteOffset < b.byteOffset + b.length && b.byteOffset < c.byteOffset + c.length;
      expect(overlaps, 'b is still live').to.equal(false);
    }
  });

  it('gives payloads larger than a slab, or empty, as ordinary buffers', function () {
    const pool = new PayloadPool(64, 2);
    expect(pool.take(65).length).to.equal(65);
    expect(pool.take(0).length).to.equal(0);
  });

  it('FrameDecoder copies every payload into the buffer payloadBuffer gives, so pushed chunks are not retained', function () {
    const pool = new PayloadPool(1 << 20, 2);
    const given: Buffer[] = [];
    const decoder = new FrameDecoder({
      payloadBuffer: (n) => {
        const b = pool.take(n);
        given.push(b);
        return b;
      },
    });
    const payloads = [randomBytes(1), randomBytes(5000), randomBytes(70_000)];
    const wire = Buffer.concat([encodeHeader({ op: 'noop', id: 1 }), ...payloads.map((p) => encodeData(p))]);
    const frames = [];
    // Pieces of 3 bytes, then one big piece: payloads both inside one chunk and across chunks.
    for (let i = 0; i < 30; i += 3) frames.push(...decoder.push(wire.subarray(i, i + 3)));
    frames.push(...decoder.push(wire.subarray(30)));
    const data = frames.filter((f) => f.kind === 'data');
    expect(data).to.have.length(3);
    data.forEach((f, i) => {
      if (f.kind !== 'data') throw new Error('unreachable');
      expect(f.crcOk).to.equal(true);
      expect(f.payload.equals(payloads[i]!)).to.equal(true);
      expect(f.payload).to.equal(given[i]);
      expect(f.payload.buffer, 'payload lives in the pool, not in a pushed chunk').to.not.equal(wire.buffer);
    });
  });

  describe('with aligned slabs', function () {
    const SLAB = 256 * 1024;

    it('cuts payloads of 64 KiB or more from arena memory at aligned offsets, small ones from ordinary slabs', function () {
      const pool = new PayloadPool(SLAB, 2, new AlignedSlabs(SLAB, 4));
      const small = pool.take(100);
      const large = pool.take(64 * 1024 + 100);
      const small2 = pool.take(10);
      const large2 = pool.take(64 * 1024);
      expect(large.buffer, 'large payloads share the arena').to.equal(large2.buffer);
      expect(small.buffer, 'small payloads stay out of the arena').to.not.equal(large.buffer);
      expect(small2.byteOffset, 'small payloads side by side').to.equal(small.byteOffset + small.length);
      expect(large.byteOffset % DIRECT_IO_ALIGNMENT).to.equal(0);
      expect(large2.byteOffset, 'rounded up to the next boundary').to.equal(large.byteOffset + 17 * DIRECT_IO_ALIGNMENT);
      expect(directIoAligned([large2], 0)).to.equal(true);
      expect(directIoAligned([large2], DIRECT_IO_ALIGNMENT * 3)).to.equal(true);
      expect(directIoAligned([large2], 512), 'unaligned file position').to.equal(false);
      expect(directIoAligned([large], 0), 'unaligned length').to.equal(false);
      expect(directIoAligned([small], 0), 'ordinary memory').to.equal(false);
      expect(directIoAligned([Buffer.alloc(DIRECT_IO_ALIGNMENT)], 0), 'ordinary memory').to.equal(false);
      expect(directIoAligned([], 0)).to.equal(false);
      expect(directIoPrefix([large2, large2, large, large2], 0), 'the aligned head of a batch').to.equal(2);
    });

    it('gives arena slabs back to the arena and reuses the lowest first; beyond the arena, ordinary memory', function () {
      const arena = new AlignedSlabs(SLAB, 2);
      const pool = new PayloadPool(SLAB, 0, arena);
      const a = pool.take(SLAB);
      const b = pool.take(SLAB);
      const c = pool.take(SLAB); // the arena's two slabs are out
      expect(directIoAligned([a, b], 0)).to.equal(true);
      expect(c.buffer).to.not.equal(a.buffer);
      expect(directIoAligned([c], 0)).to.equal(false);
      pool.release(b);
      pool.release(a);
      const d = pool.take(SLAB); // c's ordinary slab is full: the arena's lowest slab again
      expect(d.buffer).to.equal(a.buffer);
      expect(d.byteOffset).to.equal(a.byteOffset);
      const e = pool.take(SLAB);
      expect(e.byteOffset).to.equal(b.byteOffset);
    });

    it('never hands out memory that is still in use', function () {
      const arena = new AlignedSlabs(SLAB, 3);
      const probe = arena.take()!;
      arena.give(probe);
      const pool = new PayloadPool(SLAB, 1, arena);
      let inArena = 0;
      const lengthOf = (i: number): number => (i % 5 === 0 ? 64 * 1024 + ((i * 4096) % SLAB / 2) : 1 + ((i * 7919) % 9000));
      churn(pool, 3000, lengthOf, 6, (buf) => {
        // Large payloads are aligned when they come from the arena (once it is all out, from ordinary slabs).
        if (buf.buffer === probe.buffer && buf.length >= 64 * 1024) {
          inArena++;
          expect(buf.byteOffset % DIRECT_IO_ALIGNMENT).to.equal(0);
        }
      });
      expect(inArena, 'large payloads came from the arena').to.be.above(100);
    });

    it('falls back to ordinary memory when WebAssembly memory cannot be had (--jitless, ulimit -v)', function () {
      const wasm = (globalThis as unknown as { WebAssembly: { Memory: unknown } }).WebAssembly;
      const Memory = wasm.Memory;
      wasm.Memory = function () {
        throw new RangeError('WebAssembly.Memory(): could not allocate memory');
      };
      try {
        const arena = new AlignedSlabs(SLAB, 4);
        expect(arena.take()).to.equal(null);
        const pool = new PayloadPool(SLAB, 2, arena);
        const big = pool.take(SLAB);
        expect(big.length).to.equal(SLAB);
        expect(directIoAligned([big], 0)).to.equal(false);
        pool.release(big);
      } finally {
        wasm.Memory = Memory;
      }
    });
  });
});

