/**
 * Reading and judging the quota file (--quota-file), the same way at start-up and at reload. Unlike the
 * users file, a malformed line refuses the whole file: skipping it would leave that user without their
 * quota (or with the default one) without anyone noticing.
 */
import { readFile } from 'node:fs/promises';
import { errnoReason } from '../../protocol/index.js';
import { decodeStrictUtf8 } from '../../protocol/strict-utf8.js';
import { parseQuotaFile } from '../storage/quota-limits.js';

export class QuotaFileRefused extends Error {
  override name = 'QuotaFileRefused';
}

/** The file's text, once it is known to parse without a problem; the number of users it names. */
export async function readQuotaFile(file: string): Promise<{ text: string; users: number }> {
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch (err) {
    throw new QuotaFileRefused(`quota file ${file}: ${errnoReason(err)}`);
  }
  const decoded = decodeStrictUtf8(bytes);
  if ('badLine' in decoded) throw new QuotaFileRefused(`quota file ${file}: line ${decoded.badLine} is not valid UTF-8`);
  const { perUser, problems } = parseQuotaFile(decoded.text);
  if (problems.length > 0) {
    throw new QuotaFileRefused(`quota file ${file}: ${problems.map((p) => `line ${p.line}: ${p.reason}`).join('; ')}`);
  }
  return { text: decoded.text, users: perUser.size };
}
