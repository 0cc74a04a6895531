/**
 * Decoder test vectors and the helpers that feed them.
 *
 * Most vectors are built with the encoder (ws practice: the encoder makes the decoder's input); the
 * `spec:` vectors are hand-written from the hex in docs/PROTOCOL.md §9, so that encoder and decoder
 * cannot agree on a mistake without the spec noticing.
 */
import { expect } from 'chai';
import {
  DATA_CRC_BYTES,
  DEFAULT_MAX_HEADER_BYTES,
  FRAME_PREFIX_BYTES,
  FtsError,
  MAX_CHUNK_BYTES,
  encodeData,
  encodeHeader,
  type ErrorCode,
  type Frame,
  type FrameDecoder,
  type Header,
} from '../../protocol/index.js';

export type ExpectedFrame =
  | { readonly kind: 'header'; readonly header: Header }
  | { readonly kind: 'bad-header' }
  | { readonly kind: 'data'; readonly payload: Buffer; readonly crcOk: boolean };

export interface DecodeVector {
  readonly name: string;
  readonly bytes: Buffer;
  readonly expected: readonly ExpectedFrame[];
}

/** Vectors at least this long are split at a sample of boundaries rather than at every one. */
export const LARGE_VECTOR_BYTES = 8 * 1024;

// ---------------------------------------------------------------------------------------------------------
// Small utilities

/** Parses hex such as "48 00 00 00 14" (whitespace ignored). */
export function hex(text: string): Buffer {
  const clean = text.replace(/\s+/g, '');
  if (!/^(?:[0-9a-fA-F]{2})*$/.test(clean)) throw new Error(`bad hex: ${text}`);
  return Buffer.from(clean, 'hex');
}

/** A frame written as in PROTOCOL.md §9: the hex prefix, then the body as text. */
export function specFrame(prefixHex: string, bodyText: string): Buffer {
  return Buffer.concat([hex(prefixHex), Buffer.from(bodyText, 'utf8')]);
}

/** A raw header frame around arbitrary body bytes (for bodies the encoder cannot produce). */
export function rawHeaderFrame(body: Buffer): Buffer {
  const prefix = Buffer.alloc(FRAME_PREFIX_BYTES);
  prefix[0] = 0x48;
  prefix.writeUInt32BE(body.length, 1);
  return Buffer.concat([prefix, body]);
}

/** A bare 5-byte prefix. */
export function prefix(type: number, length: number): Buffer {
  const p = Buffer.alloc(FRAME_PREFIX_BYTES);
  p[0] = type;
  p.writeUInt32BE(length, 1);
  return p;
}

/** Deterministic PRNG (mulberry32) so that failures are reproducible. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function pseudoRandomBytes(length: number, seed: number): Buffer {
  const next = seededRandom(seed);
  const out = Buffer.alloc(length);
  for (let i = 0; i < length; i++) out[i] = Math.floor(next() * 256);
  return out;
}

/** Offsets at which frames start, found by walking the prefixes (independent of FrameDecoder). */
export function frameStarts(bytes: Buffer): number[] {
  const starts: number[] = [];
  let at = 0;
  while (at + FRAME_PREFIX_BYTES <= bytes.length) {
    starts.push(at);
    at += FRAME_PREFIX_BYTES + bytes.readUInt32BE(at + 1);
  }
  return starts;
}

// ---------------------------------------------------------------------------------------------------------
// Feeding

export function feedWhole(decoder: FrameDecoder, bytes: Buffer): Frame[] {
  return decoder.push(bytes);
}

export function feedPieces(decoder: FrameDecoder, pieces: readonly Buffer[]): Frame[] {
  const frames: Frame[] = [];
  for (const piece of pieces) frames.push(...decoder.push(piece));
  return frames;
}

export function feedByteByByte(decoder: FrameDecoder, bytes: Buffer): Frame[] {
  const frames: Frame[] = [];
  for (let i = 0; i < bytes.length; i++) frames.push(...decoder.push(bytes.subarray(i, i + 1)));
  return frames;
}

export function feedSplit(decoder: FrameDecoder, bytes: Buffer, at: number): Frame[] {
  return [...decoder.push(bytes.subarray(0, at)), ...decoder.push(bytes.subarray(at))];
}

/**
 * Pieces for "byte by byte" on a large vector: single bytes over a window after every frame start (prefix,
 * CRC and first payload bytes) and before the end, one piece for each stretch in between.
 */
export function bytewisePieces(bytes: Buffer, window = 16): Buffer[] {
  const single = new Set<number>();
  for (const start of frameStarts(bytes)) {
    for (let i = start; i < Math.min(bytes.length, start + window); i++) single.add(i);
  }
  for (let i = Math.max(0, bytes.length - window); i < bytes.length; i++) single.add(i);
  const pieces: Buffer[] = [];
  let runStart = -1;
  for (let i = 0; i < bytes.length; i++) {
    if (single.has(i)) {
      if (runStart >= 0) pieces.push(bytes.subarray(runStart, i));
      runStart = -1;
      pieces.push(bytes.subarray(i, i + 1));
    } else if (runStart < 0) {
      runStart = i;
    }
  }
  if (runStart >= 0) pieces.push(bytes.subarray(runStart));
  return pieces;
}

/**
 * Split points: all of them for a small vector; for a large one, every point within `window` bytes of a
 * frame start or of the end, plus `samples` seeded random points elsewhere.
 */
export function splitPoints(bytes: Buffer, window = 12, samples = 24): number[] {
  if (bytes.length < LARGE_VECTOR_BYTES) return Array.from({ length: bytes.length + 1 }, (_, i) => i);
  const points = new Set<number>([0, bytes.length]);
  for (const start of frameStarts(bytes)) {
    for (let i = Math.max(0, start - window); i <= Math.min(bytes.length, start + window); i++) points.add(i);
  }
  for (let i = bytes.length - window; i <= bytes.length; i++) points.add(i);
  const next = seededRandom(bytes.length);
  for (let s = 0; s < samples; s++) points.add(Math.floor(next() * (bytes.length + 1)));
  return [...points].sort((a, b) => a - b);
}

// ---------------------------------------------------------------------------------------------------------
// Assertions

/** Deep-equal headers, byte-equal payloads, equal crcOk; bad-header frames must carry a reason. */
export function expectFrames(actual: readonly Frame[], expected: readonly ExpectedFrame[], context = ''): void {
  const where = context === '' ? '' : ` (${context})`;
  expect(actual.map((f) => f.kind), `frame kinds${where}`).to.deep.equal(expected.map((f) => f.kind));
  expected.forEach((want, i) => {
    const got = actual[i];
    if (got === undefined) throw new Error(`missing frame ${i}${where}`);
    if (want.kind === 'header' && got.kind === 'header') {
      expect(got.header, `header ${i}${where}`).to.deep.equal(want.header);
    } else if (want.kind === 'bad-header' && got.kind === 'bad-header') {
      expect(got.reason, `bad-header reason ${i}${where}`).to.be.a('string').and.not.equal('');
    } else if (want.kind === 'data' && got.kind === 'data') {
      expect(got.crcOk, `crcOk of frame ${i}${where}`).to.equal(want.crcOk);
      expect(got.payload.length, `payload length of frame ${i}${where}`).to.equal(want.payload.length);
      expect(got.payload.equals(want.payload), `payload bytes of frame ${i}${where}`).to.equal(true);
    } else {
      throw new Error(`frame ${i} kind mismatch${where}`);
    }
  });
}

/** Runs fn, requires it to throw an FtsError with `code`, and returns that error. */
export function expectFtsError(fn: () => unknown, code: ErrorCode): FtsError {
  let thrown: unknown = undefined;
  let threw = false;
  try {
    fn();
  } catch (err) {
    threw = true;
    thrown = err;
  }
  expect(threw, `expected an FtsError ${code}, nothing was thrown`).to.equal(true);
  expect(thrown).to.be.instanceOf(FtsError);
  const err = thrown as FtsError;
  expect(err.code, `error code (message: ${err.message})`).to.equal(code);
  return err;
}

// ---------------------------------------------------------------------------------------------------------
// The vectors

const SHA_HELLO = '5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03';
const HELLO_PAYLOAD = Buffer.from('hello\n', 'utf8');

function header(h: Header): { bytes: Buffer; expected: ExpectedFrame } {
  return { bytes: encodeHeader(h), expected: { kind: 'header', header: h } };
}

function data(payload: Buffer): { bytes: Buffer; expected: ExpectedFrame } {
  return { bytes: encodeData(payload), expected: { kind: 'data', payload, crcOk: true } };
}

function seq(name: string, parts: readonly { bytes: Buffer; expected: ExpectedFrame }[]): DecodeVector {
  return { name, bytes: Buffer.concat(parts.map((p) => p.bytes)), expected: parts.map((p) => p.expected) };
}

/** A data frame whose stored CRC is wrong (one bit flipped); framing is intact. */
export function corruptCrcData(payload: Buffer): Buffer {
  const frame = encodeData(payload);
  frame[FRAME_PREFIX_BYTES] = frame[FRAME_PREFIX_BYTES]! ^ 0x01;
  return frame;
}

const payload1000 = pseudoRandomBytes(1000, 1000);
const payloadMax = pseudoRandomBytes(MAX_CHUNK_BYTES, 42);

/** A header whose body is exactly `bodyBytes` long. */
function headerOfBodyLength(bodyBytes: number): Header {
  const base = JSON.stringify({ op: 'noop', id: 1, pad: '' });
  return { op: 'noop', id: 1, pad: 'x'.repeat(bodyBytes - Buffer.byteLength(base)) };
}

export const VECTORS: readonly DecodeVector[] = [
  // --- hand-written, from PROTOCOL.md §9 ------------------------------------------------------------------
  {
    name: 'spec: noop request {"op":"noop","id":7}',
    bytes: hex('48 00 00 00 14 7b 22 6f 70 22 3a 22 6e 6f 6f 70 22 2c 22 69 64 22 3a 37 7d'),
    expected: [{ kind: 'header', header: { op: 'noop', id: 7 } }],
  },
  {
    name: 'spec: data frame "hello\\n" with CRC32C 0x353dd8be',
    bytes: hex('44 00 00 00 0a 35 3d d8 be 68 65 6c 6c 6f 0a'),
    expected: [{ kind: 'data', payload: HELLO_PAYLOAD, crcOk: true }],
  },
  {
    name: 'spec: greeting',
    bytes: specFrame(
      '48 00 00 00 a0',
      '{"status":"hello","protocol":"fts/1","server":"fts/0.1.0","mechs":["plain"],"caps":["pipeline","crc32c","download-offset"],"maxHeader":16384,"maxChunk":1048576}',
    ),
    expected: [
      {
        kind: 'header',
        header: {
          status: 'hello',
          protocol: 'fts/1',
          server: 'fts/0.1.0',
          mechs: ['plain'],
          caps: ['pipeline', 'crc32c', 'download-offset'],
          maxHeader: 16384,
          maxChunk: 1048576,
        },
      },
    ],
  },
  {
    name: 'spec: client side of the transcript (auth, upload + data, list, download, quit)',
    bytes: Buffer.concat([
      specFrame('48 00 00 00 4a', '{"op":"auth","id":1,"mech":"plain","user":"alice","password":"alice-pass"}'),
      specFrame('48 00 00 00 7e', `{"op":"upload","id":2,"name":"hello.txt","size":6,"sha256":"${SHA_HELLO}"}`),
      hex('44 00 00 00 0a 35 3d d8 be 68 65 6c 6c 6f 0a'),
      specFrame('48 00 00 00 20', '{"op":"list","id":3,"long":true}'),
      specFrame('48 00 00 00 36', '{"op":"download","id":4,"name":"hello.txt","offset":0}'),
      specFrame('48 00 00 00 14', '{"op":"quit","id":5}'),
    ]),
    expected: [
      { kind: 'header', header: { op: 'auth', id: 1, mech: 'plain', user: 'alice', password: 'alice-pass' } },
      { kind: 'header', header: { op: 'upload', id: 2, name: 'hello.txt', size: 6, sha256: SHA_HELLO } },
      { kind: 'data', payload: HELLO_PAYLOAD, crcOk: true },
      { kind: 'header', header: { op: 'list', id: 3, long: true } },
      { kind: 'header', header: { op: 'download', id: 4, name: 'hello.txt', offset: 0 } },
      { kind: 'header', header: { op: 'quit', id: 5 } },
    ],
  },
  {
    name: 'spec: server side of the transcript after the greeting',
    bytes: Buffer.concat([
      specFrame('48 00 00 00 25', '{"id":1,"status":"ok","user":"alice"}'),
      specFrame(
        '48 00 00 00 94',
        `{"id":2,"status":"ok","name":"hello.txt","size":6,"sha256":"${SHA_HELLO}","mtime":1764090000000}`,
      ),
      specFrame('48 00 00 00 4b', '{"id":3,"status":"entry","name":"hello.txt","size":6,"mtime":1764090000000}'),
      specFrame('48 00 00 00 20', '{"id":3,"status":"ok","count":1}'),
      specFrame('48 00 00 00 4d', '{"id":4,"status":"data","size":6,"mtime":1764090000000,"offset":0,"length":6}'),
      hex('44 00 00 00 0a 35 3d d8 be 68 65 6c 6c 6f 0a'),
      specFrame(
        '48 00 00 00 89',
        `{"id":4,"status":"ok","name":"hello.txt","size":6,"length":6,"sha256":"${SHA_HELLO}"}`,
      ),
      specFrame('48 00 00 00 16', '{"id":5,"status":"ok"}'),
    ]),
    expected: [
      { kind: 'header', header: { id: 1, status: 'ok', user: 'alice' } },
      { kind: 'header', header: { id: 2, status: 'ok', name: 'hello.txt', size: 6, sha256: SHA_HELLO, mtime: 1764090000000 } },
      { kind: 'header', header: { id: 3, status: 'entry', name: 'hello.txt', size: 6, mtime: 1764090000000 } },
      { kind: 'header', header: { id: 3, status: 'ok', count: 1 } },
      { kind: 'header', header: { id: 4, status: 'data', size: 6, mtime: 1764090000000, offset: 0, length: 6 } },
      { kind: 'data', payload: HELLO_PAYLOAD, crcOk: true },
      { kind: 'header', header: { id: 4, status: 'ok', name: 'hello.txt', size: 6, length: 6, sha256: SHA_HELLO } },
      { kind: 'header', header: { id: 5, status: 'ok' } },
    ],
  },
  // --- hand-written JSON the encoder would never produce ---------------------------------------------------
  {
    name: 'hand: whitespace, reordered fields and \\u escapes in the JSON text',
    bytes: rawHeaderFrame(Buffer.from(' {\r\n\t"name" : "\\u00e9t\\u00e9 \\ud83d\\ude00" ,\n "id":\t9, "op":"view" }\n', 'utf8')),
    expected: [{ kind: 'header', header: { op: 'view', id: 9, name: 'été 😀' } }],
  },
  {
    name: 'hand: empty JSON object',
    bytes: hex('48 00 00 00 02 7b 7d'),
    expected: [{ kind: 'header', header: {} }],
  },
  // --- encoder-built headers ------------------------------------------------------------------------------
  seq('enc: ASCII header', [header({ op: 'delete', id: 12, name: 'report.pdf' })]),
  seq('enc: header with multi-byte UTF-8 names (Latin-1, CJK, Cyrillic, NFD)', [
    header({ op: 'download', id: 1, name: 'résumé 文件 файл e\u0301.txt', offset: 3 }),
  ]),
  seq('enc: header with emoji (surrogate pairs, skin tone, ZWJ sequence)', [
    header({ op: 'upload', id: 2, name: '🎉 party 👍🏽 👨‍👩‍👧.txt', size: 0, sha256: 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855' }),
  ]),
  seq('enc: header with escaped characters (quote, backslash, control chars, U+2028, NUL)', [
    header({ id: null, status: 'error', code: 'BAD_NAME', message: 'bad "name" a\\b\t\n\r\u0000\u001f\u2028\u2029\u007f', fatal: false }),
  ]),
  seq('enc: header with nested arrays/objects and number edge values', [
    header({ status: 'entry', id: 4294967295, size: Number.MAX_SAFE_INTEGER, mtime: 0, nested: { a: [1, [2, { b: null }]], t: true, f: false } }),
  ]),
  seq('enc: header body of exactly DEFAULT_MAX_HEADER_BYTES', [header(headerOfBodyLength(DEFAULT_MAX_HEADER_BYTES))]),
  // --- encoder-built data frames --------------------------------------------------------------------------
  seq('enc: data frame of 1 byte (0x00)', [data(Buffer.from([0x00]))]),
  seq('enc: data frame of 1 byte (0x48, looks like a header type)', [data(Buffer.from([0x48]))]),
  seq('enc: data frame of 1000 bytes', [data(payload1000)]),
  seq('enc: data frame of exactly MAX_CHUNK_BYTES', [data(payloadMax)]),
  seq('enc: data payload that contains encoded frames (no confusion with framing)', [
    data(Buffer.concat([encodeHeader({ op: 'quit', id: 1 }), encodeData(Buffer.from('x'))])),
  ]),
  // --- sequences ------------------------------------------------------------------------------------------
  seq('enc: upload header, three data frames, next request', [
    header({ op: 'upload', id: 3, name: 'b.bin', size: 1006, sha256: 'a'.repeat(64) }),
    data(Buffer.from('hello\n')),
    data(payload1000.subarray(0, 999)),
    data(Buffer.from([0xff])),
    header({ op: 'list', id: 4, long: false }),
  ]),
  seq('enc: download reply, data, final reply, entries (server side)', [
    header({ id: 6, status: 'data', size: 2, mtime: 1764090000000, offset: 0, length: 2 }),
    data(Buffer.from([0x44, 0x00])),
    header({ id: 6, status: 'ok', name: 'ü', size: 2, length: 2, sha256: 'b'.repeat(64) }),
    header({ id: 7, status: 'entry', name: '日本語', size: 12, mtime: 1 }),
    header({ id: 7, status: 'ok', count: 1 }),
  ]),
  seq('enc: header, MAX_CHUNK_BYTES data frame, 1-byte data frame, header', [
    header({ op: 'upload', id: 8, name: 'big', size: MAX_CHUNK_BYTES + 1, sha256: 'c'.repeat(64) }),
    data(payloadMax),
    data(Buffer.from([0x7f])),
    header({ op: 'noop', id: 9 }),
  ]),
  // --- frames the decoder reports but survives ------------------------------------------------------------
  {
    name: 'bad-header between good frames, decoding continues',
    bytes: Buffer.concat([
      encodeHeader({ op: 'noop', id: 1 }),
      rawHeaderFrame(Buffer.from('{"op":', 'utf8')),
      encodeData(Buffer.from('abc')),
      encodeHeader({ op: 'noop', id: 2 }),
    ]),
    expected: [
      { kind: 'header', header: { op: 'noop', id: 1 } },
      { kind: 'bad-header' },
      { kind: 'data', payload: Buffer.from('abc'), crcOk: true },
      { kind: 'header', header: { op: 'noop', id: 2 } },
    ],
  },
  {
    name: 'data frame with a wrong CRC, decoding continues',
    bytes: Buffer.concat([corruptCrcData(Buffer.from('hello\n')), encodeData(Buffer.from('ok')), encodeHeader({ op: 'quit', id: 3 })]),
    expected: [
      { kind: 'data', payload: HELLO_PAYLOAD, crcOk: false },
      { kind: 'data', payload: Buffer.from('ok'), crcOk: true },
      { kind: 'header', header: { op: 'quit', id: 3 } },
    ],
  },
];

/** Sanity constants used by tests that build frames by hand. */
export const MAX_DATA_FRAME_LENGTH = DATA_CRC_BYTES + MAX_CHUNK_BYTES;
