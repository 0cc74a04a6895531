/**
 * Page-aligned memory for data payloads, so that a file can be written with O_DIRECT straight from the
 * bytes the socket delivered. Pure memory bookkeeping, no I/O.
 *
 * Why: on a virtual machine, copying written bytes into the page cache is the largest single cost of
 * storing a file (first touch of each new page-cache page; ~2 s of system time per GiB measured here,
 * against ~0.15 s for the same writes with O_DIRECT). O_DIRECT needs the memory address, the length and
 * the file position aligned to the device's block size, and JavaScript cannot ask for aligned memory:
 * Buffer.allocUnsafeSlow lands wherever malloc puts it. A WebAssembly memory, however, is allocated by
 * V8 in whole pages, so its base is page-aligned, and any offset that is a multiple of the page size is
 * too.
 *
 * How: one memory per arena, created on first use and never grown (growing would detach every Buffer
 * that views it). It is cut into fixed slabs handed out and given back by the payload pool. Its pages
 * become resident only when first written, and stay resident after that (memory given to WebAssembly is
 * never returned to the system), so an arena holds at most its peak use.
 */

/** Alignment that satisfies O_DIRECT on every common device (512-byte and 4 KiB sectors). */
export const DIRECT_IO_ALIGNMENT = 4096;

const WASM_PAGE_BYTES = 64 * 1024;

/** ArrayBuffers of every arena: a Buffer over one of them at an aligned offset is page-aligned. */
const arenaBuffers = new WeakSet<ArrayBufferLike>();

export class AlignedSlabs {
  readonly #slabBytes: number;
  readonly #count: number;
  #arena: Buffer | null = null;
  /** Offsets of the slabs not handed out, lowest first, so a light load keeps touching the same pages. */
  #free: number[] = [];
  #created = 0;
  /** Creating the memory failed once; it is not tried again. */
  #unavailable = false;

  /** @param slabBytes size of one slab (a multiple of 64 KiB); @param count slabs in the arena. */
  constructor(slabBytes: number, count: number) {
    if (slabBytes % WASM_PAGE_BYTES !== 0) throw new RangeError('slabBytes must be a multiple of 64 KiB');
    this.#slabBytes = slabBytes;
    this.#count = count;
  }

  /**
   * A free slab, or null when all are in use or the arena cannot exist (the caller falls back to ordinary
   * memory).
   */
  take(): Buffer | null {
    const arena = this.#memory();
    if (arena === null) return null;
    const at = this.#free.shift() ?? (this.#created < this.#count ? this.#created++ * this.#slabBytes : null);
    if (at === null) return null;
    return arena.subarray(at, at + this.#slabBytes);
  }

  /** Gives back a slab from take(). */
  give(slab: Buffer): void {
    const at = slab.byteOffset;
    let i = 0;
    while (i < this.#free.length && this.#free[i]! < at) i++;
    this.#free.splice(i, 0, at);
  }

  /** The offset of the slab `buf` lies in, when it lies in this arena; null otherwise. */
  slabOffsetOf(buf: Buffer): number | null {
    if (this.#arena === null || buf.buffer !== this.#arena.buffer) return null;
    return buf.byteOffset - (buf.byteOffset % this.#slabBytes);
  }

  /** The arena, created on first use; null for good when it cannot be (see #unavailable). */
  #memory(): Buffer | null {
    if (this.#unavailable) return null;
    if (this.#arena === null) {
      const pages = (this.#slabBytes * this.#count) / WASM_PAGE_BYTES;
      // The compiler's lib set has no WebAssembly types (no DOM lib); this is the one constructor used.
      const wasm = (globalThis as unknown as { WebAssembly?: { Memory: new (d: { initial: number; maximum: number }) => { buffer: ArrayBuffer } } }).WebAssembly;
      let memory: { buffer: ArrayBuffer };
      try {
        if (wasm === undefined) throw new Error('no WebAssembly');
        memory = new wasm.Memory({ initial: pages, maximum: pages });
      } catch {
        // No WebAssembly (--jitless), or no address space for it (ulimit -v): ordinary memory only.
        this.#unavailable = true;
        return null;
      }
      arenaBuffers.add(memory.buffer);
      this.#arena = Buffer.from(memory.buffer);
    }
    return this.#arena;
  }
}

/** Whether `buf` lies in an arena at an aligned offset and has an aligned length. */
function aligned(buf: Buffer): boolean {
  return arenaBuffers.has(buf.buffer) && buf.byteOffset % DIRECT_IO_ALIGNMENT === 0 && buf.length % DIRECT_IO_ALIGNMENT === 0;
}

/**
 * How many of `buffers`, from the first, meet O_DIRECT's alignment when written contiguously at file
 * position `position`: each lies in an arena at an aligned offset with an aligned length (so every one
 * also starts at an aligned file position), and the position is aligned.
 */
export function directIoPrefix(buffers: readonly Buffer[], position: number): number {
  if (position % DIRECT_IO_ALIGNMENT !== 0) return 0;
  let n = 0;
  while (n < buffers.length && aligned(buffers[n]!)) n++;
  return n;
}
