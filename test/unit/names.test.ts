import { expect } from 'chai';
import { MAX_NAME_BYTES, isValidName, isValidUsername, nameProblem } from '../../protocol/index.js';

function expectLegal(name: string): void {
  expect(nameProblem(name), `nameProblem(${JSON.stringify(name)})`).to.equal(null);
  expect(isValidName(name), `isValidName(${JSON.stringify(name)})`).to.equal(true);
}

function expectIllegal(name: unknown): void {
  const label = typeof name === 'string' ? JSON.stringify(name) : String(name);
  const problem = nameProblem(name);
  expect(problem, `nameProblem(${label})`).to.be.a('string').and.not.equal('');
  expect(isValidName(name), `isValidName(${label})`).to.equal(false);
}

describe('protocol names', function () {
  describe('legal names', function () {
    const legal: Array<[string, string]> = [
      ['a single letter', 'a'],
      ['a name with an extension', 'report.pdf'],
      ['a name with spaces', 'with space'],
      ['leading and trailing spaces', ' padded '],
      ['percent-encoded dots (no special meaning)', '%2e%2e'],
      ['three dots', '...'],
      ['dot dot letter', '..a'],
      ['a leading dot (hidden file)', '.profile'],
      ['dot space', '. '],
      ['emoji', '😀'],
      ['emoji ZWJ sequence with skin tone', '👩🏽‍💻 notes.txt'],
      ['CJK', '文件.txt'],
      ['NBSP U+00A0 (just above the C1 range)', 'a\u00a0b'],
      ['tilde U+007E (just below DEL)', '~backup'],
      ['U+2028 line separator (not a C0/C1 control)', 'a\u2028b'],
      ['U+FFFD replacement character', '\ufffd'],
      ['colon, asterisk, question mark, quotes, angle brackets', 'a:b*c?"d"<e>|'],
      ['255 ASCII bytes', 'a'.repeat(255)],
      ['255 bytes of 2-byte characters plus one ASCII byte', 'é'.repeat(127) + 'a'],
      ['255 bytes ending in a 4-byte emoji', 'a'.repeat(251) + '😀'],
      ['255 bytes of 3-byte characters', '文'.repeat(85)],
    ];
    for (const [label, name] of legal) {
      it(label, function () {
        expectLegal(name);
      });
    }

    it('accepts both NFC and NFD spellings of é, which are different strings and different names', function () {
      const nfc = '\u00e9';
      const nfd = 'e\u0301';
      expect(nfc.normalize('NFC')).to.equal(nfc);
      expect(nfd.normalize('NFD')).to.equal(nfd);
      expectLegal(nfc);
      expectLegal(nfd);
      expect(nfc).to.not.equal(nfd);
      expect(Buffer.from(nfc).equals(Buffer.from(nfd))).to.equal(false);
    });

    it('the 255-byte test names really are 255 bytes of UTF-8', function () {
      expect(MAX_NAME_BYTES).to.equal(255);
      for (const name of ['a'.repeat(255), 'é'.repeat(127) + 'a', 'a'.repeat(251) + '😀', '文'.repeat(85)]) {
        expect(Buffer.byteLength(name, 'utf8')).to.equal(255);
      }
    });
  });

  describe('illegal names', function () {
    const illegal: Array<[string, string]> = [
      ['empty', ''],
      ['.', '.'],
      ['..', '..'],
      ['a slash inside', 'a/b'],
      ['a lone slash', '/'],
      ['a leading slash', '/etc'],
      ['a trailing slash', 'dir/'],
      ['../ traversal', '../x'],
      ['a backslash', 'a\\b'],
      ['..\\ traversal', '..\\x'],
      ['NUL', 'a\u0000b'],
      ['a trailing NUL', 'a.txt\u0000'],
      ['newline', 'a\nb'],
      ['carriage return', 'a\r'],
      ['tab', '\tname'],
      ['escape', '\u001b[31m'],
      ['DEL U+007F', 'a\u007f'],
      ['NEL U+0085', 'a\u0085b'],
      ['U+0080 (first C1)', '\u0080'],
      ['U+009F (last C1)', '\u009f'],
      ['a lone high surrogate', '\ud800'],
      ['a lone low surrogate', 'a\udc00'],
      ['a truncated surrogate pair', 'x\ud83d'],
      ['a reversed surrogate pair', '\ude00\ud83d'],
      ['256 ASCII bytes', 'a'.repeat(256)],
      ['a 2-byte character pushing 254 bytes to 256', 'a'.repeat(254) + 'é'],
      ['a 4-byte emoji pushing 252 bytes to 256', 'a'.repeat(252) + '😀'],
      ['128 two-byte characters (128 UTF-16 units but 256 bytes)', 'é'.repeat(128)],
      ['86 three-byte characters (258 bytes)', '文'.repeat(86)],
    ];
    for (const [label, name] of illegal) {
      it(label, function () {
        expectIllegal(name);
      });
    }

    it('every C0 control and every character in U+007F..U+009F is refused; the neighbours are not', function () {
      for (let c = 0; c <= 0x1f; c++) expectIllegal(`x${String.fromCharCode(c)}y`);
      for (let c = 0x7f; c <= 0x9f; c++) expectIllegal(`x${String.fromCharCode(c)}y`);
      expectLegal('x\u0020y');
      expectLegal('x\u007ey');
      expectLegal('x\u00a0y');
    });

    const nonStrings: Array<[string, unknown]> = [
      ['undefined', undefined],
      ['null', null],
      ['a number', 42],
      ['a boolean', true],
      ['an array of one string', ['a']],
      ['an object', { name: 'a' }],
      ['a String object', new String('a')],
    ];
    for (const [label, value] of nonStrings) {
      it(`non-string: ${label}`, function () {
        expectIllegal(value);
      });
    }
  });

  describe('isValidUsername', function () {
    const good = ['alice', 'Bob', 'bob_2', '_svc', '0day', 'a', 'a.b-c', 'a..', 'x'.repeat(64), 'A1_.-'];
    for (const user of good) {
      it(`accepts ${JSON.stringify(user)}`, function () {
        expect(isValidUsername(user)).to.equal(true);
      });
    }

    const bad: Array<[string, unknown]> = [
      ['empty', ''],
      ['leading dot', '.alice'],
      ['dot dot', '..'],
      ['lone dot', '.'],
      ['leading dash', '-alice'],
      ['slash', 'a/b'],
      ['lone slash', '/'],
      ['backslash', 'a\\b'],
      ['65 characters', 'x'.repeat(65)],
      ['unicode letter', 'jösé'],
      ['NFD unicode', 'e\u0301'],
      ['emoji', 'al😀ce'],
      ['space', 'ali ce'],
      ['trailing newline', 'alice\n'],
      ['NUL', 'alice\u0000'],
      ['colon', 'a:b'],
      ['non-string number', 42],
      ['non-string null', null],
      ['non-string undefined', undefined],
    ];
    for (const [label, user] of bad) {
      it(`refuses ${label}`, function () {
        expect(isValidUsername(user)).to.equal(false);
      });
    }
  });
});
