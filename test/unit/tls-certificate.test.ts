/**
 * What the server says of a TLS certificate's dates (server/primary/tls-certificate.ts): pure, at a given
 * time.
 */
import { expect } from 'chai';
import { EXPIRES_SOON_MS, validityProblems, type CertificateFacts } from '../../server/primary/tls-certificate.js';

const DAY = 86_400_000;
const facts: CertificateFacts = { subject: 'CN=fts.example', notBefore: Date.parse('2026-01-01T00:00:00Z'), notAfter: Date.parse('2026-12-31T00:00:00Z') };

describe('TLS certificate validity', function () {
  it('nothing to say while it is valid for longer than the warning period', function () {
    expect(validityProblems(facts, facts.notAfter - EXPIRES_SOON_MS - 1)).to.deep.equal([]);
    expect(validityProblems(facts, facts.notBefore)).to.deep.equal([]);
  });

  it('expires soon: within the warning period (14 days), naming the moment', function () {
    expect(EXPIRES_SOON_MS).to.equal(14 * DAY);
    const [problem, ...more] = validityProblems(facts, facts.notAfter - DAY);
    expect(more).to.deep.equal([]);
    expect(problem).to.equal('the TLS certificate expires at 2026-12-31T00:00:00.000Z, in less than 14 days: renew it, then fts-admin reload');
  });

  it('expired, and not yet valid, each say what clients then do', function () {
    expect(validityProblems(facts, facts.notAfter + 1)).to.deep.equal(["the TLS certificate expired at 2026-12-31T00:00:00.000Z: every client's handshake fails; renew it, then fts-admin reload"]);
    expect(validityProblems(facts, facts.notBefore - 1)).to.deep.equal(["the TLS certificate is not valid before 2026-01-01T00:00:00.000Z: clients refuse it until then (is this host's clock right?)"]);
  });
});
