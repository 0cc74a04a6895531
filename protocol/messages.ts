import { isErrorCode, type ErrorCode } from './codes.js';
import { FtsError } from './errors.js';
import type { Header } from './frames.js';
import { MAX_FILE_SIZE, MAX_REQUEST_ID } from './limits.js';
import { nameProblem } from './names.js';

/**
 * Authentication mechanisms this protocol defines. The greeting lists the ones a server offers.
 * `token` re-authenticates with the session token from an earlier successful login (for reconnects).
 */
export const AUTH_MECHANISMS = ['plain', 'scram-sha-256', 'token'] as const;
export type AuthMechanism = (typeof AUTH_MECHANISMS)[number];

/** Requests (client → server), one member per operation. */
export type Request =
  | { op: 'auth'; id: number; mech: 'plain'; user: string; password: string }
  | { op: 'auth'; id: number; mech: 'token'; token: string }
  /** SCRAM-SHA-256: `data` is the SCRAM message (client-first, then client-final in a continuation). */
  | { op: 'auth'; id: number; mech: 'scram-sha-256'; data: string }
  /** A `version` tag: a streamed upload ("trailer": true), whose digest follows its data in a trailer (§6.1). */
  | { op: 'upload'; id: number; name: string; size: number; tag: UploadTag; offset: number; progress: boolean }
  /**
   * An unsized upload ("unsized": true, §6.1 "Unsized uploads"): data frames until the trailer, which brings
   * the size and the digest. Not resumable.
   */
  | { op: 'upload'; id: number; name: string; unsized: true; stoppable: boolean; progress: boolean }
  /** The durable offset of a partial upload with this identity (0 when there is none). */
  | { op: 'offset'; id: number; name: string; size: number; tag: UploadTag }
  /** ifSize/ifMtime: resume only if the file is still that version; otherwise the whole file is sent. */
  | { op: 'download'; id: number; name: string; offset: number; ifSize?: number; ifMtime?: number }
  | { op: 'view'; id: number; name: string }
  | { op: 'delete'; id: number; name: string }
  /** Gives the file `name` the name `to`; `overwrite`: replace a file already called `to` (§6.9). */
  | { op: 'rename'; id: number; name: string; to: string; overwrite: boolean }
  | { op: 'list'; id: number; long: boolean }
  /** What the user stores, and their quota (§6.8). */
  | { op: 'usage'; id: number }
  /** The user's partial uploads (§6.10). */
  | { op: 'partials'; id: number }
  /** Removes the partial upload of one identity, named by its key (§6.10). */
  | { op: 'discard'; id: number; key: string }
  /** The SHA-256 of one file, without its bytes crossing the network (§6.11). */
  | { op: 'hash'; id: number; name: string; read: boolean }
  | { op: 'noop'; id: number }
  | { op: 'quit'; id: number };

/**
 * What identifies an upload besides its user, name and size: the SHA-256 declared in its header, or, for a
 * streamed upload, the client's tag for the version of its local file (both 64 lowercase hex digits).
 */
export type UploadTag = { sha256: string } | { version: string };

export type Op = Request['op'];
export const OPS = ['auth', 'upload', 'offset', 'download', 'view', 'delete', 'rename', 'list', 'usage', 'partials', 'discard', 'hash', 'noop', 'quit'] as const satisfies readonly Op[];

/** Whether `op` names one of the protocol's operations. */
export function isOp(op: unknown): op is Op {
  return typeof op === 'string' && (OPS as readonly string[]).includes(op);
}

/** One listing entry. */
export interface Entry {
  name: string;
  size: number;
  /** Modification time, milliseconds since the UNIX epoch (UTC). */
  mtime: number;
  /** The SHA-256 recorded when this version was uploaded, where the server keeps one (§6.6). */
  sha256?: string;
}

/** The `usage` reply's figures (§6.8): what a user stores. */
export interface StorageUsage {
  /** Bytes counted against the quota: published files and partial uploads together. */
  used: number;
  /** Published files. */
  files: number;
  /** Bytes of partial uploads the server keeps for a resume. */
  partial: number;
  /** The user's quota in bytes; null when the server sets none. */
  quota: number | null;
  /** The most published files the user may have; null when the server sets no limit (or is too old to report one). */
  maxFiles: number | null;
}

/** One partial upload, as `partials` reports it (§6.10). */
export interface PartialEntry {
  /** The identity's staging key: 64 lowercase hex digits (what `discard` takes). */
  key: string;
  /** The upload's name, size and SHA-256 or version tag, when the server knows them. */
  name?: string;
  size?: number;
  sha256?: string;
  version?: string;
  /** Bytes staged: what the longest of its attempts holds (a resume continues from there). */
  staged: number;
  /** Bytes of all its staging files on disk (what the quota counts). */
  bytes: number;
  /** Last time bytes were written, milliseconds since the UNIX epoch. */
  mtime: number;
  /** From when the server's sweep may remove it, unless it progresses, milliseconds since the UNIX epoch. */
  expires: number;
}

export const SHA256_PATTERN = /^[0-9a-f]{64}$/;

/** Reads the request id, or null when there is none usable (replies then carry "id": null). */
export function requestId(header: Header): number | null {
  const id = header['id'];
  return typeof id === 'number' && Number.isInteger(id) && id >= 0 && id <= MAX_REQUEST_ID ? id : null;
}

/**
 * For an upload header, the number of data bytes that follow it on the wire, or null when the header does
 * not say legibly what follows it: size or offset unusable, or a `trailer` that is not a boolean (then
 * whether a trailer follows the data is unknown too). The server uses this to skip the data (and trailer,
 * see declaresTrailer) of an upload it refuses, so that the stream stays in sync; null makes that refusal
 * fatal.
 */
export function declaredUploadBytes(header: Header): number | null {
  const size = header['size'];
  const offset = header['offset'] === undefined ? 0 : header['offset'];
  const trailer = header['trailer'];
  if (!isSize(size) || !isSize(offset) || offset > size) return null;
  if (trailer !== undefined && typeof trailer !== 'boolean') return null;
  return size - offset;
}

/** Whether an upload header announces a digest trailer after its data (even if the header is otherwise refused). */
export function declaresTrailer(header: Header): boolean {
  return header['trailer'] === true;
}

/**
 * Whether an upload header announces an unsized upload: data frames up to its trailer, whatever else the
 * header holds (so that a refused one is skipped to its trailer).
 */
export function declaresUnsized(header: Header): boolean {
  return header['unsized'] === true;
}

/**
 * Reads the trailer of a streamed upload: a header frame {"op":"upload","id":<the upload's id>,"sha256":…}.
 * Another op or id means the client sent something else where the trailer belongs: the stream can no
 * longer be trusted, so that is fatal. A malformed digest in a proper trailer is an ordinary BAD_REQUEST.
 */
export function parseTrailer(h: Header, id: number): string {
  checkTrailerFrame(h, id);
  return hex64(h, 'sha256');
}

/** The trailer of an unsized upload: as parseTrailer, with the size of the whole file as well. */
export function parseUnsizedTrailer(h: Header, id: number): { size: number; sha256: string } {
  checkTrailerFrame(h, id);
  return { size: size(h, 'size'), sha256: hex64(h, 'sha256') };
}

/**
 * The fatal check of parseTrailer alone, for the trailer of an upload that is refused anyway (whose
 * header may have had no usable id: then any id is taken, there is none to compare with).
 */
export function checkTrailerFrame(h: Header, id: number | null): void {
  if (h['op'] !== 'upload' || (id !== null && requestId(h) !== id)) {
    throw new FtsError('PROTOCOL_ERROR', `expected the digest trailer of upload ${id ?? '(no id)'} after its data`);
  }
}

function isSize(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 && v <= MAX_FILE_SIZE;
}

function bad(message: string): FtsError {
  return new FtsError('BAD_REQUEST', message);
}

function str(h: Header, key: string): string {
  const v = h[key];
  if (typeof v !== 'string') throw bad(`"${key}" must be a string`);
  return v;
}

function name(h: Header, key: 'name' | 'to' = 'name'): string {
  const v = h[key];
  if (typeof v !== 'string') throw bad(`"${key}" must be a string`);
  const problem = nameProblem(v);
  if (problem !== null) throw new FtsError('BAD_NAME', key === 'name' ? problem : `"to": ${problem}`);
  return v;
}

function hex64(h: Header, key: 'sha256' | 'version' | 'key'): string {
  const v = str(h, key);
  if (!SHA256_PATTERN.test(v)) throw bad(`"${key}" must be 64 lowercase hex digits`);
  return v;
}

function size(h: Header, key: string, fallback?: number): number {
  const v = h[key] === undefined ? fallback : h[key];
  if (!isSize(v)) throw bad(`"${key}" must be an integer from 0 to ${MAX_FILE_SIZE}`);
  return v;
}

/**
 * Validates a decoded header as a request. Unknown extra fields are ignored so that later protocol
 * versions can add optional fields without breaking older servers.
 */
export function parseRequest(h: Header): Request {
  const id = requestId(h);
  if (id === null) throw bad(`"id" must be an integer from 0 to ${MAX_REQUEST_ID}`);
  const op = h['op'];
  if (typeof op !== 'string') throw bad('"op" must be a string');
  switch (op) {
    case 'auth': {
      const mech = str(h, 'mech');
      if (mech === 'plain') return { op, id, mech, user: str(h, 'user'), password: str(h, 'password') };
      if (mech === 'token') return { op, id, mech, token: str(h, 'token') };
      if (mech === 'scram-sha-256') return { op, id, mech, data: str(h, 'data') };
      throw new FtsError('UNSUPPORTED_MECHANISM', `mechanism "${mech.slice(0, 32)}" is not supported`);
    }
    case 'upload': {
      const trailer = h['trailer'] === undefined ? false : h['trailer'];
      if (typeof trailer !== 'boolean') throw bad('"trailer" must be a boolean');
      const unsized = h['unsized'] === undefined ? false : h['unsized'];
      if (typeof unsized !== 'boolean') throw bad('"unsized" must be a boolean');
      const progress = h['progress'] === undefined ? false : h['progress'];
      if (typeof progress !== 'boolean') throw bad('"progress" must be a boolean');
      if (unsized) {
        if (!trailer) throw bad('an upload with "unsized": true needs "trailer": true (its size and digest follow its data)');
        for (const field of ['size', 'offset', 'sha256', 'version']) {
          if (h[field] !== undefined) throw bad(`an unsized upload carries no "${field}" (its size and digest are in its trailer; it cannot be resumed)`);
        }
        const stoppable = h['stoppable'] === undefined ? false : h['stoppable'];
        if (typeof stoppable !== 'boolean') throw bad('"stoppable" must be a boolean');
        return { op, id, name: name(h), unsized: true, stoppable, progress };
      }
      // Only an unsized upload's data can end early (with its trailer): any other must send all it declared.
      if (h['stoppable'] !== undefined) throw bad('"stoppable" is for unsized uploads only (any other upload sends all the bytes it declares)');
      const total = size(h, 'size');
      const offset = size(h, 'offset', 0);
      if (offset > total) throw bad('"offset" is larger than "size"');
      if (trailer && h['sha256'] !== undefined) throw bad('an upload with "trailer": true carries "sha256" in its trailer, not in its header');
      // Accepting it and ignoring it would let a client believe a plain upload is staged under its version.
      if (!trailer && h['version'] !== undefined) throw bad('"version" identifies a streamed upload ("trailer": true); this upload is identified by "sha256"');
      const tag: UploadTag = trailer ? { version: hex64(h, 'version') } : { sha256: hex64(h, 'sha256') };
      return { op, id, name: name(h), size: total, tag, offset, progress };
    }
    case 'offset': {
      if ((h['sha256'] === undefined) === (h['version'] === undefined)) throw bad('"offset" needs exactly one of "sha256" and "version"');
      const tag: UploadTag = h['sha256'] !== undefined ? { sha256: hex64(h, 'sha256') } : { version: hex64(h, 'version') };
      // Every malformed field is reported before an illegal name (§6), as for an upload.
      const total = size(h, 'size');
      return { op, id, name: name(h), size: total, tag };
    }
    case 'download': {
      const offset = size(h, 'offset', 0);
      const ifSize = h['ifSize'] === undefined ? undefined : size(h, 'ifSize');
      const ifMtime = h['ifMtime'] === undefined ? undefined : size(h, 'ifMtime');
      const req: Request = { op, id, name: name(h), offset };
      if (ifSize !== undefined) req.ifSize = ifSize;
      if (ifMtime !== undefined) req.ifMtime = ifMtime;
      return req;
    }
    case 'view':
    case 'delete':
      return { op, id, name: name(h) };
    case 'hash': {
      const read = h['read'] === undefined ? false : h['read'];
      if (typeof read !== 'boolean') throw bad('"read" must be a boolean');
      return { op, id, name: name(h), read };
    }
    case 'rename': {
      const overwrite = h['overwrite'] === undefined ? false : h['overwrite'];
      if (typeof overwrite !== 'boolean') throw bad('"overwrite" must be a boolean');
      str(h, 'to'); // a missing or non-string "to" is BAD_REQUEST, before an illegal "name" is BAD_NAME (§6.9)
      return { op, id, name: name(h), to: name(h, 'to'), overwrite };
    }
    case 'list': {
      const long = h['long'] === undefined ? true : h['long'];
      if (typeof long !== 'boolean') throw bad('"long" must be a boolean');
      return { op, id, long };
    }
    case 'discard':
      return { op, id, key: hex64(h, 'key') };
    case 'usage':
    case 'partials':
    case 'noop':
    case 'quit':
      return { op, id };
    default:
      throw new FtsError('UNKNOWN_OP', `unknown operation "${op.slice(0, 32)}"`);
  }
}

/** Replies (server → client). `status` tells them apart; only "ok" and "error" are final. */
export type ReplyStatus = 'hello' | 'ok' | 'error' | 'data' | 'entry' | 'continue' | 'stop' | 'progress' | 'bye';

export interface ErrorReply {
  id: number | null;
  status: 'error';
  code: ErrorCode;
  message: string;
  fatal: boolean;
  [extra: string]: unknown;
}

/**
 * The interim `stop` of a stoppable unsized upload that has failed (§6.1 "Unsized uploads"): the client may
 * send its trailer now; the final reply will be this error. No `fatal`: it ends nothing by itself.
 */
export function stopReply(id: number, err: FtsError): Header {
  return { id, status: 'stop', code: err.code, message: err.message };
}

/** Builds the one wire reply for an error. */
export function errorReply(id: number | null, err: FtsError): ErrorReply {
  // Details first, so that no detail key can overwrite the fixed fields.
  return { ...err.details, id, status: 'error', code: err.code, message: err.message, fatal: err.fatal };
}

/** Turns an error reply received by a client back into an FtsError. */
export function errorFromReply(h: Header): FtsError {
  const code = isErrorCode(h['code']) ? h['code'] : 'INTERNAL';
  const message = typeof h['message'] === 'string' ? h['message'] : String(h['code']);
  const details: Record<string, string | number | boolean> = {};
  for (const [k, v] of Object.entries(h)) {
    if (['id', 'status', 'code', 'message', 'fatal'].includes(k)) continue;
    if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') details[k] = v;
  }
  // Honour the wire's `fatal`: the server knows best whether it is closing the connection.
  const fatal = typeof h['fatal'] === 'boolean' ? h['fatal'] : undefined;
  return new FtsError(code, message, details, fatal === undefined ? {} : { fatal });
}
