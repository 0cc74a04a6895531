import { expect } from 'chai';
import { deriveVerifier, formatVerifier, hmac, parseVerifier, saltedPassword, ScramClient, checkPassword, MAX_TOKEN_CHARS, MIN_MAX_HEADER_BYTES, sha256 } from '../../protocol/index.js';
import { scramFinal, scramFirst } from '../../server/auth/scram.js';
import { issueToken, verifyToken } from '../../server/auth/tokens.js';
import { parseUsers, verifyPassword } from '../../server/auth/users.js';

// RFC 7677 section 3: the SCRAM-SHA-256 example exchange.
const RFC = {
  user: 'user',
  password: 'pencil',
  clientNonce: 'rOprNGfwEbeRWgbNEkqO',
  serverFirst: 'r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096',
  clientFinal: 'c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=',
  serverFinal: 'v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=',
};

describe('SCRAM-SHA-256', () => {
  it('the client reproduces the RFC 7677 exchange', async () => {
    const client = new ScramClient(RFC.user, RFC.password, RFC.clientNonce);
    expect(client.first).to.equal(`n,,n=user,r=${RFC.clientNonce}`);
    expect(await client.final(RFC.serverFirst)).to.equal(RFC.clientFinal);
    expect(client.verifyServer(RFC.serverFinal)).to.equal(true);
    expect(client.verifyServer('v=AAAA')).to.equal(false);
  });

  it('the client refuses a server nonce that does not extend its own', async () => {
    const client = new ScramClient('user', 'pencil', 'abc');
    expect(await client.final('r=xyz123,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096')).to.equal(null);
    expect(await client.final('r=abc,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096')).to.equal(null);
  });

  it('the client refuses an iteration count below 4096 (a downgrade) or above 1,000,000', async () => {
    for (const i of ['1', '4095', '1000001', '0']) {
      const client = new ScramClient('user', 'pencil', 'abc');
      expect(await client.final(`r=abcdef,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=${i}`), `i=${i}`).to.equal(null);
    }
    for (const i of ['4096', '1000000']) {
      const client = new ScramClient('user', 'pencil', 'abc');
      expect(await client.final(`r=abcdef,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=${i}`), `i=${i}`).to.be.a('string');
    }
  });

  it('verifiers round-trip through the PostgreSQL format and check passwords', () => {
    const v = deriveVerifier('s3cret:with:colons');
    const text = formatVerifier(v);
    expect(text).to.match(/^SCRAM-SHA-256\$4096:[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+$/);
    const parsed = parseVerifier(text);
    expect(parsed).to.not.equal(null);
    expect(checkPassword(parsed!, 's3cret:with:colons')).to.equal(true);
    expect(checkPassword(parsed!, 's3cret')).to.equal(false);
    expect(parseVerifier('SCRAM-SHA-256$12:AAAA$BBBB:CCCC')).to.equal(null);
    expect(parseVerifier('plain-password')).to.equal(null);
  });

  it('the server accepts the right proof and signs with ServerKey; refuses a wrong one', async () => {
    const verifier = deriveVerifier('pencil');
    const secret = Buffer.alloc(32, 1);
    const client = new ScramClient('user', 'pencil');
    const x = await scramFirst(client.first, async (u) => (u === 'user' ? verifier : null), secret);
    expect(x).to.not.equal(null);
    const final = await client.final(x!.serverFirst);
    const serverFinal = scramFinal(x!, final!);
    expect(serverFinal).to.be.a('string');
    expect(client.verifyServer(serverFinal!)).to.equal(true);

    const wrong = new ScramClient('user', 'pen');
    const y = await scramFirst(wrong.first, async () => verifier, secret);
    expect(scramFinal(y!, (await wrong.final(y!.serverFirst))!)).to.equal(null);
  });

  it("c= must repeat the client-first-message's gs2 header (RFC 5802 §5.1)", async () => {
    const verifier = deriveVerifier('pencil');
    const secret = Buffer.alloc(32, 6);
    // A correct proof over whatever c= the client sends: only the binding check can refuse it.
    const attempt = async (gs2: string, binding: string, extensions = ''): Promise<string | null> => {
      const bare = 'n=user,r=cnonce';
      const x = (await scramFirst(`${gs2}${bare}`, async () => verifier, secret))!;
      const salt = Buffer.from(/,s=([^,]+),/.exec(x.serverFirst)![1]!, 'base64');
      const clientKey = hmac(saltedPassword('pencil', salt, verifier.iterations), 'Client Key');
      const withoutProof = `c=${binding},r=${x.nonce}${extensions}`;
      const signature = hmac(sha256(clientKey), `${bare},${x.serverFirst},${withoutProof}`);
      const proof = Buffer.from(clientKey.map((b, i) => b ^ (signature[i] ?? 0)));
      return scramFinal(x, `${withoutProof},p=${proof.toString('base64')}`);
    };
    expect(await attempt('n,,', 'biws')).to.be.a('string');
    expect(await attempt('y,,', 'eSws')).to.be.a('string');
    expect(await attempt('y,,', 'biws')).to.equal(null);
    expect(await attempt('n,,', 'eSws')).to.equal(null);
    expect(await attempt('n,,', '')).to.equal(null);
    // Extensions between r= and p= are part of client-final-message-without-proof, so of the AuthMessage.
    expect(await attempt('n,,', 'biws', ',x=1,y=two')).to.be.a('string');
  });

  it('an unknown user gets a stable fake salt and always fails', async () => {
    const secret = Buffer.alloc(32, 2);
    const a = await scramFirst('n,,n=ghost,r=n1', async () => null, secret);
    const b = await scramFirst('n,,n=ghost,r=n2', async () => null, secret);
    const saltOf = (s: string) => /,s=([^,]+),/.exec(s)?.[1];
    expect(saltOf(a!.serverFirst)).to.equal(saltOf(b!.serverFirst));
    const client = new ScramClient('ghost', 'anything', 'n1');
    expect(scramFinal(a!, (await client.final(a!.serverFirst))!)).to.equal(null);
  });

  it("names the server makes verifiers for (unknown users, plaintext entries) announce the file's own iteration counts, picked per name under the salt key", async () => {
    const key = Buffer.alloc(32, 4);
    const { users } = parseUsers(`carol:${formatVerifier(deriveVerifier('pw', undefined, 5000))}\nerin:${formatVerifier(deriveVerifier('pw', undefined, 7000))}\nalice:alice-pass\n`);
    const iterationsOf = (s: string) => Number(/,i=(\d+)$/.exec(s)?.[1]);
    const announced = async (name: string): Promise<number> => {
      const x = await scramFirst(`n,,n=${name},r=n1`, (u) => users.scramVerifier(u, key), key, (u) => users.iterationsFor(u, key));
      return iterationsOf(x!.serverFirst);
    };
    expect(await announced('carol')).to.equal(5000);
    expect(await announced('erin')).to.equal(7000);
    const seen = new Set<number>();
    for (let i = 0; i < 40; i++) {
      const ghost = `ghost${i}`;
      const count = await announced(ghost);
      expect([5000, 7000], ghost).to.include(count);
      expect(await announced(ghost), `${ghost} again`).to.equal(count);
      expect(users.iterationsFor(ghost, key)).to.equal(count);
      seen.add(count);
    }
    expect([...seen].sort(), 'unknown names announce each of the counts real ones do').to.deep.equal([5000, 7000]);
    // A plaintext entry's derived verifier uses its name's pick, as an unknown name would.
    expect(await announced('alice')).to.equal(users.iterationsFor('alice', key));
    const other = Buffer.alloc(32, 6);
    expect(Array.from({ length: 40 }, (_, i) => users.iterationsFor(`ghost${i}`, other)), 'the pick depends on the key').to.not.deep.equal(Array.from({ length: 40 }, (_, i) => users.iterationsFor(`ghost${i}`, key)));
    expect(parseUsers('alice:alice-pass\n').users.iterationsFor('ghost', key), "plaintext only: the derived verifiers' count").to.equal(4096);
  });

  it('a plaintext entry\'s verifier is derived off the event loop, once (prepareScram derives them all ahead of logins)', async function () {
    this.timeout(30_000);
    // The file's costliest count applies to derived verifiers too: 1,000,000 iterations, ~0.3 s of PBKDF2.
    const { users } = parseUsers(`carol:${formatVerifier(deriveVerifier('pw', undefined, 1_000_000))}\nalice:alice-pass\n`);
    const key = Buffer.alloc(32, 7);
    let ticks = 0;
    const timer = setInterval(() => ticks++, 5);
    try {
      await users.prepareScram(key);
    } finally {
      clearInterval(timer);
    }
    expect(ticks, 'timers ran while the verifier was derived').to.be.greaterThan(0);
    const first = users.scramVerifier('alice', key);
    const again = users.scramVerifier('alice', key);
    expect((await first)!.iterations).to.equal(1_000_000);
    expect(await again, 'derived once').to.equal(await first);
  });

  it('a reload\'s table adopts the verifiers derived for unchanged plaintext entries, and only those', async () => {
    const key = Buffer.alloc(32, 8);
    const before = parseUsers('alice:alice-pass\nbob:bob-pass\n').users;
    await before.prepareScram(key);
    const after = parseUsers('alice:alice-pass\nbob:a new password\n').users;
    after.adoptDerived(before);
    expect(await after.scramVerifier('alice', key), 'alice unchanged: the same verifier object').to.equal(await before.scramVerifier('alice', key));
    const bob = (await after.scramVerifier('bob', key))!;
    expect(bob).to.not.equal(await before.scramVerifier('bob', key));
    expect(checkPassword(bob, 'a new password')).to.equal(true);
    // Another iteration count (a hashed entry added with more iterations) derives everything again.
    const costlier = parseUsers(`alice:alice-pass\ncarol:${formatVerifier(deriveVerifier('pw', undefined, 5000))}\n`).users;
    costlier.adoptDerived(before);
    expect((await costlier.scramVerifier('alice', key))!.iterations).to.equal(5000);
  });

  it('malformed client messages are refused', async () => {
    const secret = Buffer.alloc(32, 3);
    expect(await scramFirst('garbage', async () => null, secret)).to.equal(null);
    expect(await scramFirst('p=tls-unique,,n=user,r=abc', async () => null, secret)).to.equal(null);
    expect(await scramFirst('n,,n=,r=abc', async () => null, secret)).to.equal(null);
  });

  it('the users file mixes plaintext and SCRAM entries', async () => {
    const entry = formatVerifier(deriveVerifier('dave-pass'));
    const { users, problems } = parseUsers(`alice:alice-pass\ndave:${entry}\neve:SCRAM-SHA-256$bogus\n`);
    expect(problems).to.have.length(1);
    expect(problems[0]?.line).to.equal(3);
    expect(users.plaintextCount).to.equal(1);
    expect(await verifyPassword(users, 'dave', 'dave-pass', Buffer.alloc(32, 5))).to.equal(true);
    expect(await verifyPassword(users, 'dave', 'alice-pass', Buffer.alloc(32, 5))).to.equal(false);
    expect(await verifyPassword(users, 'alice', 'alice-pass', Buffer.alloc(32, 5))).to.equal(true);
    const key = Buffer.alloc(32, 5);
    expect(await users.scramVerifier('alice', key)).to.not.equal(null);
    // Plaintext entries get a salt that does not change between connections or workers.
    expect((await parseUsers('alice:alice-pass\n').users.scramVerifier('alice', key))?.salt).to.deep.equal((await users.scramVerifier('alice', key))?.salt);
    expect(await users.scramVerifier('nobody', key)).to.equal(null);
    // The derived verifier is the one a client computes from the password.
    const derived = (await users.scramVerifier('alice', key))!;
    expect(checkPassword(derived, 'alice-pass')).to.equal(true);
    expect(checkPassword(derived, 'alice-pas')).to.equal(false);
  });
});

describe('session tokens', () => {
  const secret = Buffer.alloc(32, 9);
  const { users } = parseUsers('alice:alice-pass\nbob:bob-pass\n');
  const current = (name: string): Buffer | null => users.credentialOf(name);
  const alice = users.credentialOf('alice')!;

  it('a token names its user until it expires', () => {
    const { token, expires } = issueToken(secret, 'alice', alice, 60_000, 1_000);
    expect(expires).to.equal(61_000);
    expect(verifyToken(secret, token, current, 2_000).user).to.equal('alice');
    expect(verifyToken(secret, token, current, 61_000), 'expired: still ours, so its user is named').to.deep.equal({ user: null, issuedTo: 'alice' });
  });

  it('a token signed with another secret, or altered, is refused', () => {
    const { token } = issueToken(secret, 'alice', alice, 60_000);
    expect(verifyToken(Buffer.alloc(32, 8), token, current), 'another secret: names nobody').to.deep.equal({ user: null, issuedTo: null });
    const [v, payload, mac] = token.split('.');
    const claims = JSON.parse(Buffer.from(payload!, 'base64url').toString('utf8')) as Record<string, unknown>;
    const forged = Buffer.from(JSON.stringify({ ...claims, u: 'bob' })).toString('base64url');
    expect(verifyToken(secret, `${v}.${forged}.${mac}`, current), 'forged: names nobody').to.deep.equal({ user: null, issuedTo: null });
    expect(verifyToken(secret, `${v}.${payload}`, current).user).to.equal(null);
    expect(verifyToken(secret, `v1.${payload}.${mac}`, current).user, 'another version').to.equal(null);
    expect(verifyToken(secret, 'x'.repeat(2000), current).user).to.equal(null);
    expect(verifyToken(secret, `${token}=`, current).user, 'a padded MAC: another spelling of the same bytes').to.equal(null);
    expect(verifyToken(secret, token, current).user, 'the token as issued').to.equal('alice');
  });

  it('a token ends when its user\'s entry changes (a new password, the same one as a verifier) or is removed', () => {
    const { token } = issueToken(secret, 'alice', alice, 60_000);
    const newPassword = parseUsers('alice:another-pass\n').users;
    expect(verifyToken(secret, token, (n) => newPassword.credentialOf(n))).to.deep.equal({ user: null, issuedTo: 'alice' });
    const verifier = parseUsers(`alice:${formatVerifier(deriveVerifier('alice-pass'))}\n`).users;
    expect(verifyToken(secret, token, (n) => verifier.credentialOf(n)).user, 'same password, now hashed').to.equal(null);
    const removed = parseUsers('bob:bob-pass\n').users;
    expect(verifyToken(secret, token, (n) => removed.credentialOf(n)).user).to.equal(null);
    const unchanged = parseUsers('bob:bob-pass\nalice:alice-pass\n').users;
    expect(verifyToken(secret, token, (n) => unchanged.credentialOf(n)).user, 'the same entry, re-read').to.equal('alice');
  });

  it('the longest token (a 64-character user name) fits the limit, and its auth header fits the smallest header limit', () => {
    const user = 'u'.repeat(64);
    const { users: long } = parseUsers(`${user}:p\n`);
    const { token } = issueToken(secret, user, long.credentialOf(user)!, 60_000, 9_999_999_999_999);
    expect(token.length).to.be.at.most(MAX_TOKEN_CHARS);
    expect(verifyToken(secret, token, (n) => long.credentialOf(n), 0).user).to.equal(user);
    const header = JSON.stringify({ op: 'auth', id: 4294967295, mech: 'token', token: 'x'.repeat(MAX_TOKEN_CHARS) });
    expect(Buffer.byteLength(header)).to.be.below(MIN_MAX_HEADER_BYTES);
    expect(verifyToken(secret, 'x'.repeat(MAX_TOKEN_CHARS + 1), current)).to.deep.equal({ user: null, issuedTo: null });
  });

  it('a token carries an HMAC of the credential, not the password or its digest', () => {
    const { token } = issueToken(secret, 'alice', alice, 60_000);
    const text = Buffer.from(token.split('.')[1]!, 'base64url').toString('utf8');
    expect(text).to.not.include('alice-pass');
    expect(text).to.not.include(alice.subarray(6).toString('base64url'));
    expect(text).to.not.include(alice.subarray(6).toString('hex'));
  });
});
