import { expect } from 'chai';
import { escapeForTerminal, formatJson, formatLong, nameForTerminal } from '../../client/cli/text.js';
import { isValidName } from '../../protocol/index.js';

/** The Unicode Bidi_Control set and the two separators: legal in names, able to rearrange a terminal. */
const REORDERING = [0x061c, 0x200e, 0x200f, 0x202a, 0x202b, 0x202c, 0x202d, 0x202e, 0x2066, 0x2067, 0x2068, 0x2069, 0x2028, 0x2029];

describe('CLI text for terminals', function () {
  it('nameForTerminal escapes every bidirectional control, invisible format character and line/paragraph separator, and nothing else', function () {
    for (const cp of REORDERING) {
      const name = `a${String.fromCodePoint(cp)}b`;
      expect(isValidName(name), name).to.equal(true);
      expect(nameForTerminal(name)).to.equal(`a\\u{${cp.toString(16).padStart(4, '0')}}b`);
    }
    expect(nameForTerminal('report\u202Efdp.exe')).to.equal('report\\u{202e}fdp.exe');
    // Invisible otherwise: "report\u200B.pdf" would show as "report.pdf".
    const hidden: Array<[string, string]> = [['report\u200B.pdf', 'report\\u{200b}.pdf'], ['\uFEFFbom', '\\u{feff}bom'], ['soft\u00ADhyphen', 'soft\\u{00ad}hyphen'], ['word\u2060joiner', 'word\\u{2060}joiner'], ['a\u200Db', 'a\\u{200d}b'], ['tag\u{E0041}', 'tag\\u{e0041}']];
    for (const [name, shown] of hidden) expect(nameForTerminal(name), JSON.stringify(name)).to.equal(shown);
    // A zero-width joiner between emoji shows (as one joined emoji) and is kept.
    for (const kept of ['plain.txt', 'ünïcödé', '文件.txt', '👩🏽‍💻 notes.txt', 'family-\u{1F468}\u200D\u{1F469}.jpg', '\u2764\uFE0F\u200D\u{1F525}', 'שלום.txt', 'ملف.pdf']) {
      expect(nameForTerminal(kept), kept).to.equal(kept);
    }
  });

  it('formatLong shows names through the given function, exactly by default', function () {
    const entries = [{ name: 'x\u202Ey', size: 12, mtime: 0 }];
    expect(formatLong(entries)).to.deep.equal(['12\t1970-01-01T00:00:00.000Z\tx\u202Ey']);
    expect(formatLong(entries, nameForTerminal)).to.deep.equal(['12\t1970-01-01T00:00:00.000Z\tx\\u{202e}y']);
  });

  it('formatJson writes reordering characters as JSON escapes: the parsed names are exact', function () {
    const names = REORDERING.map((cp) => `n${String.fromCodePoint(cp)}`);
    const text = formatJson(names.map((name) => ({ name, size: 1, mtime: 0 }))).join('\n');
    for (const cp of REORDERING) expect(text.includes(String.fromCodePoint(cp)), cp.toString(16)).to.equal(false);
    expect((JSON.parse(text) as Array<{ name: string }>).map((e) => e.name)).to.deep.equal(names);
  });

  it('escapeForTerminal keeps text, newlines and tabs and escapes control bytes and invalid UTF-8', function () {
    expect(escapeForTerminal(Buffer.from('héllo\tworld\n'))).to.equal('héllo\tworld\n');
    expect(escapeForTerminal(Buffer.from([0x1b, 0x5b, 0x33, 0x31, 0x6d, 0x7f]))).to.equal('\\x1b[31m\\x7f');
    expect(escapeForTerminal(Buffer.from([0xc2, 0x9b, 0xff, 0x41]))).to.equal('\\xc2\\x9b\\xffA');
  });

  it('escapeForTerminal shows the bidirectional controls as \\u{…} (they reorder what follows: Trojan Source), and keeps joiners and marks of ordinary text', function () {
    expect(escapeForTerminal(Buffer.from('if (a) {\u202E } \u2066x\u2069\u202A\u202D'))).to.equal('if (a) {\\u{202e} } \\u{2066}x\\u{2069}\\u{202a}\\u{202d}');
    const ordinary = 'می\u200Cخواهم \u200F\u200E 👩\u200D💻 \uFEFF\u00AD';
    expect(escapeForTerminal(Buffer.from(ordinary))).to.equal(ordinary);
  });
});
