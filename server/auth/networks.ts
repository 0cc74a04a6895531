import { BlockList, isIP } from 'node:net';
import { canonicalIp } from '../../protocol/ip-address.js';
import { parseRuleLines, type RuleLineProblem } from '../storage/rule-lines.js';

/**
 * Where each user may log in from (--networks-file), as SFTPGo's allowed IPs and ProFTPD's per-user
 * <Limit LOGIN> do: a stolen password is then of no use outside the user's networks. Pure: text in, a
 * verdict per user and address out; the primary reads and validates the file, and sends its text to the
 * workers with the other rules files.
 */

/** The networks one user may log in from; null = anywhere. */
export type UserNetworks = BlockList | null;

/** Adds one network (an IPv4 or IPv6 address with an optional /PREFIX) to `into`; false when malformed. */
function parseNetwork(raw: string, into: BlockList): boolean {
  const text = raw.trim();
  const slash = text.indexOf('/');
  const address = slash < 0 ? text : text.slice(0, slash);
  const family = isIP(address);
  // A zone (fe80::1%eth0) would be dropped by BlockList, and the rule would then match that address on
  // every link: refused rather than widened.
  if (family === 0 || address.includes('%')) return false;
  const max = family === 4 ? 32 : 128;
  let prefix = max;
  if (slash >= 0) {
    const digits = text.slice(slash + 1);
    if (!/^\d{1,3}$/.test(digits) || Number(digits) > max) return false;
    prefix = Number(digits);
  }
  into.addSubnet(address, prefix, family === 4 ? 'ipv4' : 'ipv6');
  return true;
}

/** `any` (null), or networks separated by commas; undefined when one is malformed. */
export function parseNetworks(raw: string): UserNetworks | undefined {
  if (raw.trim().toLowerCase() === 'any') return null;
  const list = new BlockList();
  const parts = raw.split(',');
  for (const part of parts) if (!parseNetwork(part, list)) return undefined;
  return list;
}

/** Whether `address` is in `networks` (null: anywhere). */
export function inNetworks(networks: UserNetworks, address: string): boolean {
  if (networks === null) return true;
  // An IPv4 client on a dual-stack socket shows as ::ffff:a.b.c.d: judged as the IPv4 address it is.
  const ip = canonicalIp(address);
  const family = isIP(ip);
  try {
    return family !== 0 && networks.check(ip, family === 4 ? 'ipv4' : 'ipv6');
  } catch {
    return false; // an address BlockList cannot judge: in no network
  }
}

/**
 * A test of membership in a list validated by parseNetworks (null: no list, no address is in it). Were the
 * list malformed after all, no address would be in it: nobody rather than everybody.
 */
export function memberOf(text: string | null): (address: string) => boolean {
  if (text === null) return () => false;
  const networks = parseNetworks(text) ?? new BlockList();
  return (address) => inNetworks(networks, address);
}

/**
 * The networks file: one `USER:NETWORKS` per line, NETWORKS `any` or a comma-separated list of addresses and
 * CIDR prefixes (`10.0.0.0/8, 192.0.2.7, 2001:db8::/32`); a `*:…` line for every user the file does not
 * name; in the syntax of rule-lines.ts.
 */
export function parseNetworksFile(text: string): { star: UserNetworks | undefined; perUser: Map<string, UserNetworks>; problems: RuleLineProblem[] } {
  return parseRuleLines(
    text,
    {
      name: 'NETWORKS',
      parse: parseNetworks,
      invalid: 'expected any, or addresses and networks (10.0.0.0/8, 192.0.2.7, 2001:db8::/32; no %zone) separated by commas',
    },
    true,
  );
}

export class Networks {
  constructor(
    readonly star: UserNetworks | undefined = undefined,
    readonly perUser: ReadonlyMap<string, UserNetworks> = new Map(),
  ) {}

  /** From a validated networks file's text (null: no file, everyone anywhere). */
  static fromFile(text: string | null): Networks {
    if (text === null) return new Networks();
    const { star, perUser } = parseNetworksFile(text);
    return new Networks(star, perUser);
  }

  /** Whether `user` may log in (and work) from `address`. */
  allows(user: string, address: string): boolean {
    const own = this.perUser.get(user);
    return inNetworks(own === undefined ? (this.star ?? null) : own, address);
  }
}
