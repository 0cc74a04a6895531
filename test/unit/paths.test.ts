import { expect } from 'chai';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { FtsError } from '../../protocol/index.js';
import { lockTarget, resolveName, stagingDir, userDirPath } from '../../server/storage/paths.js';

/** The repository root: the first directory above this (compiled) file that holds package.json. */
function repoRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!existsSync(path.join(dir, 'package.json'))) {
    const up = path.dirname(dir);
    if (up === dir) throw new Error('package.json not found above the test file');
    dir = up;
  }
  return dir;
}

function codeOf(fn: () => unknown): string | null {
  try {
    fn();
    return null;
  } catch (err) {
    expect(err).to.be.instanceOf(FtsError);
    return (err as FtsError).code;
  }
}

const root = '/srv/fts';
const userDir = userDirPath(root, 'alice');

describe('storage paths', () => {
  it('places a user directory directly under the root', () => {
    expect(userDir).to.equal('/srv/fts/alice');
    expect(path.dirname(userDir)).to.equal(root);
  });

  it('refuses an illegal username as a server bug (plain Error)', () => {
    // A username reaching storage unchecked is a server bug, reported as INTERNAL: exactly an Error, not an
    // FtsError (which would go to the client under its own code). to.throw(Error) accepts any subclass,
    // hence the check of the constructor.
    const thrown = (fn: () => unknown): unknown => {
      try {
        fn();
      } catch (err) {
        return err;
      }
      return null;
    };
    for (const user of ['', '.fts', '..', 'a/b', '-x', 'a b', 'x'.repeat(65)]) {
      for (const [what, fn] of [['userDirPath', () => userDirPath(root, user)], ['stagingDir', () => stagingDir(root, user)]] as const) {
        const err = thrown(fn);
        expect(err, `${what}(${JSON.stringify(user)})`).to.be.instanceOf(Error);
        expect((err as Error).constructor, `${what}(${JSON.stringify(user)}): a plain Error`).to.equal(Error);
        expect((err as Error).message).to.equal('storage: invalid username reached the storage layer');
      }
    }
  });

  describe('resolveName', () => {
    const legal = [
      'report.pdf',
      'with space',
      ' leading and trailing ',
      'ünïcødé-名前-😀',
      '%2e%2e',
      '%2e%2e%2f',
      '...',
      '.hidden',
      '..a',
      'a..',
      'x.lock',
      '.fts',
      'é'.normalize('NFD'),
      'a'.repeat(255),
      'é'.repeat(127), // 254 bytes
    ];
    for (const name of legal) {
      it(`accepts ${JSON.stringify(name).slice(0, 40)}`, () => {
        const p = resolveName(userDir, name);
        expect(path.dirname(p)).to.equal(userDir);
        expect(path.basename(p)).to.equal(name);
      });
    }

    const illegal: Array<[string, string]> = [
      ['empty', ''],
      ['dot', '.'],
      ['dot-dot', '..'],
      ['slash', '/'],
      ['embedded slash', 'a/b'],
      ['traversal', '../bob/secret'],
      ['absolute', '/etc/passwd'],
      ['backslash', 'a\\b'],
      ['windows traversal', '..\\..\\x'],
      ['NUL', 'a\u0000b'],
      ['newline', 'a\nb'],
      ['tab', 'a\tb'],
      ['DEL', 'a\u007fb'],
      ['C1 control', 'a\u0085b'],
      ['256 bytes', 'a'.repeat(256)],
      ['256 bytes of 2-byte chars', 'é'.repeat(128)],
      ['lone high surrogate', 'a\ud800b'],
      ['lone low surrogate', '\udc00'],
    ];
    for (const [label, name] of illegal) {
      it(`refuses ${label} with BAD_NAME`, () => {
        expect(codeOf(() => resolveName(userDir, name))).to.equal('BAD_NAME');
      });
    }

    it('normalises a trailing slash on the user directory before comparing', () => {
      expect(path.dirname(resolveName(`${userDir}/`, 'x'))).to.equal(userDir);
    });

    it('confines every line of the traversal corpus to the user directory', () => {
      const corpus = path.resolve(repoRoot(), '..', 'shared', 'data', 'traversal-payloads.txt');
      const lines = readFileSync(corpus, 'utf8').split('\n').filter((l) => l !== '');
      expect(lines.length).to.be.greaterThan(1000);
      let refused = 0;
      for (const line of lines) {
        const name = line.replaceAll('{FILE}', 'etc/passwd');
        let p: string;
        try {
          p = resolveName(userDir, name);
        } catch (err) {
          expect(err, name).to.be.instanceOf(FtsError);
          expect((err as FtsError).code, name).to.equal('BAD_NAME');
          refused++;
          continue;
        }
        expect(path.dirname(p), name).to.equal(userDir);
        expect(path.basename(p), name).to.equal(name);
      }
      // Most of the corpus contains '/', '\' or '..' and must be refused outright.
      expect(refused).to.be.greaterThan(lines.length / 2);
    });
  });

  describe('lockTarget', () => {
    it('lives under .fts/locks/<user>/ and is named by the SHA-256 of the name', () => {
      const t = lockTarget(root, 'alice', 'x.lock');
      expect(path.dirname(t)).to.equal('/srv/fts/.fts/locks/alice');
      expect(path.basename(t)).to.match(/^[0-9a-f]{64}$/);
    });

    it('differs per name and per user, and is stable', () => {
      expect(lockTarget(root, 'alice', 'a')).to.equal(lockTarget(root, 'alice', 'a'));
      expect(lockTarget(root, 'alice', 'a')).not.to.equal(lockTarget(root, 'alice', 'b'));
      expect(lockTarget(root, 'alice', 'a')).not.to.equal(lockTarget(root, 'bob', 'a'));
    });

    it('validates the name', () => {
      expect(codeOf(() => lockTarget(root, 'alice', '../x'))).to.equal('BAD_NAME');
    });
  });

  it('puts staging under .fts/staging/<user>', () => {
    expect(stagingDir(root, 'alice')).to.equal('/srv/fts/.fts/staging/alice');
  });
});
