import { expect } from 'chai';
import {
  ERROR_CODES,
  FrameDecoder,
  FtsError,
  MAX_REQUEST_ID,
  OPS,
  declaredUploadBytes,
  declaresTrailer,
  declaresUnsized,
  encodeHeader,
  errorFromReply,
  errorReply,
  parseRequest,
  parseTrailer,
  parseUnsizedTrailer,
  requestId,
  type ErrorCode,
  type Header,
  type Request,
} from '../../protocol/index.js';
import { expectFtsError } from '../helpers/vectors.js';

const SHA = '5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03';

/** Sends a header through the real encoder and decoder, as it would cross the wire. */
function overTheWire(h: Header): Header {
  const frames = new FrameDecoder().push(encodeHeader(h));
  const frame = frames[0];
  if (frames.length !== 1 || frame === undefined || frame.kind !== 'header') throw new Error('expected one header frame');
  return frame.header;
}

describe('protocol messages', function () {
  describe('parseRequest: valid requests', function () {
    const cases: Array<[string, Header, Request]> = [
      [
        'auth plain',
        { op: 'auth', id: 1, mech: 'plain', user: 'alice', password: 's3cret' },
        { op: 'auth', id: 1, mech: 'plain', user: 'alice', password: 's3cret' },
      ],
      [
        'auth with a Unicode password',
        { op: 'auth', id: 1, mech: 'plain', user: 'alice', password: 'pä😀\u0000ss' },
        { op: 'auth', id: 1, mech: 'plain', user: 'alice', password: 'pä😀\u0000ss' },
      ],
      [
        'upload without offset defaults offset to 0',
        { op: 'upload', id: 2, name: 'report.pdf', size: 5, sha256: SHA },
        { op: 'upload', id: 2, name: 'report.pdf', size: 5, tag: { sha256: SHA }, offset: 0, progress: false },
      ],
      [
        'upload with offset',
        { op: 'upload', id: 2, name: 'report.pdf', size: 5, sha256: SHA, offset: 3 },
        { op: 'upload', id: 2, name: 'report.pdf', size: 5, tag: { sha256: SHA }, offset: 3, progress: false },
      ],
      [
        'upload with offset equal to size',
        { op: 'upload', id: 2, name: 'r', size: 5, sha256: SHA, offset: 5 },
        { op: 'upload', id: 2, name: 'r', size: 5, tag: { sha256: SHA }, offset: 5, progress: false },
      ],
      [
        'upload of size 0',
        { op: 'upload', id: 2, name: 'empty', size: 0, sha256: SHA },
        { op: 'upload', id: 2, name: 'empty', size: 0, tag: { sha256: SHA }, offset: 0, progress: false },
      ],
      [
        'upload of size MAX_SAFE_INTEGER',
        { op: 'upload', id: 2, name: 'huge', size: Number.MAX_SAFE_INTEGER, sha256: SHA },
        { op: 'upload', id: 2, name: 'huge', size: Number.MAX_SAFE_INTEGER, tag: { sha256: SHA }, offset: 0, progress: false },
      ],
      [
        'download without offset defaults offset to 0',
        { op: 'download', id: 3, name: 'report.pdf' },
        { op: 'download', id: 3, name: 'report.pdf', offset: 0 },
      ],
      [
        'download with offset',
        { op: 'download', id: 3, name: 'report.pdf', offset: 4096 },
        { op: 'download', id: 3, name: 'report.pdf', offset: 4096 },
      ],
      ['view', { op: 'view', id: 4, name: 'report.pdf' }, { op: 'view', id: 4, name: 'report.pdf' }],
      ['delete', { op: 'delete', id: 5, name: 'résumé 😀' }, { op: 'delete', id: 5, name: 'résumé 😀' }],
      ['list without long defaults long to true', { op: 'list', id: 6 }, { op: 'list', id: 6, long: true }],
      ['list long true', { op: 'list', id: 6, long: true }, { op: 'list', id: 6, long: true }],
      ['list long false', { op: 'list', id: 6, long: false }, { op: 'list', id: 6, long: false }],
      ['noop', { op: 'noop', id: 7 }, { op: 'noop', id: 7 }],
      ['usage', { op: 'usage', id: 8 }, { op: 'usage', id: 8 }],
      ['partials', { op: 'partials', id: 11 }, { op: 'partials', id: 11 }],
      ['partials ignores a key (it takes none)', { op: 'partials', id: 11, key: 'nonsense' }, { op: 'partials', id: 11 }],
      ['discard', { op: 'discard', id: 12, key: SHA }, { op: 'discard', id: 12, key: SHA }],
      ['rename without overwrite defaults it to false', { op: 'rename', id: 10, name: 'a', to: 'résumé 😀' }, { op: 'rename', id: 10, name: 'a', to: 'résumé 😀', overwrite: false }],
      ['rename with overwrite', { op: 'rename', id: 10, name: 'a', to: 'b', overwrite: true }, { op: 'rename', id: 10, name: 'a', to: 'b', overwrite: true }],
      ['offset', { op: 'offset', id: 9, name: 'big.iso', size: 10, sha256: SHA }, { op: 'offset', id: 9, name: 'big.iso', size: 10, tag: { sha256: SHA } }],
      ['offset by version (streamed upload)', { op: 'offset', id: 9, name: 'big.iso', size: 10, version: SHA }, { op: 'offset', id: 9, name: 'big.iso', size: 10, tag: { version: SHA } }],
      [
        'streamed upload (trailer, version)',
        { op: 'upload', id: 2, name: 'r', size: 5, trailer: true, version: SHA },
        { op: 'upload', id: 2, name: 'r', size: 5, tag: { version: SHA }, offset: 0, progress: false },
      ],
      [
        'upload with an explicit "trailer": false is an ordinary upload',
        { op: 'upload', id: 2, name: 'r', size: 5, trailer: false, sha256: SHA },
        { op: 'upload', id: 2, name: 'r', size: 5, tag: { sha256: SHA }, offset: 0, progress: false },
      ],
      [
        'unsized upload (its size and digest follow in its trailer)',
        { op: 'upload', id: 2, name: 'r', trailer: true, unsized: true },
        { op: 'upload', id: 2, name: 'r', unsized: true, stoppable: false, progress: false },
      ],
      [
        'unsized upload whose client can stop when told to',
        { op: 'upload', id: 2, name: 'r', trailer: true, unsized: true, stoppable: true },
        { op: 'upload', id: 2, name: 'r', unsized: true, stoppable: true, progress: false },
      ],
      [
        'unsized: false is an ordinary upload',
        { op: 'upload', id: 2, name: 'r', size: 5, sha256: SHA, unsized: false },
        { op: 'upload', id: 2, name: 'r', size: 5, tag: { sha256: SHA }, offset: 0, progress: false },
      ],
      [
        'upload asking for progress replies',
        { op: 'upload', id: 2, name: 'r', size: 5, sha256: SHA, progress: true },
        { op: 'upload', id: 2, name: 'r', size: 5, tag: { sha256: SHA }, offset: 0, progress: true },
      ],
      [
        'unsized upload asking for progress replies',
        { op: 'upload', id: 2, name: 'r', trailer: true, unsized: true, progress: true },
        { op: 'upload', id: 2, name: 'r', unsized: true, stoppable: false, progress: true },
      ],
      [
        'streamed upload resumed at an offset',
        { op: 'upload', id: 2, name: 'r', size: 5, trailer: true, version: SHA, offset: 2 },
        { op: 'upload', id: 2, name: 'r', size: 5, tag: { version: SHA }, offset: 2, progress: false },
      ],
      ['auth with a token', { op: 'auth', id: 1, mech: 'token', token: 'v1.a.b' }, { op: 'auth', id: 1, mech: 'token', token: 'v1.a.b' }],
      [
        'download with a version condition',
        { op: 'download', id: 3, name: 'a', offset: 5, ifSize: 10, ifMtime: 1700000000000 },
        { op: 'download', id: 3, name: 'a', offset: 5, ifSize: 10, ifMtime: 1700000000000 },
      ],
      ['hash', { op: 'hash', id: 12, name: 'big.iso' }, { op: 'hash', id: 12, name: 'big.iso', read: false }],
      ['hash with read', { op: 'hash', id: 12, name: 'big.iso', read: true }, { op: 'hash', id: 12, name: 'big.iso', read: true }],
      ['quit', { op: 'quit', id: 8 }, { op: 'quit', id: 8 }],
      ['id 0', { op: 'noop', id: 0 }, { op: 'noop', id: 0 }],
      ['id 2^32 - 1', { op: 'noop', id: 4294967295 }, { op: 'noop', id: 4294967295 }],
    ];
    for (const [label, input, expected] of cases) {
      it(label, function () {
        expect(parseRequest(input)).to.deep.equal(expected);
      });
    }

    it('covers every op in OPS', function () {
      const covered = new Set(cases.map(([, , r]) => r.op));
      expect([...covered].sort()).to.deep.equal([...OPS].sort());
    });

    it('ignores extra unknown fields (they do not appear in the result)', function () {
      const input = { op: 'download', id: 9, name: 'a', offset: 1, future: { x: 1 }, flag: true, note: 'hi' };
      expect(parseRequest(input)).to.deep.equal({ op: 'download', id: 9, name: 'a', offset: 1 });
      expect(parseRequest({ op: 'noop', id: 1, mech: 'nonsense', name: '/', size: -1 })).to.deep.equal({ op: 'noop', id: 1 });
    });

    it('parses the client requests of the PROTOCOL.md §9 transcript after they cross the codec', function () {
      expect(parseRequest(overTheWire({ op: 'upload', id: 2, name: 'hello.txt', size: 6, sha256: SHA }))).to.deep.equal({
        op: 'upload',
        id: 2,
        name: 'hello.txt',
        size: 6,
        tag: { sha256: SHA },
        offset: 0,
        progress: false,
      });
      expect(parseRequest(overTheWire({ op: 'download', id: 4, name: 'hello.txt', offset: 0 }))).to.deep.equal({
        op: 'download',
        id: 4,
        name: 'hello.txt',
        offset: 0,
      });
    });
  });

  describe('parseRequest: rejections', function () {
    const rejections: Array<[string, Header, ErrorCode]> = [
      ['missing id', { op: 'noop' }, 'BAD_REQUEST'],
      ['null id', { op: 'noop', id: null }, 'BAD_REQUEST'],
      ['negative id', { op: 'noop', id: -1 }, 'BAD_REQUEST'],
      ['non-integer id', { op: 'noop', id: 1.5 }, 'BAD_REQUEST'],
      ['id 2^32', { op: 'noop', id: 4294967296 }, 'BAD_REQUEST'],
      ['string id', { op: 'noop', id: '1' }, 'BAD_REQUEST'],
      ['boolean id', { op: 'noop', id: true }, 'BAD_REQUEST'],
      ['infinite id (JSON 1e400)', { op: 'noop', id: Infinity }, 'BAD_REQUEST'],
      ['missing op', { id: 1 }, 'BAD_REQUEST'],
      ['non-string op', { id: 1, op: 5 }, 'BAD_REQUEST'],
      ['op inside __proto__ only', JSON.parse('{"__proto__":{"op":"noop","id":1}}') as Header, 'BAD_REQUEST'],
      ['unknown op', { id: 1, op: 'chmod' }, 'UNKNOWN_OP'],
      ['op with different case', { id: 1, op: 'NOOP' }, 'UNKNOWN_OP'],
      ['empty op', { id: 1, op: '' }, 'UNKNOWN_OP'],
      ['op named like an Object.prototype member', { id: 1, op: 'toString' }, 'UNKNOWN_OP'],
      ['op __proto__', { id: 1, op: '__proto__' }, 'UNKNOWN_OP'],
      ['hash without a name', { op: 'hash', id: 1 }, 'BAD_REQUEST'],
      ['hash with a non-boolean read', { op: 'hash', id: 1, name: 'a', read: 1 }, 'BAD_REQUEST'],
      ['hash of a name with "/"', { op: 'hash', id: 1, name: 'a/b' }, 'BAD_NAME'],
      // auth
      ['auth with unsupported mech', { op: 'auth', id: 1, mech: 'kerberos-v5', user: 'a', password: 'p' }, 'UNSUPPORTED_MECHANISM'],
      ['auth with mech in upper case', { op: 'auth', id: 1, mech: 'PLAIN', user: 'a', password: 'p' }, 'UNSUPPORTED_MECHANISM'],
      ['auth without mech', { op: 'auth', id: 1, user: 'a', password: 'p' }, 'BAD_REQUEST'],
      ['auth without user', { op: 'auth', id: 1, mech: 'plain', password: 'p' }, 'BAD_REQUEST'],
      ['auth with non-string password', { op: 'auth', id: 1, mech: 'plain', user: 'a', password: 1234 }, 'BAD_REQUEST'],
      // streamed uploads (§6.1): a version tag instead of sha256, which comes in the trailer
      ['streamed upload with sha256 in its header', { op: 'upload', id: 2, name: 'a', size: 1, trailer: true, version: SHA, sha256: SHA }, 'BAD_REQUEST'],
      ['plain upload with a version', { op: 'upload', id: 2, name: 'a', size: 1, sha256: SHA, version: SHA }, 'BAD_REQUEST'],
      ['plain upload (trailer false) with a version', { op: 'upload', id: 2, name: 'a', size: 1, trailer: false, sha256: SHA, version: SHA }, 'BAD_REQUEST'],
      ['streamed upload without version', { op: 'upload', id: 2, name: 'a', size: 1, trailer: true }, 'BAD_REQUEST'],
      ['streamed upload with a short version', { op: 'upload', id: 2, name: 'a', size: 1, trailer: true, version: 'abc' }, 'BAD_REQUEST'],
      ['ordinary upload with a version tag but no sha256', { op: 'upload', id: 2, name: 'a', size: 1, version: SHA }, 'BAD_REQUEST'],
      ['upload with non-boolean trailer', { op: 'upload', id: 2, name: 'a', size: 1, trailer: 'yes', version: SHA }, 'BAD_REQUEST'],
      ['offset with both sha256 and version', { op: 'offset', id: 9, name: 'a', size: 1, sha256: SHA, version: SHA }, 'BAD_REQUEST'],
      ['offset with neither sha256 nor version', { op: 'offset', id: 9, name: 'a', size: 1 }, 'BAD_REQUEST'],
      // names
      ['upload with bad name', { op: 'upload', id: 2, name: '../x', size: 1, sha256: SHA }, 'BAD_NAME'],
      ['unsized upload without trailer', { op: 'upload', id: 2, name: 'a', unsized: true }, 'BAD_REQUEST'],
      ['unsized upload with a size', { op: 'upload', id: 2, name: 'a', trailer: true, unsized: true, size: 3 }, 'BAD_REQUEST'],
      ['unsized upload with an offset', { op: 'upload', id: 2, name: 'a', trailer: true, unsized: true, offset: 0 }, 'BAD_REQUEST'],
      ['unsized upload with a version', { op: 'upload', id: 2, name: 'a', trailer: true, unsized: true, version: SHA }, 'BAD_REQUEST'],
      ['unsized upload with a sha256', { op: 'upload', id: 2, name: 'a', trailer: true, unsized: true, sha256: SHA }, 'BAD_REQUEST'],
      ['unsized upload with a non-boolean stoppable', { op: 'upload', id: 2, name: 'a', trailer: true, unsized: true, stoppable: 1 }, 'BAD_REQUEST'],
      ['sized upload with stoppable', { op: 'upload', id: 2, name: 'a', size: 3, sha256: SHA, stoppable: true }, 'BAD_REQUEST'],
      ['streamed upload with stoppable', { op: 'upload', id: 2, name: 'a', size: 3, trailer: true, version: SHA, stoppable: false }, 'BAD_REQUEST'],
      ['upload with a non-boolean progress', { op: 'upload', id: 2, name: 'a', size: 3, sha256: SHA, progress: 'yes' }, 'BAD_REQUEST'],
      ['unsized not a boolean', { op: 'upload', id: 2, name: 'a', trailer: true, unsized: 1 }, 'BAD_REQUEST'],
      ['unsized upload with a bad name', { op: 'upload', id: 2, name: 'a/b', trailer: true, unsized: true }, 'BAD_NAME'],
      ['upload without name', { op: 'upload', id: 2, size: 1, sha256: SHA }, 'BAD_REQUEST'],
      ['download with name ..', { op: 'download', id: 3, name: '..' }, 'BAD_NAME'],
      ['download with numeric name', { op: 'download', id: 3, name: 7 }, 'BAD_REQUEST'],
      ['view with a slash', { op: 'view', id: 4, name: 'a/b' }, 'BAD_NAME'],
      ['view with a lone surrogate', { op: 'view', id: 4, name: '\ud800' }, 'BAD_NAME'],
      ['delete with empty name', { op: 'delete', id: 5, name: '' }, 'BAD_NAME'],
      ['delete with 256-byte name', { op: 'delete', id: 5, name: 'n'.repeat(256) }, 'BAD_NAME'],
      ['rename with bad name', { op: 'rename', id: 10, name: '..', to: 'b' }, 'BAD_NAME'],
      ['rename with bad to', { op: 'rename', id: 10, name: 'a', to: '../b' }, 'BAD_NAME'],
      ['rename without to', { op: 'rename', id: 10, name: 'a' }, 'BAD_REQUEST'],
      ['rename with numeric to', { op: 'rename', id: 10, name: 'a', to: 1 }, 'BAD_REQUEST'],
      ['rename with non-boolean overwrite', { op: 'rename', id: 10, name: 'a', to: 'b', overwrite: 'yes' }, 'BAD_REQUEST'],
      // §6: a malformed or missing field is named before an illegal name (which earns a penalty point)
      ['rename with an illegal name and no to', { op: 'rename', id: 10, name: 'a/b' }, 'BAD_REQUEST'],
      ['rename with an illegal name and a numeric to', { op: 'rename', id: 10, name: 'a/b', to: 5 }, 'BAD_REQUEST'],
      ['rename with an illegal name and a non-boolean overwrite', { op: 'rename', id: 10, name: 'a/b', to: 'b', overwrite: 'yes' }, 'BAD_REQUEST'],
      ['download with an illegal name and a string offset', { op: 'download', id: 3, name: 'a/b', offset: 'x' }, 'BAD_REQUEST'],
      ['download with an illegal name and a string ifSize', { op: 'download', id: 3, name: 'a/b', ifSize: 'x' }, 'BAD_REQUEST'],
      ['download with an illegal name and a negative ifMtime', { op: 'download', id: 3, name: 'a/b', ifMtime: -1 }, 'BAD_REQUEST'],
      ['offset with an illegal name and no size', { op: 'offset', id: 9, name: 'a/b', sha256: SHA }, 'BAD_REQUEST'],
      ['offset with an illegal name and a string size', { op: 'offset', id: 9, name: 'a/b', size: '3', sha256: SHA }, 'BAD_REQUEST'],
      ['offset with an illegal name and a bad sha256', { op: 'offset', id: 9, name: 'a/b', size: 3, sha256: 'x' }, 'BAD_REQUEST'],
      ['hash with an illegal name and a non-boolean read', { op: 'hash', id: 1, name: 'a/b', read: 'x' }, 'BAD_REQUEST'],
      ['upload with an illegal name and a missing sha256', { op: 'upload', id: 2, name: 'a/b', size: 1 }, 'BAD_REQUEST'],
      // sha256
      ['sha256 63 digits', { op: 'upload', id: 2, name: 'a', size: 1, sha256: SHA.slice(1) }, 'BAD_REQUEST'],
      ['sha256 65 digits', { op: 'upload', id: 2, name: 'a', size: 1, sha256: SHA + '0' }, 'BAD_REQUEST'],
      ['sha256 upper case', { op: 'upload', id: 2, name: 'a', size: 1, sha256: SHA.toUpperCase() }, 'BAD_REQUEST'],
      ['sha256 non-hex', { op: 'upload', id: 2, name: 'a', size: 1, sha256: 'g'.repeat(64) }, 'BAD_REQUEST'],
      ['sha256 with trailing newline', { op: 'upload', id: 2, name: 'a', size: 1, sha256: SHA + '\n' }, 'BAD_REQUEST'],
      ['sha256 missing', { op: 'upload', id: 2, name: 'a', size: 1 }, 'BAD_REQUEST'],
      // size
      ['size missing', { op: 'upload', id: 2, name: 'a', sha256: SHA }, 'BAD_REQUEST'],
      ['size negative', { op: 'upload', id: 2, name: 'a', size: -1, sha256: SHA }, 'BAD_REQUEST'],
      ['size fractional', { op: 'upload', id: 2, name: 'a', size: 1.5, sha256: SHA }, 'BAD_REQUEST'],
      ['size as string', { op: 'upload', id: 2, name: 'a', size: '5', sha256: SHA }, 'BAD_REQUEST'],
      ['size 2^53 (> MAX_SAFE_INTEGER)', { op: 'upload', id: 2, name: 'a', size: 2 ** 53, sha256: SHA }, 'BAD_REQUEST'],
      ['size infinite', { op: 'upload', id: 2, name: 'a', size: Infinity, sha256: SHA }, 'BAD_REQUEST'],
      // offset
      ['upload offset > size', { op: 'upload', id: 2, name: 'a', size: 5, sha256: SHA, offset: 6 }, 'BAD_REQUEST'],
      ['upload offset negative', { op: 'upload', id: 2, name: 'a', size: 5, sha256: SHA, offset: -1 }, 'BAD_REQUEST'],
      ['upload offset fractional', { op: 'upload', id: 2, name: 'a', size: 5, sha256: SHA, offset: 0.5 }, 'BAD_REQUEST'],
      ['download offset negative', { op: 'download', id: 3, name: 'a', offset: -1 }, 'BAD_REQUEST'],
      ['download offset string', { op: 'download', id: 3, name: 'a', offset: '0' }, 'BAD_REQUEST'],
      ['download offset 2^53', { op: 'download', id: 3, name: 'a', offset: 2 ** 53 }, 'BAD_REQUEST'],
      // list
      ['list long as string', { op: 'list', id: 6, long: 'yes' }, 'BAD_REQUEST'],
      ['list long as number', { op: 'list', id: 6, long: 1 }, 'BAD_REQUEST'],
      // discard (§6.10): the key is 64 lowercase hex digits
      ['discard without key', { op: 'discard', id: 12 }, 'BAD_REQUEST'],
      ['discard with a null key', { op: 'discard', id: 12, key: null }, 'BAD_REQUEST'],
      ['discard with a numeric key', { op: 'discard', id: 12, key: 1234 }, 'BAD_REQUEST'],
      ['discard with an empty key', { op: 'discard', id: 12, key: '' }, 'BAD_REQUEST'],
      ['discard with a 63-digit key', { op: 'discard', id: 12, key: SHA.slice(1) }, 'BAD_REQUEST'],
      ['discard with a 65-digit key', { op: 'discard', id: 12, key: SHA + '0' }, 'BAD_REQUEST'],
      ['discard with an upper-case key', { op: 'discard', id: 12, key: SHA.toUpperCase() }, 'BAD_REQUEST'],
      ['discard with a non-hex key', { op: 'discard', id: 12, key: 'g'.repeat(64) }, 'BAD_REQUEST'],
      ['discard with a key and a trailing newline', { op: 'discard', id: 12, key: SHA + '\n' }, 'BAD_REQUEST'],
      ['discard with a name instead of a key', { op: 'discard', id: 12, name: 'big.bin' }, 'BAD_REQUEST'],
      ['discard with a bad id (checked before the key)', { op: 'discard', id: -1, key: SHA }, 'BAD_REQUEST'],
    ];
    for (const [label, input, code] of rejections) {
      it(`${label} → ${code}`, function () {
        const err = expectFtsError(() => parseRequest(input), code);
        expect(err.fatal).to.equal(ERROR_CODES[code].fatal);
      });
    }

    it('a discard with a bad key is BAD_REQUEST naming "key", not fatal (the session goes on), and keeps the id for the reply', function () {
      const err = expectFtsError(() => parseRequest(overTheWire({ op: 'discard', id: 12, key: SHA.toUpperCase() })), 'BAD_REQUEST');
      expect(err.message).to.include('"key"');
      expect(err.fatal).to.equal(false);
      expect(requestId({ op: 'discard', id: 12, key: 'x' })).to.equal(12);
      // A key that is right crosses the codec unchanged.
      expect(parseRequest(overTheWire({ op: 'discard', id: 13, key: SHA }))).to.deep.equal({ op: 'discard', id: 13, key: SHA });
      expect(parseRequest(overTheWire({ op: 'partials', id: 14 }))).to.deep.equal({ op: 'partials', id: 14 });
    });

    it('a bad id is reported even when the op is unknown (id is checked first)', function () {
      expectFtsError(() => parseRequest({ op: 'chmod', id: -1 }), 'BAD_REQUEST');
    });

    it('truncates a very long unknown op or mech in the message', function () {
      const op = 'x'.repeat(10_000);
      expect(expectFtsError(() => parseRequest({ id: 1, op }), 'UNKNOWN_OP').message.length).to.be.below(200);
      const mech = 'm'.repeat(10_000);
      const err = expectFtsError(() => parseRequest({ op: 'auth', id: 1, mech, user: 'a', password: 'p' }), 'UNSUPPORTED_MECHANISM');
      expect(err.message.length).to.be.below(200);
    });
  });

  describe('declaresTrailer', function () {
    it('is true only for "trailer": true, whatever else the header holds (a refused upload still has one)', function () {
      expect(declaresTrailer({ op: 'upload', trailer: true })).to.equal(true);
      expect(declaresTrailer({ op: 'upload', name: '../x', trailer: true, sha256: 'bad' })).to.equal(true);
      for (const trailer of [false, undefined, 'true', 1]) expect(declaresTrailer({ op: 'upload', trailer }), String(trailer)).to.equal(false);
    });
  });

  describe('parseUnsizedTrailer', function () {
    it('returns the size and digest of an unsized upload\'s trailer', function () {
      expect(parseUnsizedTrailer({ op: 'upload', id: 7, size: 12, sha256: SHA }, 7)).to.deep.equal({ size: 12, sha256: SHA });
    });
    it('another id where the trailer belongs is fatal; a missing or bad size or digest is BAD_REQUEST', function () {
      expectFtsError(() => parseUnsizedTrailer({ op: 'upload', id: 8, size: 1, sha256: SHA }, 7), 'PROTOCOL_ERROR');
      for (const h of [{ op: 'upload', id: 7, sha256: SHA }, { op: 'upload', id: 7, size: -1, sha256: SHA }, { op: 'upload', id: 7, size: 1.5, sha256: SHA }, { op: 'upload', id: 7, size: 1 }]) {
        expectFtsError(() => parseUnsizedTrailer(h, 7), 'BAD_REQUEST');
      }
    });
  });

  describe('parseTrailer', function () {
    it('returns the digest of a trailer with the upload\'s op and id', function () {
      expect(parseTrailer({ op: 'upload', id: 7, sha256: SHA }, 7)).to.equal(SHA);
    });
    it('another id or op where the trailer belongs is fatal PROTOCOL_ERROR (the stream is out of step)', function () {
      for (const h of [{ op: 'upload', id: 8, sha256: SHA }, { op: 'noop', id: 7 }, { id: 7, sha256: SHA }, { op: 'upload', sha256: SHA }, { op: 'upload', id: '7', sha256: SHA }]) {
        let err: unknown;
        try {
          parseTrailer(h, 7);
        } catch (e) {
          err = e;
        }
        expect(err, JSON.stringify(h)).to.be.instanceOf(FtsError);
        expect((err as FtsError).code).to.equal('PROTOCOL_ERROR');
        expect((err as FtsError).fatal).to.equal(true);
      }
    });
    it('a malformed digest in a proper trailer is BAD_REQUEST (not fatal)', function () {
      let err: unknown;
      try {
        parseTrailer({ op: 'upload', id: 7, sha256: 'ABC' }, 7);
      } catch (e) {
        err = e;
      }
      expect((err as FtsError).code).to.equal('BAD_REQUEST');
      expect((err as FtsError).fatal).to.equal(false);
    });
  });

  describe('requestId', function () {
    it('returns usable ids and null for anything else', function () {
      expect(requestId({ id: 0 })).to.equal(0);
      expect(requestId({ id: MAX_REQUEST_ID })).to.equal(MAX_REQUEST_ID);
      expect(requestId({ id: 17, op: 'bogus' })).to.equal(17);
      for (const id of [undefined, null, -1, 1.5, MAX_REQUEST_ID + 1, '3', true, Infinity, NaN]) {
        expect(requestId({ id }), String(id)).to.equal(null);
      }
    });
  });

  describe('declaredUploadBytes', function () {
    const cases: Array<[string, Header, number | null]> = [
      ['size without offset', { size: 10 }, 10],
      ['size with offset', { size: 10, offset: 4 }, 6],
      ['offset equal to size', { size: 10, offset: 10 }, 0],
      ['size 0', { size: 0 }, 0],
      ['size MAX_SAFE_INTEGER', { size: Number.MAX_SAFE_INTEGER }, Number.MAX_SAFE_INTEGER],
      ['ignores the other upload fields', { op: 'upload', id: 1, name: '../bad', sha256: 'x', size: 7 }, 7],
      ['missing size', { offset: 0 }, null],
      ['negative size', { size: -1 }, null],
      ['fractional size', { size: 2.5 }, null],
      ['string size', { size: '10' }, null],
      ['size 2^53', { size: 2 ** 53 }, null],
      ['offset > size', { size: 10, offset: 11 }, null],
      ['negative offset', { size: 10, offset: -1 }, null],
      ['string offset', { size: 10, offset: '1' }, null],
      ['trailer true', { size: 10, trailer: true }, 10],
      ['trailer false', { size: 10, trailer: false }, 10],
      ['trailer not a boolean (whether a trailer follows is unknown)', { size: 10, trailer: 'yes' }, null],
      ['trailer 1', { size: 10, trailer: 1 }, null],
      ['trailer null', { size: 10, trailer: null }, null],
    ];
    for (const [label, h, expected] of cases) {
      it(`${label} → ${String(expected)}`, function () {
        expect(declaredUploadBytes(h)).to.equal(expected);
      });
    }

    it('agrees with parseRequest on valid uploads (size - offset)', function () {
      const h = { op: 'upload', id: 1, name: 'f', size: 100, sha256: SHA, offset: 40 };
      const r = parseRequest(h);
      if (r.op !== 'upload' || 'unsized' in r) throw new Error('expected a sized upload');
      expect(declaredUploadBytes(h)).to.equal(r.size - r.offset);
    });

    it('an unsized upload declares no byte count (its data runs to its trailer)', function () {
      const h = { op: 'upload', id: 1, name: 'f', trailer: true, unsized: true };
      expect(declaredUploadBytes(h)).to.equal(null);
      expect(declaresUnsized(h)).to.equal(true);
      expect(declaresTrailer(h)).to.equal(true);
      expect(declaresUnsized({ op: 'upload', id: 1, name: 'f', size: 3, sha256: SHA })).to.equal(false);
    });
  });

  describe('errorReply and errorFromReply', function () {
    it('errorReply builds the wire reply of PROTOCOL.md §7', function () {
      expect(errorReply(2, new FtsError('NOT_FOUND', 'no such file'))).to.deep.equal({
        id: 2,
        status: 'error',
        code: 'NOT_FOUND',
        message: 'no such file',
        fatal: false,
      });
    });

    it('errorReply uses the table message by default, id null, and fatal from the table', function () {
      expect(errorReply(null, new FtsError('PROTOCOL_ERROR'))).to.deep.equal({
        id: null,
        status: 'error',
        code: 'PROTOCOL_ERROR',
        message: ERROR_CODES.PROTOCOL_ERROR.message,
        fatal: true,
      });
    });

    it('errorReply carries extra details as top-level fields', function () {
      const reply = errorReply(3, new FtsError('OFFSET_MISMATCH', 'bad offset', { offset: 1024, staged: true, hint: 'restart' }));
      expect(reply).to.deep.include({ code: 'OFFSET_MISMATCH', offset: 1024, staged: true, hint: 'restart' });
    });

    for (const code of Object.keys(ERROR_CODES) as ErrorCode[]) {
      it(`round trip over the codec keeps code, message and fatal: ${code}`, function () {
        const original = new FtsError(code, `message for ${code} — ü 😀`);
        const back = errorFromReply(overTheWire(errorReply(41, original)));
        expect(back).to.be.instanceOf(FtsError);
        expect(back.code).to.equal(code);
        expect(back.message).to.equal(original.message);
        expect(back.fatal).to.equal(ERROR_CODES[code].fatal);
        expect(back.details).to.deep.equal({});
      });
    }

    it('round trip keeps extra details (string, number, boolean)', function () {
      const original = new FtsError('OFFSET_MISMATCH', 'resume at 4096', { offset: 4096, size: 0, partial: false, note: 'x' });
      const back = errorFromReply(overTheWire(errorReply(5, original)));
      expect(back.code).to.equal('OFFSET_MISMATCH');
      expect(back.message).to.equal('resume at 4096');
      expect(back.details).to.deep.equal({ offset: 4096, size: 0, partial: false, note: 'x' });
    });

    it('errorFromReply drops wire fields that are not string, number or boolean', function () {
      const back = errorFromReply({ id: 1, status: 'error', code: 'IO_ERROR', message: 'm', fatal: false, obj: { a: 1 }, arr: [1], nil: null, n: 3 });
      expect(back.details).to.deep.equal({ n: 3 });
    });

    it('an unknown code from the wire becomes INTERNAL and keeps the message', function () {
      const back = errorFromReply({ id: 1, status: 'error', code: 'SOMETHING_NEW', message: 'from the future', fatal: false });
      expect(back.code).to.equal('INTERNAL');
      expect(back.message).to.equal('from the future');
    });

    it('a missing or non-string code becomes INTERNAL', function () {
      expect(errorFromReply({ id: 1, status: 'error', message: 'm', fatal: false }).code).to.equal('INTERNAL');
      expect(errorFromReply({ id: 1, status: 'error', code: 42, message: 'm', fatal: false }).code).to.equal('INTERNAL');
    });

    it('a code inherited from Object.prototype is not mistaken for a known code', function () {
      expect(errorFromReply({ id: 1, status: 'error', code: 'toString', message: 'm', fatal: false }).code).to.equal('INTERNAL');
      expect(errorFromReply({ id: 1, status: 'error', code: '__proto__', message: 'm', fatal: false }).code).to.equal('INTERNAL');
    });

    it('a missing message falls back to a non-empty string naming the code', function () {
      const back = errorFromReply({ id: 1, status: 'error', code: 'NOT_FOUND', fatal: false });
      expect(back.code).to.equal('NOT_FOUND');
      expect(back.message).to.be.a('string').that.includes('NOT_FOUND');
    });

    it('ignores extra unknown fields when they are not scalars, and never lets them change the code', function () {
      const back = errorFromReply({ id: 1, status: 'error', code: 'LOCKED', message: 'busy', fatal: false, future: { nested: true } });
      expect(back.code).to.equal('LOCKED');
      expect(back.fatal).to.equal(false);
      expect(back.details).to.deep.equal({});
    });

    // Bug report (protocol/messages.ts errorFromReply, lines 140-149, with protocol/errors.ts FtsError.fatal,
    // line 19): PROTOCOL.md §7 says "Clients MUST treat an unknown code like INTERNAL and honour `fatal`".
    // errorFromReply skips the wire's `fatal` field and FtsError.fatal is read from the code table, so an
    // unknown code sent with "fatal": true comes back as an FtsError with fatal === false (INTERNAL's value).
    it('regression (fixed): messages.ts errorFromReply: an unknown code with "fatal": true stays fatal (PROTOCOL.md §7 "honour fatal")', function () {
      const back = errorFromReply({ id: 1, status: 'error', code: 'SOMETHING_NEW', message: 'server closes now', fatal: true });
      expect(back.code).to.equal('INTERNAL');
      expect(back.fatal).to.equal(true);
    });

    // Same root cause for a known code: PROTOCOL.md §7 makes BAD_REQUEST fatal for an upload whose size or
    // offset cannot be read (§6.1), but errorFromReply reports the table value (false) instead of the wire's.
    it('regression (fixed): messages.ts errorFromReply: BAD_REQUEST sent with "fatal": true (unreadable upload size) stays fatal', function () {
      const back = errorFromReply({ id: 2, status: 'error', code: 'BAD_REQUEST', message: 'size unreadable', fatal: true });
      expect(back.code).to.equal('BAD_REQUEST');
      expect(back.fatal).to.equal(true);
    });
  });
});
