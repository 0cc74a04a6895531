/**
 * Per-user permissions (--permissions-file), without a server: the PERMS syntax (PermissionSet.parse), the
 * file (parsePermissionsFile: users, one `*` line, comments, CRLF, and every kind of malformed line with its
 * number), who falls back to what (Permissions.of, Permissions.fromFile), the quota file still read as
 * before through the shared rule-lines syntax, and the checks of a user's store (UserStore) with a
 * permission set that a reload may change between two requests.
 */
import { expect } from 'chai';
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { FtsError } from '../../protocol/index.js';
import { parsePermissionsFile, PERMISSION_LETTERS, Permissions, PermissionSet } from '../../server/storage/permissions.js';
import { parseQuotaFile } from '../../server/storage/quota-limits.js';
import { parseRuleLines } from '../../server/storage/rule-lines.js';
import { Store, type UserStore } from '../../server/storage/store.js';
import { loadSaltKey } from '../../server/storage/salt-key.js';

const sha = (data: Buffer): string => createHash('sha256').update(data).digest('hex');

/** The letters of a PERMS field, or undefined when it does not parse. */
const letters = (raw: string): string | undefined => PermissionSet.parse(raw)?.letters;

/** The FtsError `p` rejects with (its code and message), or 'OK'. */
async function outcome(p: Promise<unknown>): Promise<{ code: string; message: string }> {
  try {
    await p;
  } catch (err) {
    expect(err, String(err)).to.be.instanceOf(FtsError);
    return { code: (err as FtsError).code, message: (err as FtsError).message };
  }
  return { code: 'OK', message: '' };
}

const codeOf = async (p: Promise<unknown>): Promise<string> => (await outcome(p)).code;

describe('permissions: PermissionSet.parse', function () {
  it('takes letters of "lrwomd", each at most once, in any order, and keeps them in the canonical order', function () {
    expect(PERMISSION_LETTERS).to.equal('lrwomd');
    expect(letters('lrwomd')).to.equal('lrwomd');
    expect(letters('dmowrl')).to.equal('lrwomd');
    expect(letters('rl')).to.equal('lr');
    expect(letters('w')).to.equal('w');
    expect(letters('dw')).to.equal('wd');
    expect(letters('om')).to.equal('om');
    expect(letters('  lr \t')).to.equal('lr');
  });

  it('`-` is the empty set', function () {
    const none = PermissionSet.parse('-')!;
    expect(none.letters).to.equal('');
    for (const p of ['l', 'r', 'w', 'o', 'm', 'd'] as const) expect(none.has(p), p).to.equal(false);
    expect(letters(' - ')).to.equal('');
  });

  it('refuses an empty field, other letters (upper case too), a repeated letter and `-` with letters', function () {
    for (const bad of ['', '   ', 'x', 'lrx', 'L', 'LR', 'll', 'lrl', 'lrwomdl', 'dd', '--', '-l', 'l-', 'l r', 'l,r', 'a', '*', '0']) {
      expect(PermissionSet.parse(bad), JSON.stringify(bad)).to.equal(undefined);
    }
  });

  it('has() and require(): PERMISSION_DENIED (non-fatal) naming the user, the letter and what the server grants', function () {
    const lr = PermissionSet.parse('rl')!;
    expect(lr.has('l')).to.equal(true);
    expect(lr.has('r')).to.equal(true);
    expect(lr.has('w')).to.equal(false);
    lr.require('r', 'carol');
    let thrown: unknown = null;
    try {
      lr.require('d', 'carol');
    } catch (err) {
      thrown = err;
    }
    expect(thrown).to.be.instanceOf(FtsError);
    const e = thrown as FtsError;
    expect(e.code).to.equal('PERMISSION_DENIED');
    expect(e.fatal).to.equal(false);
    expect(e.message).to.include('carol');
    expect(e.message).to.include('"d"');
    expect(e.message).to.include('"lr"');
    let none: unknown = null;
    try {
      PermissionSet.parse('-')!.require('l', 'dave');
    } catch (err) {
      none = err;
    }
    expect((none as FtsError).message, 'an empty set is shown as -').to.include('grants "-"');
  });

  it('ALL has every letter', function () {
    expect(PermissionSet.ALL.letters).to.equal('lrwomd');
  });
});

describe('permissions: parsePermissionsFile', function () {
  it('USER:PERMS lines, comments, blank lines, CRLF and spaces around the fields; no `*` line: everyone else may do everything', function () {
    const f = parsePermissionsFile('# who may do what\r\nalice:lr\r\n\r\n   # indented comment\nbob: wd \n  carol :-\ndave:dmowrl\n');
    expect(f.problems).to.deep.equal([]);
    expect([...f.perUser].map(([u, s]) => [u, s.letters])).to.deep.equal([
      ['alice', 'lr'],
      ['bob', 'wd'],
      ['carol', ''],
      ['dave', 'lrwomd'],
    ]);
    expect(f.fallback.letters).to.equal('lrwomd');
  });

  it('a `*` line sets the permissions of the users no line names, wherever it is', function () {
    const f = parsePermissionsFile('alice:lrw\n*:l\nbob:-\n');
    expect(f.problems).to.deep.equal([]);
    expect(f.fallback.letters).to.equal('l');
    expect([...f.perUser.keys()]).to.deep.equal(['alice', 'bob']);
    expect(parsePermissionsFile('*:-\n').fallback.letters).to.equal('');
    expect(parsePermissionsFile('').problems).to.deep.equal([]);
    expect(parsePermissionsFile('').perUser.size).to.equal(0);
  });

  it('reports every malformed line with its number and reason: missing colon, bad user name, bad letters, repeated letter, empty PERMS, a user named twice, two `*` lines', function () {
    const text = [
      '# header', // 1
      'alice lr', // 2: no colon
      '../x:lr', // 3: bad user name
      'bob:lrx', // 4: bad letter
      'carol:ll', // 5: repeated letter
      'dave:', // 6: empty
      'erin:lr', // 7: fine
      'erin:w', // 8: twice
      '*:l', // 9: fine
      '*:lr', // 10: second *
      ':lr', // 11: empty user
      'frank:LR', // 12: upper case
      '', // 13
    ].join('\n');
    const f = parsePermissionsFile(text);
    expect(f.problems.map((p) => p.line)).to.deep.equal([2, 3, 4, 5, 6, 8, 10, 11, 12]);
    const reason = (line: number): string => f.problems.find((p) => p.line === line)!.reason;
    expect(reason(2)).to.equal('expected USER:PERMS');
    expect(reason(3)).to.equal('"../x" is not a valid user name (or * for everyone else)');
    for (const line of [4, 5, 6, 12]) expect(reason(line), `line ${line}`).to.equal('PERMS must be letters of "lrwomd", each at most once, or - for none');
    expect(reason(8)).to.equal('erin is named twice');
    expect(reason(10)).to.equal('* is named twice');
    expect(reason(11)).to.include('is not a valid user name');
    // The good lines still parse (the caller refuses the whole file anyway).
    expect(f.perUser.get('erin')?.letters).to.equal('lr');
    expect(f.fallback.letters).to.equal('l');
  });

  it('line numbers count CRLF lines, comments and blank lines', function () {
    const f = parsePermissionsFile('# c\r\n\r\nalice:lr\r\nbob:q\r\n');
    expect(f.problems).to.deep.equal([{ line: 4, reason: 'PERMS must be letters of "lrwomd", each at most once, or - for none' }]);
  });

  it('a very long bad user name is cut in the reason', function () {
    const f = parsePermissionsFile(`${'x/'.repeat(100)}:lr\n`);
    expect(f.problems).to.have.length(1);
    expect(f.problems[0]!.reason.length).to.be.below(120);
  });
});

describe('permissions: Permissions.of and fromFile', function () {
  it('a user the file names gets their own set; the others the fallback (the `*` line, else all)', function () {
    const p = Permissions.fromFile('alice:lr\nbob:-\n*:l\n');
    expect(p.of('alice').letters).to.equal('lr');
    expect(p.of('bob').letters).to.equal('');
    expect(p.of('carol').letters).to.equal('l');
    const noStar = Permissions.fromFile('alice:lr\n');
    expect(noStar.of('alice').letters).to.equal('lr');
    expect(noStar.of('carol').letters).to.equal('lrwomd');
  });

  it('without a file (null) and by default, everyone may do everything', function () {
    expect(Permissions.fromFile(null).of('anyone').letters).to.equal('lrwomd');
    expect(new Permissions().of('anyone').letters).to.equal('lrwomd');
    expect(new Permissions(PermissionSet.parse('r')!).of('anyone').letters).to.equal('r');
    expect(new Permissions(PermissionSet.ALL, new Map([['x', PermissionSet.parse('-')!]])).of('x').letters).to.equal('');
  });
});

describe('permissions: the quota file through the shared rule-lines syntax', function () {
  it('parseQuotaFile reads as before: sizes, off, comments, CRLF; problems with their line numbers', function () {
    const ok = parseQuotaFile('# tiers\r\nalice:10G\r\n\nbob: off\n');
    expect(ok.problems).to.deep.equal([]);
    expect([...ok.perUser]).to.deep.equal([
      ['alice', { bytes: 10 * 2 ** 30 }],
      ['bob', { bytes: null }],
    ]);
    const bad = parseQuotaFile('alice 10G\n../x:1M\ndave:lots\nerin:1M\nerin:2M\n');
    expect(bad.problems).to.deep.equal([
      { line: 1, reason: 'expected USER:SIZE' },
      { line: 2, reason: '"../x" is not a valid user name' },
      { line: 3, reason: 'SIZE must be a number of bytes of at least 1, optionally with K, M, G or T, or off; FILES (after a /, optional) a number of files of at least 1, or off' },
      { line: 5, reason: 'erin is named twice' },
    ]);
  });

  it('`*` is not allowed in the quota file (a bad user name, without the "or *" hint, saying what applies instead)', function () {
    const f = parseQuotaFile('*:1M\nalice:2M\n');
    expect(f.problems).to.deep.equal([{ line: 1, reason: '"*" is not a valid user name (here the server\'s own flags apply to everyone the file does not name)' }]);
    expect([...f.perUser.keys()]).to.deep.equal(['alice']);
  });

  it('a comment may follow the value after white space, in both files', function () {
    const perms = parsePermissionsFile('reader:lr   # read-only\n*:- \t# nobody else\nbad:lr#no space\n');
    expect(perms.problems.map((p) => p.line)).to.deep.equal([3]);
    expect(perms.perUser.get('reader')?.letters).to.equal('lr');
    expect(perms.fallback.letters).to.equal('');
    expect(parseQuotaFile('alice:20G # plenty\n').perUser.get('alice')).to.deep.equal({ bytes: 20 * 2 ** 30 });
  });

  it('parseRuleLines without `star` treats * as a user name; with it, one * line is its own value', function () {
    const value = { name: 'N', parse: (raw: string) => (/^\d+$/.test(raw.trim()) ? Number(raw.trim()) : undefined), invalid: 'N must be digits' };
    expect(parseRuleLines('*:1\n', value).problems).to.deep.equal([{ line: 1, reason: '"*" is not a valid user name (here the server\'s own flags apply to everyone the file does not name)' }]);
    const starred = parseRuleLines('a:1\n*:2\n', value, true);
    expect(starred.problems).to.deep.equal([]);
    expect(starred.star).to.equal(2);
    expect([...starred.perUser]).to.deep.equal([['a', 1]]);
    expect(parseRuleLines('a:1\n', value, true).star).to.equal(undefined);
    // A bad value on a * line is the value's problem, not the name's.
    expect(parseRuleLines('*:x\n', value, true).problems).to.deep.equal([{ line: 1, reason: 'N must be digits' }]);
  });
});

describe("permissions: the checks of a user's store", function () {
  let tmp: string;
  let root: string;
  let store: Store;
  let alice: UserStore;

  /** Sets alice's permissions (as a reload would), everyone else keeping all. */
  const grant = (perms: string): void => store.setPermissions(Permissions.fromFile(`alice:${perms}\n`));
  const userFile = (name: string): string => path.join(root, 'alice', name);
  const stagingFiles = async (): Promise<string[]> => readdir(path.join(root, '.fts', 'staging', 'alice')).catch(() => []);

  /** Uploads `data` and commits. */
  async function put(name: string, data: Buffer): Promise<void> {
    const up = await alice.beginUpload(name, data.length, { sha256: sha(data) });
    await up.write(data);
    await up.commit();
  }

  beforeEach(async function () {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'fts-perms-'));
    root = path.join(tmp, 'storage');
    store = new Store(root);
    await store.init();
    await loadSaltKey(root); // what the primary's start makes: Store.user looks for it
    alice = await store.user('alice');
  });

  afterEach(async function () {
    await rm(tmp, { recursive: true, force: true });
  });

  it('each operation needs its letter, read from the store at every call (a reload applies to the next one)', async function () {
    await put('a', Buffer.from('one'));
    grant('-');
    expect(await codeOf(alice.list(false)), 'list').to.equal('PERMISSION_DENIED');
    expect(await codeOf(alice.openRead('a')), 'read').to.equal('PERMISSION_DENIED');
    expect(await codeOf(alice.beginUpload('b', 1, { sha256: sha(Buffer.from('x')) })), 'upload').to.equal('PERMISSION_DENIED');
    expect(await codeOf(alice.stagedOffset('b', 1, { sha256: sha(Buffer.from('x')) })), 'offset').to.equal('PERMISSION_DENIED');
    // Seeing and freeing what one stores needs no permission (a user narrowed to "-" can still free space).
    expect(await alice.partials(60_000), 'partials').to.deep.equal([]);
    expect(await codeOf(alice.discard('0'.repeat(64))), 'discard').to.equal('NOT_FOUND');
    expect(await codeOf(alice.rename('a', 'c', false)), 'rename').to.equal('PERMISSION_DENIED');
    expect(await codeOf(alice.delete('a')), 'delete').to.equal('PERMISSION_DENIED');
    expect(store.permissionsOf('alice').letters).to.equal('');
    expect(store.permissionsOf('bob').letters, 'a user the file does not name').to.equal('lrwomd');
    grant('l');
    expect((await alice.list(false)).map((e) => e.name)).to.deep.equal(['a']);
    grant('r');
    const read = await alice.openRead('a');
    await read.close();
    grant('m');
    await alice.rename('a', 'c', false);
    grant('d');
    await alice.delete('c');
    grant('w');
    await put('fresh', Buffer.from('new'));
    expect(await readFile(userFile('fresh'), 'utf8')).to.equal('new');
  });

  it('w without o: an upload or offset onto a taken name is refused when it starts, nothing is staged or replaced; a free name is fine', async function () {
    await put('taken', Buffer.from('old'));
    grant('lrw');
    const data = Buffer.from('new content');
    const refused = await outcome(alice.beginUpload('taken', data.length, { sha256: sha(data) }));
    expect(refused.code).to.equal('PERMISSION_DENIED');
    expect(refused.message).to.include('"o"');
    expect(await codeOf(alice.stagedOffset('taken', data.length, { sha256: sha(data) })), 'offset').to.equal('PERMISSION_DENIED');
    expect(await readFile(userFile('taken'), 'utf8')).to.equal('old');
    expect(await stagingFiles()).to.deep.equal([]);
    expect(await alice.stagedOffset('free', data.length, { sha256: sha(data) })).to.equal(0);
    await put('free', data);
    // o without w: not even a free name.
    grant('o');
    expect(await codeOf(alice.beginUpload('other', 1, { sha256: sha(Buffer.from('x')) }))).to.equal('PERMISSION_DENIED');
    expect(await codeOf(alice.beginUpload('taken', 1, { sha256: sha(Buffer.from('x')) }))).to.equal('PERMISSION_DENIED');
    // w and o: replaces.
    grant('wo');
    await put('taken', data);
    expect(await readFile(userFile('taken'), 'utf8')).to.equal('new content');
  });

  it('w without o: a name taken while the upload is in progress fails the publish with PERMISSION_DENIED, the other file stays, and nothing is kept staged', async function () {
    grant('w');
    const data = Buffer.from('mine, slow');
    const up = await alice.beginUpload('race', data.length, { sha256: sha(data) });
    await up.write(data);
    await writeFile(userFile('race'), 'theirs'); // another session's upload, published meanwhile
    const refused = await outcome(up.commit());
    expect(refused.code).to.equal('PERMISSION_DENIED');
    expect(refused.message).to.include('race');
    expect(await readFile(userFile('race'), 'utf8')).to.equal('theirs');
    expect(await stagingFiles(), 'no retry could publish these bytes: not kept').to.deep.equal([]);
  });

  it('w without o: the same bytes uploaded again are ok and replace nothing; other bytes of the same size are refused at publish', async function () {
    grant('lrw');
    const data = Buffer.from('identical');
    await put('same', data);
    const before = await stat(userFile('same'), { bigint: true });
    const again = await alice.beginUpload('same', data.length, { sha256: sha(data) });
    await again.write(data);
    const { mtime } = await again.commit();
    const after = await stat(userFile('same'), { bigint: true });
    expect(after.ino, 'the same file, not a replacement').to.equal(before.ino);
    expect(mtime).to.equal(Math.floor(Number(before.mtimeNs) / 1e6));
    expect(await stagingFiles()).to.deep.equal([]);
    // A streamed upload (no digest at the start) of other bytes of that size: refused at its publish.
    const other = Buffer.from('different');
    const streamed = await alice.beginUpload('same', other.length, { version: '1'.repeat(64) });
    await streamed.write(other);
    streamed.expect(sha(other));
    expect((await outcome(streamed.commit())).code).to.equal('PERMISSION_DENIED');
    expect(await readFile(userFile('same'), 'utf8')).to.equal('identical');
    // Only the size is looked at before the data (no guess is answered without an upload): a declared digest
    // that differs is refused at the publish too.
    expect(await alice.stagedOffset('same', other.length, { sha256: sha(other) })).to.equal(0);
    const declared = await alice.beginUpload('same', other.length, { sha256: sha(other) });
    await declared.write(other);
    expect((await outcome(declared.commit())).code).to.equal('PERMISSION_DENIED');
    expect(await codeOf(alice.stagedOffset('same', 3, { sha256: sha(Buffer.from('abc')) })), 'another size: at once').to.equal('PERMISSION_DENIED');
    expect(await stagingFiles()).to.deep.equal([]);
    // A file older than the repeat window never matches, even with the same bytes.
    const old = new Date(Date.now() - 11 * 60_000);
    await utimes(userFile('same'), old, old);
    const late = await alice.beginUpload('same', data.length, { sha256: sha(data) });
    await late.write(data);
    expect((await outcome(late.commit())).code).to.equal('PERMISSION_DENIED');
    expect(await readFile(userFile('same'), 'utf8')).to.equal('identical');
  });

  it('the publish judges the permissions of that moment: w taken away during an upload refuses it, and nothing is kept', async function () {
    grant('w');
    const data = Buffer.from('long upload');
    const up = await alice.beginUpload('late', data.length, { sha256: sha(data) });
    await up.write(data);
    grant('lr'); // a reload while the upload runs
    expect((await outcome(up.commit())).code).to.equal('PERMISSION_DENIED');
    expect(await readdir(path.join(root, 'alice'))).to.deep.equal([]);
    expect(await stagingFiles()).to.deep.equal([]);
  });

  it('a rename needs m; with overwrite onto a taken name it needs o too (ALREADY_EXISTS without overwrite, with or without o)', async function () {
    await put('a', Buffer.from('A'));
    await put('b', Buffer.from('B'));
    grant('lm');
    expect(await codeOf(alice.rename('a', 'b', false)), 'no overwrite, no o').to.equal('ALREADY_EXISTS');
    const denied = await outcome(alice.rename('a', 'b', true));
    expect(denied.code, 'overwrite, no o').to.equal('PERMISSION_DENIED');
    expect(denied.message).to.include('"o"');
    expect(await readFile(userFile('a'), 'utf8')).to.equal('A');
    expect(await readFile(userFile('b'), 'utf8')).to.equal('B');
    await alice.rename('a', 'c', true); // overwrite asked, but the name is free: no o needed
    expect(await readFile(userFile('c'), 'utf8')).to.equal('A');
    grant('o');
    expect(await codeOf(alice.rename('c', 'b', true)), 'o without m').to.equal('PERMISSION_DENIED');
    grant('mo');
    expect(await codeOf(alice.rename('c', 'b', false)), 'no overwrite, with o').to.equal('ALREADY_EXISTS');
    await alice.rename('c', 'b', true);
    expect(await readFile(userFile('b'), 'utf8')).to.equal('A');
  });
});
