import { expect } from 'chai';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { deriveVerifier, formatVerifier } from '../../server/auth/scram.js';
import { decodeStrictUtf8 } from '../../protocol/strict-utf8.js';
import { parseUsers, verifyPassword } from '../../server/auth/users.js';
import { readUsersFile, UsersFileRefused } from '../../server/primary/users-file.js';

/** The salt key (any 32 bytes: these tests check which passwords match, not what a login announces). */
const KEY = Buffer.alloc(32, 9);

describe('users file', () => {
  describe('parseUsers', () => {
    it('reads users, skipping comments and blank lines', async () => {
      const { users, problems } = parseUsers('# comment\n\nalice:secret\n   # indented comment\n   \nbob:hunter2\n');
      expect(problems).to.deep.equal([]);
      expect(users.names()).to.deep.equal(['alice', 'bob']);
      expect(users.size).to.equal(2);
      expect(await verifyPassword(users, 'alice', 'secret', KEY)).to.equal(true);
      expect(await verifyPassword(users, 'bob', 'hunter2', KEY)).to.equal(true);
    });

    it('strips CRLF line endings and a byte-order mark', async () => {
      const { users, problems } = parseUsers('\uFEFFalice:secret\r\nbob:pw\r\n');
      expect(problems).to.deep.equal([]);
      expect(await verifyPassword(users, 'alice', 'secret', KEY)).to.equal(true);
      expect(await verifyPassword(users, 'alice', 'secret\r', KEY)).to.equal(false);
      expect(await verifyPassword(users, 'bob', 'pw', KEY)).to.equal(true);
    });

    it('splits at the first colon, so passwords may contain colons and spaces', async () => {
      const { users } = parseUsers('alice:a:b::c\nbob: spaced pw \n');
      expect(await verifyPassword(users, 'alice', 'a:b::c', KEY)).to.equal(true);
      expect(await verifyPassword(users, 'alice', 'a', KEY)).to.equal(false);
      expect(await verifyPassword(users, 'bob', ' spaced pw ', KEY)).to.equal(true);
      expect(await verifyPassword(users, 'bob', 'spaced pw', KEY)).to.equal(false);
    });

    it('reports malformed lines with their 1-based line numbers and skips them', () => {
      const text = [
        '# users', //          1
        'alice:ok', //         2
        'nocolonhere', //      3
        'carol:', //           4 empty password
        ':orphan', //          5 empty username
        '.hidden:pw', //       6 bad username
        'bad user:pw', //      7 bad username
        '', //                 8
        'dave:fine', //        9
      ].join('\n');
      const { users, problems } = parseUsers(text);
      expect(problems.map((p) => p.line)).to.deep.equal([3, 4, 5, 6, 7]);
      expect(users.names()).to.deep.equal(['alice', 'dave']);
      for (const p of problems) expect(p.reason).to.be.a('string').and.not.equal('');
    });

    it('keeps the first of duplicate users and reports the later line', async () => {
      const { users, problems } = parseUsers('alice:first\nbob:x\nalice:second\n');
      expect(problems).to.have.length(1);
      expect(problems[0]?.line).to.equal(3);
      expect(await verifyPassword(users, 'alice', 'first', KEY)).to.equal(true);
      expect(await verifyPassword(users, 'alice', 'second', KEY)).to.equal(false);
    });

    it('never puts a password (or a whole bad line) into a problem', () => {
      const secrets = ['Sup3r-S3cret-1', 'Sup3r-S3cret-2', 'Sup3r-S3cret-3', 'Sup3r-S3cret-4'];
      const text = [
        `alice:${secrets[0]}`,
        `alice:${secrets[1]}`, // duplicate
        `${secrets[2]}`, // no colon: the line may be just a password
        `bad user:${secrets[3]}`,
        'x'.repeat(70) + ':pw',
      ].join('\n');
      const { problems } = parseUsers(text);
      expect(problems).to.have.length(4);
      const all = JSON.stringify(problems);
      for (const s of secrets) expect(all).not.to.include(s);
    });

    it('keeps digests, not plaintext', () => {
      const { users } = parseUsers('alice:PlainTextPw\n');
      expect(JSON.stringify(users)).not.to.include('PlainTextPw');
    });
  });

  describe('verifyPassword', () => {
    const { users } = parseUsers('alice:secret\n');

    it('is true only for the right password', async () => {
      expect(await verifyPassword(users, 'alice', 'secret', KEY)).to.equal(true);
      expect(await verifyPassword(users, 'alice', 'Secret', KEY)).to.equal(false);
      expect(await verifyPassword(users, 'alice', '', KEY)).to.equal(false);
      expect(await verifyPassword(users, 'alice', 'secret ', KEY)).to.equal(false);
    });

    it('is false for an unknown user, whatever the password', async () => {
      expect(await verifyPassword(users, 'mallory', 'secret', KEY)).to.equal(false);
      expect(await verifyPassword(users, 'mallory', '', KEY)).to.equal(false);
      expect(await verifyPassword(users, '', '', KEY)).to.equal(false);
      expect(await verifyPassword(users, 'Alice', 'secret', KEY)).to.equal(false);
    });

    it('with hashed entries in the file, an unknown user or a plaintext entry costs a PBKDF2 too (no timing tell)', async function () {
      this.timeout(30_000);
      // 400 000 iterations: ~0.1–0.5 s per check, so that the comparison below has a wide margin. Without the
      // dummy PBKDF2 an unknown user costs microseconds, a thousandth of a hashed entry.
      const hashed = formatVerifier(deriveVerifier('secret', undefined, 400_000));
      const { users: u } = parseUsers(`carol:${hashed}\ndave:plain-secret\n`);
      const took = async (user: string): Promise<number> => {
        let best = Infinity;
        for (let i = 0; i < 2; i++) {
          const started = process.hrtime.bigint();
          expect(await verifyPassword(u, user, 'wrong', KEY)).to.equal(false);
          best = Math.min(best, Number(process.hrtime.bigint() - started));
        }
        return best;
      };
      const known = await took('carol');
      expect((await took('mallory')) / known, 'unknown user vs hashed entry').to.be.above(0.3);
      expect((await took('dave')) / known, 'plaintext entry vs hashed entry').to.be.above(0.3);
      expect(await verifyPassword(u, 'carol', 'secret', KEY)).to.equal(true);
      expect(await verifyPassword(u, 'dave', 'plain-secret', KEY)).to.equal(true);
    });

    it('handles non-ASCII passwords as UTF-8', async () => {
      const { users: u } = parseUsers('bob:pässwörd-名前\n');
      expect(await verifyPassword(u, 'bob', 'pässwörd-名前', KEY)).to.equal(true);
      expect(await verifyPassword(u, 'bob', 'pässwörd-名前'.normalize('NFD'), KEY)).to.equal(false);
    });
  });

  describe('readUsersFile', () => {
    let dir: string;
    beforeEach(async () => {
      dir = await mkdtemp(path.join(os.tmpdir(), 'fts-users-'));
    });
    afterEach(async () => {
      await rm(dir, { recursive: true, force: true });
    });

    async function refusal(file: string): Promise<string> {
      try {
        await readUsersFile(file, false);
      } catch (err) {
        expect(err).to.be.instanceOf(UsersFileRefused);
        return (err as Error).message;
      }
      throw new Error('readUsersFile did not refuse the file');
    }

    it('reads a file', async () => {
      const file = path.join(dir, 'id_passwd.txt');
      await writeFile(file, 'alice:secret\nbroken\n', { mode: 0o600 });
      const { users, problems } = await readUsersFile(file, false);
      expect(await verifyPassword(users, 'alice', 'secret', KEY)).to.equal(true);
      expect(problems).to.deep.equal([{ line: 2, reason: problems[0]?.reason }]);
    });

    it('refuses a missing file, naming the path and the reason in words', async () => {
      const file = path.join(dir, 'missing.txt');
      expect(await refusal(file)).to.equal(`users file ${file}: no such file or directory (ENOENT)`);
    });

    it('refuses a file that is not UTF-8, naming the line (a password must never be read as U+FFFD)', async () => {
      const file = path.join(dir, 'latin1.txt');
      await writeFile(file, Buffer.concat([Buffer.from('bob:fine\n'), Buffer.from('alice:p\xe4ss\n', 'latin1')]), { mode: 0o600 });
      expect(await refusal(file)).to.equal(`users file ${file}: line 2 is not valid UTF-8 (passwords are read as UTF-8; re-save the file as UTF-8)`);
    });
  });

  describe('decodeStrictUtf8', () => {
    it('decodes valid UTF-8 and names the first line that is not', () => {
      expect(decodeStrictUtf8(Buffer.from('a:b\nc:dé\n'))).to.deep.equal({ text: 'a:b\nc:dé\n' });
      expect(decodeStrictUtf8(Buffer.alloc(0))).to.deep.equal({ text: '' });
      expect(decodeStrictUtf8(Buffer.from('\uFEFFa:b\n')), 'a byte-order mark is kept, for a rewrite').to.deep.equal({ text: '\uFEFFa:b\n' });
      expect(decodeStrictUtf8(Buffer.from([0x61, 0x0a, 0x62, 0x0a, 0xff, 0x0a]))).to.deep.equal({ badLine: 3 });
      expect(decodeStrictUtf8(Buffer.from([0xc3]))).to.deep.equal({ badLine: 1 });
      // A character split across a newline is two bad lines; the first counts.
      expect(decodeStrictUtf8(Buffer.from([0x78, 0xe2, 0x82, 0x0a, 0xac]))).to.deep.equal({ badLine: 1 });
      // An encoded surrogate (CESU-8) is not UTF-8.
      expect(decodeStrictUtf8(Buffer.from([0x0a, 0xed, 0xa0, 0x80]))).to.deep.equal({ badLine: 2 });
    });
  });
});
