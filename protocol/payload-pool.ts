/**
 * Recycled memory for data-frame payloads, so that moving a file does not churn the allocator. Shared by
 * the server and the client; pure memory bookkeeping, no I/O.
 *
 * Why: a payload in a fresh Buffer lives outside the JS heap and is freed only when a garbage collection
 * finds its wrapper dead. V8 schedules collections by JS-heap allocation, which a transfer barely does,
 * so gigabytes of dead payloads pile up (tens of MiB at a time) and the allocator keeps the high-water
 * mark as RSS. Carving payloads out of a few reused slabs keeps a transfer's memory at the data actually
 * in flight.
 *
 * How: payloads are cut one after another from the current slab (bump allocation). Each slab counts the
 * payloads cut from it that are still in use; when the slab is full it is retired, and once its last
 * payload is released it goes back on the free list. A payload that is never released only costs its slab
 * being collected by the GC instead of reused: nothing dangles, since the pool keeps no strong reference
 * to an ordinary slab that has payloads out. An aligned slab (aligned-slabs.ts) whose payload is never
 * released is lost to the arena for good (its memory is never reused or freed), so every path that drops
 * a payload must release it.
 */

import { AlignedSlabs, DIRECT_IO_ALIGNMENT } from './aligned-slabs.js';
import { MAX_CHUNK_BYTES } from './limits.js';

/** Payloads at least this large start at an aligned offset of an aligned slab (see aligned-slabs.ts). */
const ALIGN_FROM_BYTES = 64 * 1024;

interface Slab {
  readonly memory: Buffer;
  /** Bytes cut so far. */
  used: number;
  /** Payloads cut from this slab and not yet released. */
  out: number;
  /** No longer the slab new payloads are cut from. */
  retired: boolean;
  /** Cut from the aligned arena (given back to it, never left to the GC). */
  readonly aligned: boolean;
}

export class PayloadPool {
  readonly #slabBytes: number;
  readonly #keepFree: number;
  readonly #free: Slab[] = [];
  readonly #aligned: AlignedSlabs | null;
  /** The slab a payload was cut from, by the payload's backing memory. */
  readonly #slabs = new WeakMap<ArrayBufferLike, Slab>();
  /** The aligned slabs handed out, by their offset in the arena (they all share its memory). */
  readonly #alignedSlabs = new Map<number, Slab>();
  /** Payloads handed out and not yet released: a second release of one must not free another's room. */
  readonly #outstanding = new WeakSet<Buffer>();
  /** The slab small payloads are cut from (and large ones, without an arena). */
  #current: Slab | null = null;
  /**
   * With an arena, the slab large payloads are cut from: aligned while the arena has slabs. Small payloads
   * never touch the arena, so hostile or chatty connections do not pin its (never freed) memory.
   */
  #currentLarge: Slab | null = null;

  /**
   * @param slabBytes size of one slab: the largest payload that can be cut from the pool.
   * @param keepFree free slabs kept for reuse; more are left to the GC.
   * @param aligned where slabs for payloads of 64 KiB or more come from first: page-aligned memory (see
   *   aligned-slabs.ts).
   */
  constructor(slabBytes: number, keepFree: number, aligned: AlignedSlabs | null = null) {
    this.#slabBytes = slabBytes;
    this.#keepFree = keepFree;
    this.#aligned = aligned;
  }

  /**
   * A buffer of exactly `length` bytes (uninitialised). Give it back with release() once written out.
   * `forFile` false: the bytes go to a socket, never to a file, so they need no aligned memory.
   */
  take(length: number, forFile = true): Buffer {
    // Larger than a slab (not a data payload) or empty: an ordinary buffer the GC will handle.
    if (length > this.#slabBytes || length === 0) return Buffer.allocUnsafe(length);
    const large = forFile && this.#aligned !== null && length >= ALIGN_FROM_BYTES;
    let slab = large ? this.#currentLarge : this.#current;
    let at = slab === null ? 0 : startOf(slab, length);
    if (slab === null || at + length > slab.memory.length) {
      if (slab !== null) this.#retire(slab);
      slab = (large ? this.#freshAligned() : null) ?? this.#fresh();
      if (large) this.#currentLarge = slab;
      else this.#current = slab;
      at = 0;
    }
    const payload = slab.memory.subarray(at, at + length);
    slab.used = at + length;
    slab.out++;
    this.#outstanding.add(payload);
    return payload;
  }

  /** Returns a buffer from take(). Anything else, or a second release, is ignored. */
  release(payload: Buffer): void {
    if (!this.#outstanding.delete(payload)) return;
    const inArena = this.#aligned?.slabOffsetOf(payload) ?? null;
    const slab = inArena === null ? this.#slabs.get(payload.buffer) : this.#alignedSlabs.get(inArena);
    if (slab === undefined || slab.out === 0) return;
    slab.out--;
    if (slab.out > 0) return;
    if (slab.retired) this.#recycle(slab);
    else slab.used = 0; // the current slab is empty again: start cutting from its beginning
  }

  /** Free slabs held for reuse (for tests and metrics). */
  get freeSlabs(): number {
    return this.#free.length;
  }

  #retire(slab: Slab): void {
    slab.retired = true;
    if (slab.out === 0) this.#recycle(slab);
  }

  #recycle(slab: Slab): void {
    slab.used = 0;
    slab.retired = false;
    if (slab.aligned) {
      this.#alignedSlabs.delete(slab.memory.byteOffset);
      this.#aligned!.give(slab.memory);
    }
    else if (this.#free.length < this.#keepFree) this.#free.push(slab);
  }

  #freshAligned(): Slab | null {
    const memory = this.#aligned?.take() ?? null;
    return memory === null ? null : this.#register({ memory, used: 0, out: 0, retired: false, aligned: true });
  }

  #fresh(): Slab {
    const reused = this.#free.pop();
    if (reused !== undefined) return reused;
    // allocUnsafeSlow: a buffer of its own, never a slice of Node's shared small-buffer pool.
    return this.#register({ memory: Buffer.allocUnsafeSlow(this.#slabBytes), used: 0, out: 0, retired: false, aligned: false });
  }

  #register(slab: Slab): Slab {
    if (slab.aligned) this.#alignedSlabs.set(slab.memory.byteOffset, slab);
    else this.#slabs.set(slab.memory.buffer, slab);
    return slab;
  }
}

/** Where the next payload of `length` bytes starts in `slab`: large ones at an aligned offset. */
function startOf(slab: Slab, length: number): number {
  if (!slab.aligned || length < ALIGN_FROM_BYTES) return slab.used;
  return Math.ceil(slab.used / DIRECT_IO_ALIGNMENT) * DIRECT_IO_ALIGNMENT;
}

/**
 * A pool sized for data frames: by default a slab holds two of the largest payloads (`slabBytes` may be
 * larger, for larger reads), and eight free slabs are kept, enough for several concurrent transfers to
 * recycle memory. Each process makes one (the server's worker for all its connections, the client library
 * for all its connections). With `alignedSlabs` > 0, that many slabs come first from page-aligned memory,
 * so that full-size payloads can be written to files with O_DIRECT.
 */
export function framePayloadPool(alignedSlabs = 0, slabBytes = 2 * MAX_CHUNK_BYTES): PayloadPool {
  return new PayloadPool(slabBytes, 8, alignedSlabs > 0 ? new AlignedSlabs(slabBytes, alignedSlabs) : null);
}
