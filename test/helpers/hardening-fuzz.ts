/**
 * Seeded generators for the protocol fuzzer: random values, random requests for every operation, random
 * frames (including malformed framing and huge declared lengths), valid transcripts, and byte-level
 * mutations of them. Everything is driven by one seeded PRNG so that a failing run reproduces from its seed.
 */
import { crc32c, encodeData, encodeHeader, ERROR_CODES, OPS, type Frame, type Header } from '../../protocol/index.js';
import { sha256 } from './raw-client.js';

/** mulberry32: small, fast, good enough for fuzzing, and reproducible from a 32-bit seed. */
export class Rng {
  private a: number;
  constructor(seed: number) {
    this.a = seed >>> 0;
  }
  next(): number {
    this.a = (this.a + 0x6d2b79f5) >>> 0;
    let t = this.a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** Integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  /** Integer in [lo, hi]. */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(items: readonly T[]): T {
    const v = items[this.int(items.length)];
    if (v === undefined) throw new Error('pick from an empty list');
    return v;
  }
  bytes(n: number): Buffer {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) b[i] = this.int(256);
    return b;
  }
  /** A derived generator (for one case), so a case can be replayed from (seed, index). */
  fork(): Rng {
    return new Rng(this.int(0x1_0000_0000));
  }
}

const EMPTY_SHA = sha256(new Uint8Array(0));

const INTERESTING_NUMBERS = [
  0, 1, -1, 2, 7, 255, 256, 1023, 1024, 1025, 4096, 65535, 65536, 1048576, 1048577, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1, 2 ** 32, 2 ** 53 - 1, 2 ** 53,
  -(2 ** 53), 1e308, -1e308, 0.5, 1.5, -0.0001, 5e-324,
];

const INTERESTING_STRINGS = [
  '', 'a', 'x.txt', '.', '..', '...', '/', 'a/b', '../etc/passwd', '\\', 'a\\b', '\u0000', 'a\u0000b', '\u001f', '\u007f', '\u0085', '\ud800', '\udfff',
  '\ud83d\ude00', 'é', 'e\u0301', '%2e%2e', ' ', 'CON', 'nul', '.fts', '.lock', 'x'.repeat(255), 'x'.repeat(256), 'é'.repeat(128), 'plain', 'token',
  'PLAIN', 'scram-sha-256', 'alice', 'fuzz', 'root', 'v2.', 'v2.a.b', 'v2..', 'v1.a.b', EMPTY_SHA, EMPTY_SHA.toUpperCase(), 'g'.repeat(64), '0'.repeat(63),
  'true', 'null', '{}', '[]', '"', '\n', '\r\n', '\u2028', '\ufeff', ...OPS,
];

const KEYS = ['op', 'id', 'mech', 'user', 'password', 'token', 'name', 'size', 'sha256', 'offset', 'long', 'ifSize', 'ifMtime', 'status', 'code', '__proto__', 'constructor'];

export function randomString(rng: Rng): string {
  switch (rng.int(5)) {
    case 0:
    case 1:
      return rng.pick(INTERESTING_STRINGS);
    case 2: {
      const n = rng.chance(0.9) ? rng.int(40) : rng.int(3000);
      let s = '';
      for (let i = 0; i < n; i++) s += String.fromCharCode(rng.chance(0.8) ? rng.range(0x20, 0x7e) : rng.int(0x10000));
      return s;
    }
    case 3:
      return `file-${rng.int(50)}.bin`;
    default:
      return rng.pick(INTERESTING_STRINGS) + rng.pick(INTERESTING_STRINGS);
  }
}

export function randomNumber(rng: Rng): number {
  if (rng.chance(0.5)) return rng.pick(INTERESTING_NUMBERS);
  if (rng.chance(0.5)) return rng.int(5000);
  return Math.floor((rng.next() - 0.5) * 2 ** rng.int(60));
}

/** Sets an own enumerable property, even for "__proto__" (so that JSON.stringify really sends that key). */
function setOwn(o: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(o, key, { value, enumerable: true, writable: true, configurable: true });
}

/** A short label for any value (safe for objects without a prototype). */
export function labelOf(v: unknown): string {
  return typeof v === 'string' ? v.slice(0, 12) : v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v;
}

export function randomValue(rng: Rng, depth = 0): unknown {
  const k = rng.int(depth > 3 ? 5 : 8);
  switch (k) {
    case 0:
      return randomNumber(rng);
    case 1:
    case 2:
      return randomString(rng);
    case 3:
      return rng.chance(0.5);
    case 4:
      return null;
    case 5:
      return Array.from({ length: rng.int(4) }, () => randomValue(rng, depth + 1));
    default: {
      const o: Record<string, unknown> = {};
      for (let i = rng.int(4); i > 0; i--) setOwn(o, rng.chance(0.7) ? rng.pick(KEYS) : randomString(rng), randomValue(rng, depth + 1));
      return o;
    }
  }
}

/** A field value: usually plausible for its key, often of a random type. */
function fieldValue(rng: Rng, key: string): unknown {
  if (rng.chance(0.3)) return randomValue(rng);
  switch (key) {
    case 'id':
      return rng.chance(0.8) ? rng.int(1000) : randomNumber(rng);
    case 'size':
    case 'offset':
    case 'ifSize':
    case 'ifMtime':
      return rng.chance(0.6) ? rng.int(3000) : randomNumber(rng);
    case 'sha256':
      return rng.chance(0.5) ? EMPTY_SHA : rng.chance(0.5) ? rng.bytes(32).toString('hex') : randomString(rng);
    case 'long':
      return rng.chance(0.7) ? rng.chance(0.5) : randomValue(rng);
    case 'mech':
      return rng.pick(['plain', 'token', 'plain', 'x', '', 'PLAIN']);
    default:
      return randomString(rng);
  }
}

const FIELDS_BY_OP: Record<string, readonly string[]> = {
  auth: ['mech', 'user', 'password', 'token'],
  upload: ['name', 'size', 'sha256', 'offset'],
  offset: ['name', 'size', 'sha256'],
  download: ['name', 'offset', 'ifSize', 'ifMtime'],
  view: ['name'],
  delete: ['name'],
  list: ['long'],
  noop: [],
  quit: [],
};

/** A request header for a random (usually real) operation with random field types and values. */
export function randomRequest(rng: Rng): Header {
  const op = rng.chance(0.9) ? rng.pick(OPS) : randomValue(rng);
  const h: Header = {};
  if (rng.chance(0.95)) h['op'] = op;
  if (rng.chance(0.95)) h['id'] = fieldValue(rng, 'id');
  const fields = typeof op === 'string' ? (FIELDS_BY_OP[op] ?? []) : [];
  for (const f of fields) if (rng.chance(0.85)) h[f] = fieldValue(rng, f);
  for (let i = rng.int(3); i > 0; i--) setOwn(h, rng.chance(0.5) ? rng.pick(KEYS) : randomString(rng), randomValue(rng));
  return h;
}

function rawFrame(type: number, declared: number, body: Buffer): Buffer {
  const prefix = Buffer.allocUnsafe(5);
  prefix[0] = type;
  prefix.writeUInt32BE(declared >>> 0, 1);
  return Buffer.concat([prefix, body]);
}

export interface FuzzCase {
  kind: string;
  /** The bytes to send, in the pieces to write them in (exercises the decoder across chunk boundaries). */
  pieces: Buffer[];
  /**
   * true: the framing stays intact and the server should answer and keep (or cleanly close) the
   * session, so more cases may follow on the same connection after a noop probe. false: anything may
   * happen (partial frames, long auth delays): send, half-close and move on.
   */
  packable: boolean;
}

function split(rng: Rng, bytes: Buffer): Buffer[] {
  if (bytes.length < 2 || rng.chance(0.6)) return [bytes];
  const cuts = Array.from({ length: rng.range(1, Math.min(4, bytes.length - 1)) }, () => rng.range(1, bytes.length - 1)).sort((a, b) => a - b);
  const pieces: Buffer[] = [];
  let at = 0;
  for (const c of cuts) {
    if (c > at) pieces.push(bytes.subarray(at, c));
    at = Math.max(at, c);
  }
  pieces.push(bytes.subarray(at));
  return pieces;
}

/** A random JSON-ish header body: the encoder's JSON, or broken text around it. */
function headerBody(rng: Rng): Buffer {
  return headerBodyOf(rng).body;
}

/**
 * `slow`: the body may be an auth or quit request, which end the session (a failed auth after a deliberate
 * delay), so no further case can share the connection.
 */
function headerBodyOf(rng: Rng): { body: Buffer; slow: boolean } {
  const value = rng.chance(0.85) ? randomRequest(rng) : randomValue(rng);
  const op = typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Header)['op'] : undefined;
  const slow = op === 'auth' || op === 'quit';
  return { body: headerBodyBytes(rng, JSON.stringify(value) ?? 'null'), slow };
}

function headerBodyBytes(rng: Rng, json: string): Buffer {
  switch (rng.int(10)) {
    case 0:
      return Buffer.from(json.slice(0, rng.int(json.length + 1)));
    case 1:
      return Buffer.concat([Buffer.from(json), rng.bytes(rng.range(1, 8))]);
    case 2:
      return rng.bytes(rng.int(300));
    case 3:
      return Buffer.from(`\ufeff${json}`);
    case 4:
      return Buffer.from('['.repeat(rng.range(1, 5000)) + ']'.repeat(rng.int(5000)));
    case 5:
      return Buffer.from(`{"a":`.repeat(rng.range(1, 2500)) + '1' + '}'.repeat(rng.int(2600)));
    default:
      return Buffer.from(json);
  }
}

/**
 * One random-frames case. Packable cases are whole, valid-framed header frames (plus, for an upload,
 * exactly its declared data when that is small); the rest stress the framing layer itself.
 */
export function randomFrameCase(rng: Rng, maxHeader: number): FuzzCase {
  const r = rng.int(100);
  if (r < 45) {
    const req = randomRequest(rng);
    const frames: Buffer[] = [encodeHeader(req)];
    if (frames[0]!.length - 5 > maxHeader) return { kind: 'oversized-request', pieces: frames, packable: false };
    let packable = req['op'] !== 'auth' && req['op'] !== 'quit';
    if (req['op'] === 'upload') {
      // Follow with data: exactly the declared amount when small, else random frames (likely a violation).
      const size = typeof req['size'] === 'number' && Number.isSafeInteger(req['size']) && req['size'] >= 0 ? req['size'] : -1;
      const offset = req['offset'] === undefined ? 0 : Number.isSafeInteger(req['offset']) ? (req['offset'] as number) : -1;
      const want = size >= 0 && offset >= 0 && offset <= size ? size - offset : -1;
      if (want >= 0 && want <= 8192 && rng.chance(0.8)) {
        for (let left = want; left > 0; ) {
          const n = Math.min(left, rng.range(1, 4096));
          const payload = rng.bytes(n);
          frames.push(rng.chance(0.9) ? encodeData(payload) : rawFrame(0x44, n + 4, Buffer.concat([Buffer.from([1, 2, 3, 4]), payload])));
          left -= n;
        }
      } else {
        packable = false;
        for (let i = rng.int(3); i > 0; i--) frames.push(encodeData(rng.bytes(rng.range(1, 2048))));
      }
    }
    return { kind: `request:${labelOf(req['op'])}`, pieces: split(rng, Buffer.concat(frames)), packable };
  }
  if (r < 60) {
    const { body, slow } = headerBodyOf(rng);
    return { kind: 'header-body', pieces: split(rng, rawFrame(0x48, body.length, body)), packable: body.length <= maxHeader && !slow };
  }
  if (r < 70) {
    const payload = rng.bytes(rng.range(1, 4096));
    const crc = rng.chance(0.5) ? crc32c(payload) : rng.int(0x1_0000_0000);
    const body = Buffer.concat([Buffer.alloc(4), payload]);
    body.writeUInt32BE(crc >>> 0, 0);
    return { kind: 'stray-data', pieces: split(rng, rawFrame(0x44, body.length, body)), packable: false };
  }
  if (r < 80) {
    // Random type byte (sometimes H or D), random declared length, some body bytes.
    const type = rng.chance(0.2) ? rng.pick([0x48, 0x44]) : rng.int(256);
    const declared = rng.chance(0.5) ? rng.int(0x1_0000_0000) : rng.int(20000);
    return { kind: 'random-prefix', pieces: split(rng, rawFrame(type, declared, rng.bytes(rng.int(Math.min(declared, 2048) + 1)))), packable: false };
  }
  if (r < 88) {
    // Huge or illegal declared lengths for legal types.
    const header = rng.chance(0.5);
    const declared = header
      ? rng.pick([maxHeader + 1, maxHeader + 1000, 0x7fffffff, 0xffffffff, 1 << 24])
      : rng.pick([0, 1, 2, 3, 4, 1048581, 1048580 + rng.range(1, 1000), 0xffffffff, 0x80000000]);
    return { kind: header ? 'huge-header' : 'bad-data-length', pieces: [rawFrame(header ? 0x48 : 0x44, declared, rng.bytes(rng.int(64)))], packable: false };
  }
  if (r < 94) {
    // Truncated frames: a prefix only, or a body that stops short.
    const body = headerBody(rng);
    const full = rawFrame(0x48, body.length, body);
    return { kind: 'truncated', pieces: [full.subarray(0, rng.int(full.length))], packable: false };
  }
  // Pure noise.
  return { kind: 'noise', pieces: split(rng, rng.bytes(rng.range(1, 3000))), packable: false };
}

/** A valid session: auth, upload (1–3 data frames), list, download, view, offset, delete, noop, quit. */
export function validTranscript(rng: Rng, user: string, password: string): Buffer {
  const name = `t-${rng.int(20)}.bin`;
  const data = rng.bytes(rng.range(1, 3000));
  const parts: Buffer[] = [
    encodeHeader({ op: 'auth', id: 1, mech: 'plain', user, password }),
    encodeHeader({ op: 'upload', id: 2, name, size: data.length, sha256: sha256(data) }),
  ];
  const frames = rng.range(1, 3);
  const step = Math.ceil(data.length / frames);
  for (let at = 0; at < data.length; at += step) parts.push(encodeData(data.subarray(at, at + step)));
  parts.push(
    encodeHeader({ op: 'list', id: 3, long: true }),
    encodeHeader({ op: 'download', id: 4, name, offset: 0 }),
    encodeHeader({ op: 'view', id: 5, name }),
    encodeHeader({ op: 'offset', id: 6, name, size: data.length, sha256: sha256(data) }),
    encodeHeader({ op: 'delete', id: 7, name: rng.chance(0.5) ? name : `${name}.x` }),
    encodeHeader({ op: 'noop', id: 8 }),
    encodeHeader({ op: 'quit', id: 9 }),
  );
  return Buffer.concat(parts);
}

/** 1–4 random byte-level mutations: flip, overwrite, insert, delete, duplicate, truncate. */
export function mutate(rng: Rng, input: Buffer): { bytes: Buffer; ops: string[] } {
  let b = Buffer.from(input);
  const ops: string[] = [];
  for (let n = rng.range(1, 4); n > 0 && b.length > 0; n--) {
    const at = rng.int(b.length);
    switch (rng.int(6)) {
      case 0: {
        const bit = rng.int(8);
        b[at] = b[at]! ^ (1 << bit);
        ops.push(`flip@${at}.${bit}`);
        break;
      }
      case 1: {
        const v = rng.int(256);
        b[at] = v;
        ops.push(`set@${at}=${v}`);
        break;
      }
      case 2: {
        const ins = rng.bytes(rng.range(1, 8));
        b = Buffer.concat([b.subarray(0, at), ins, b.subarray(at)]);
        ops.push(`insert@${at}+${ins.length}`);
        break;
      }
      case 3: {
        const len = rng.range(1, 8);
        b = Buffer.concat([b.subarray(0, at), b.subarray(at + len)]);
        ops.push(`delete@${at}-${len}`);
        break;
      }
      case 4: {
        const len = rng.range(1, 32);
        b = Buffer.concat([b.subarray(0, at + len), b.subarray(at, at + len), b.subarray(at + len)]);
        ops.push(`dup@${at}x${len}`);
        break;
      }
      default:
        b = b.subarray(0, at);
        ops.push(`truncate@${at}`);
    }
  }
  return { bytes: b, ops };
}

export function mutatedTranscriptCase(rng: Rng, user: string, password: string): FuzzCase & { ops: string[] } {
  const { bytes, ops } = mutate(rng, validTranscript(rng, user, password));
  return { kind: 'mutated-transcript', pieces: split(rng, bytes), packable: false, ops };
}

const STATUSES = new Set(['hello', 'ok', 'error', 'data', 'entry', 'bye', 'continue']);

/** What is wrong with one frame the server sent (null when it is fine). */
export function serverFrameProblem(frame: Frame): string | null {
  if (frame.kind === 'bad-header') return `server sent a header that is not a JSON object: ${frame.reason}`;
  if (frame.kind === 'data') return frame.crcOk ? null : 'server sent a data frame with a bad CRC32C';
  const h = frame.header;
  const status = h['status'];
  if (typeof status !== 'string' || !STATUSES.has(status)) return `unknown status in ${JSON.stringify(h).slice(0, 300)}`;
  if (status === 'error' || status === 'bye') {
    const code = h['code'];
    if (typeof code !== 'string' || !Object.hasOwn(ERROR_CODES, code)) return `unknown error code in ${JSON.stringify(h).slice(0, 300)}`;
    if (code === 'INTERNAL') return `INTERNAL error (a server bug): ${JSON.stringify(h).slice(0, 300)}`;
    if (typeof h['message'] !== 'string') return `error without a message: ${JSON.stringify(h).slice(0, 300)}`;
    if (status === 'error' && typeof h['fatal'] !== 'boolean') return `error without a boolean fatal: ${JSON.stringify(h).slice(0, 300)}`;
  }
  return null;
}
