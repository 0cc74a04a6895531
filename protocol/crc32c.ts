/**
 * CRC32C (Castagnoli, reflected polynomial 0x82F63B78). Check value: crc32c("123456789") = 0xE3069283.
 * Node 20 ships only the IEEE CRC-32; CRC32C has better error detection for the chunk sizes we use and is
 * what iSCSI, ext4 and gRPC use.
 *
 * Every byte of a transfer is CRC'd by both ends, so inputs past a few dozen bytes go to a small WebAssembly
 * module (protocol/wasm/crc32c.wat explains the method), about 10x the JS tables on 256 KiB. The pure-JS
 * slicing-by-8 stays for tiny inputs, where the copy into wasm memory and the call cost more than they save,
 * and for runtimes where the module cannot be instantiated.
 */
import { CRC32C_WASM_BASE64 } from './crc32c-wasm.js';

/** Below this many bytes the JS tables beat the copy into wasm memory plus the call (measured on Node 20 / x86-64). */
const WASM_MIN_BYTES = 48;

/** table k (at 256k): CRC register after byte b followed by k zero bytes. JS uses 8 of them, the wasm module 16. */
const TABLES = buildTables(16);

function buildTables(count: number): Int32Array {
  const t = new Int32Array(256 * count);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[i] = c;
  }
  for (let i = 0; i < 256; i++) {
    let c = t[i]!;
    for (let s = 1; s < count; s++) {
      c = t[c & 0xff]! ^ (c >>> 8);
      t[s * 256 + i] = c;
    }
  }
  return t;
}

/** The pure-JS slicing-by-8 implementation: the fallback without WebAssembly, exported for tests. */
export function crc32cJs(buf: Uint8Array, previous = 0): number {
  const t = TABLES;
  let crc = ~previous;
  let i = 0;
  const n = buf.length;
  for (; i + 8 <= n; i += 8) {
    const a = (buf[i]! | (buf[i + 1]! << 8) | (buf[i + 2]! << 16) | (buf[i + 3]! << 24)) ^ crc;
    crc =
      t[1792 + (a & 0xff)]! ^
      t[1536 + ((a >>> 8) & 0xff)]! ^
      t[1280 + ((a >>> 16) & 0xff)]! ^
      t[1024 + (a >>> 24)]! ^
      t[768 + buf[i + 4]!]! ^
      t[512 + buf[i + 5]!]! ^
      t[256 + buf[i + 6]!]! ^
      t[buf[i + 7]!]!;
  }
  for (; i < n; i++) crc = t[(crc ^ buf[i]!) & 0xff]! ^ (crc >>> 8);
  return ~crc >>> 0;
}

interface WasmCrc {
  /** Where the input is copied: one region, reused by every call. */
  scratch: Uint8Array;
  /** CRC32C of the first n bytes of scratch, continuing from `previous`; a signed 32-bit result. */
  crc: (n: number, previous: number) => number;
}

/** The part of the WebAssembly API used here; lib.dom is not in this project's types. */
interface WasmApi {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object) => { exports: Record<string, unknown> };
}

/** Synchronous: the module is 1.5 KB. Any failure leaves the JS tables in charge. */
function loadWasm(): WasmCrc | undefined {
  try {
    const wasm = (globalThis as { WebAssembly?: WasmApi }).WebAssembly;
    if (wasm === undefined) return undefined;
    const { exports } = new wasm.Instance(new wasm.Module(Buffer.from(CRC32C_WASM_BASE64, 'base64')));
    const memory = exports.memory as { buffer: ArrayBuffer };
    const offset = (name: string): number => (exports[name] as { value: number }).value;
    // The module's memory has a fixed size, so these views never detach.
    new Int32Array(memory.buffer, offset('tables'), TABLES.length).set(TABLES);
    const loaded: WasmCrc = {
      scratch: new Uint8Array(memory.buffer, offset('scratch'), offset('scratchSize')),
      crc: exports.crc as WasmCrc['crc'],
    };
    // Cheap guard against a module whose layout no longer matches these tables: fall back rather than be wrong.
    loaded.scratch.set(Buffer.from('123456789'));
    return loaded.crc(9, 0) >>> 0 === 0xe3069283 ? loaded : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Loaded on the first input that needs it, not at import: compiling the module costs milliseconds that a
 * command moving no file data (`fts list`, `fts --help`) should not pay at start-up.
 */
let wasmState: WasmCrc | null | undefined;

function wasmCrc(): WasmCrc | null {
  if (wasmState === undefined) wasmState = loadWasm() ?? null;
  return wasmState;
}

/** Which implementation crc32c() uses for inputs of WASM_MIN_BYTES or more; for tests and diagnostics. */
export function crc32cBackend(): 'wasm' | 'js' {
  return wasmCrc() === null ? 'js' : 'wasm';
}

/** CRC32C of `buf`, continuing from `previous` (the CRC of the bytes before it; 0 to start). */
export function crc32c(buf: Uint8Array, previous = 0): number {
  const n = buf.length;
  const WASM = n < WASM_MIN_BYTES ? null : wasmCrc();
  if (WASM === null) return crc32cJs(buf, previous);
  const { scratch, crc } = WASM;
  const size = scratch.length;
  if (n <= size) {
    scratch.set(buf);
    return crc(n, previous) >>> 0;
  }
  let c = previous;
  for (let at = 0; at < n; at += size) {
    const piece = buf.subarray(at, at + size);
    scratch.set(piece);
    c = crc(piece.length, c);
  }
  return c >>> 0;
}
