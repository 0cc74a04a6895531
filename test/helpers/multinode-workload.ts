/**
 * The mixed client workload of the scale-out test: ResilientClient sessions (through HAProxy) that upload,
 * download, view, list and delete their own files, and "racers" that keep uploading different contents to
 * one shared name per user and download it. Everything a client does and sees is written to a Ledger:
 * every operation (with its outcome), every content ever sent for a name (so that any byte sequence found
 * later can be judged), the expected final state of each client's own names, and which uploads were
 * interrupted (so that a staging leftover can be told from a leak).
 *
 * Every wait is bounded: a client stops starting operations at its deadline, and an operation that hangs
 * is bounded by the client library's own timeouts and by the test's.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { FtsError, ResilientClient, type ReconnectOptions } from '../../client/index.js';
import { uploadStagingKeys } from './staging-keys.js';
import { sha256 } from './lifecycle-util.js';
import { seededRandom } from './vectors.js';

export type OpKind = 'upload' | 'download' | 'view' | 'list' | 'delete' | 'race-upload' | 'race-download';

export interface OpRecord {
  client: number;
  user: string;
  op: OpKind;
  name: string | null;
  ok: boolean;
  code?: string;
  message?: string;
  /** Start, ms since the epoch, and duration. */
  at: number;
  ms: number;
  /** Reconnections the resilient client made during this operation. */
  reconnects: number;
}

export interface OwnState {
  user: string;
  name: string;
  sha256: string;
  /** present: acknowledged and not deleted; absent: deleted (acknowledged); unknown: an operation on it failed. */
  state: 'present' | 'absent' | 'unknown' | 'in-flight';
}

export class Ledger {
  readonly ops: OpRecord[] = [];
  /** Wrong data seen by a client (a download, view or list that disagrees with what was uploaded). */
  readonly integrity: string[] = [];
  /** `user/name` → every SHA-256 the test tried to publish under that name (in-flight uploads included). */
  readonly versions = new Map<string, Set<string>>();
  /** `user/name` → the expected final state of a client's own (unshared) name. */
  readonly own = new Map<string, OwnState>();
  /** `user/stagingKey` of uploads during which the client had to reconnect (their partial may remain). */
  readonly interruptedKeys = new Set<string>();

  addVersion(user: string, name: string, sha256: string): void {
    const key = `${user}/${name}`;
    let set = this.versions.get(key);
    if (set === undefined) this.versions.set(key, (set = new Set()));
    set.add(sha256);
  }

  failures(): OpRecord[] {
    return this.ops.filter((o) => !o.ok);
  }

  count(op: OpKind, ok = true): number {
    return this.ops.filter((o) => o.op === op && o.ok === ok).length;
  }
}

/** A small deterministic PRNG (mulberry32), so that a run can be repeated from its printed seed. */
export const prng = seededRandom;

const KiB = 1024;
const MiB = 1024 * KiB;
export const MIN_FILE = 64 * KiB;
export const MAX_FILE = 4 * MiB;
/** Random bytes that file contents are cut from (each file also gets a unique prefix); made on first use. */
let pool: Buffer | null = null;
/** A client keeps at most this many own files (it deletes one before uploading more). */
const MAX_OWN_FILES = 5;

/** Unique content of `size` bytes: a tag naming its origin, then random bytes from the pool. */
function makeContent(size: number, tag: string, rnd: () => number): Buffer {
  pool ??= randomBytes(MAX_FILE * 2);
  const out = Buffer.allocUnsafe(size);
  const start = Math.floor(rnd() * (pool.length - size));
  pool.copy(out, 0, start, start + size);
  Buffer.from(`${tag}|${randomBytes(8).toString('hex')}|`).copy(out, 0);
  return out;
}

/** Log-uniform between MIN_FILE and MAX_FILE: mostly small files, some large ones (resumable, ≥ 1 MiB). */
function fileSize(rnd: () => number): number {
  return Math.floor(MIN_FILE * (MAX_FILE / MIN_FILE) ** rnd());
}

interface OwnFile {
  sha256: string;
  size: number;
  head: Buffer;
}

export interface WorkloadOptions {
  index: number;
  user: string;
  password: string;
  host: string;
  port: number;
  /** Local scratch directory of this client (created). */
  dir: string;
  ledger: Ledger;
  /** The shared name this client races on, or null. */
  raceName: string | null;
  seed: number;
  reconnect?: ReconnectOptions;
}

export class WorkloadClient {
  private client: ResilientClient | null = null;
  private readonly files = new Map<string, OwnFile>();
  private readonly deleted = new Set<string>();
  private readonly rnd: () => number;
  private counter = 0;
  private raceUploaded = false;
  /** Retries announced by ResilientClient's onRetry (each is followed by a reconnection attempt). */
  retryNotices = 0;
  private finalReconnects = 0;

  constructor(readonly o: WorkloadOptions) {
    this.rnd = prng(o.seed);
  }

  /** Reconnections of this client's ResilientClient (kept after quit()). */
  get reconnects(): number {
    return this.client?.reconnects ?? this.finalReconnects;
  }

  /** Connects through the load balancer (the first connection is not retried by ResilientClient). */
  async connect(): Promise<void> {
    await mkdir(this.o.dir, { recursive: true });
    this.client = await ResilientClient.connect({
      host: this.o.host,
      port: this.o.port,
      user: this.o.user,
      password: this.o.password,
      ...(this.o.reconnect ? { reconnect: this.o.reconnect } : {}),
      onRetry: () => {
        this.retryNotices++;
      },
    });
  }

  /** Runs operations until `deadline` (ms since the epoch). Never throws for an operation's failure. */
  async run(deadline: number): Promise<void> {
    while (Date.now() < deadline) {
      const r = this.rnd();
      if (this.o.raceName !== null && (r < 0.45 || !this.raceUploaded)) {
        if (!this.raceUploaded || this.rnd() < 0.5) await this.raceUpload();
        else await this.raceDownload();
        continue;
      }
      const names = [...this.files.keys()];
      const pick = (): string => names[Math.floor(this.rnd() * names.length)] ?? '';
      const s = this.rnd();
      if (names.length === 0) await this.upload();
      else if (names.length >= MAX_OWN_FILES || (s < 0.12 && names.length >= 2)) await this.delete(pick());
      else if (s < 0.42) await this.upload();
      else if (s < 0.72) await this.download(pick());
      else if (s < 0.86) await this.view(pick());
      else await this.list();
    }
  }

  async quit(): Promise<void> {
    const c = this.client;
    if (c === null) return;
    this.finalReconnects = c.reconnects;
    this.client = null;
    try {
      await c.quit();
    } catch {
      c.close();
    }
  }

  close(): void {
    if (this.client === null) return;
    this.finalReconnects = this.client.reconnects;
    this.client.close();
    this.client = null;
  }

  private get c(): ResilientClient {
    if (this.client === null) throw new Error('workload client not connected');
    return this.client;
  }

  /** Runs one operation and records it; returns its result, or undefined after a failure. */
  private async op<T>(op: OpKind, name: string | null, fn: () => Promise<T>): Promise<{ value: T; reconnects: number } | undefined> {
    const at = Date.now();
    const before = this.reconnects;
    try {
      const value = await fn();
      const reconnects = this.reconnects - before;
      this.o.ledger.ops.push({ client: this.o.index, user: this.o.user, op, name, ok: true, at, ms: Date.now() - at, reconnects });
      return { value, reconnects };
    } catch (err) {
      const code = err instanceof FtsError ? err.code : 'NOT_AN_FTS_ERROR';
      const message = err instanceof Error ? err.message : String(err);
      this.o.ledger.ops.push({ client: this.o.index, user: this.o.user, op, name, ok: false, code, message, at, ms: Date.now() - at, reconnects: this.reconnects - before });
      return undefined;
    }
  }

  private problem(text: string): void {
    this.o.ledger.integrity.push(`client ${this.o.index} (${this.o.user}): ${text}`);
  }

  private async send(op: 'upload' | 'race-upload', name: string): Promise<boolean> {
    const n = ++this.counter;
    const size = fileSize(this.rnd);
    const content = makeContent(size, `${this.o.user}/${name}/c${this.o.index}/${n}`, this.rnd);
    const sha = sha256(content);
    const local = path.join(this.o.dir, `up-${n}.bin`);
    await writeFile(local, content);
    const { ledger, user } = this.o;
    ledger.addVersion(user, name, sha);
    const ownKey = `${user}/${name}`;
    if (op === 'upload') ledger.own.set(ownKey, { user, name, sha256: sha, state: 'in-flight' });
    try {
      const done = await this.op(op, name, () => this.c.upload(local, name));
      const interrupted = async (): Promise<void> => {
        for (const key of await uploadStagingKeys(local, name, size, sha)) ledger.interruptedKeys.add(`${user}/${key}`);
      };
      if (done !== undefined && done.reconnects > 0) await interrupted();
      if (done === undefined) {
        // The upload may or may not have been published, and a partial may remain for a resume.
        await interrupted();
        if (op === 'upload') ledger.own.set(ownKey, { user, name, sha256: sha, state: 'unknown' });
        return false;
      }
      if (done.value.sha256 !== sha || done.value.size !== size) this.problem(`upload of ${name} acknowledged ${done.value.size} bytes / ${done.value.sha256}, sent ${size} / ${sha}`);
      if (op === 'upload') {
        ledger.own.set(ownKey, { user, name, sha256: sha, state: 'present' });
        this.files.set(name, { sha256: sha, size, head: content.subarray(0, 1024) });
      }
      return true;
    } finally {
      await rm(local, { force: true });
    }
  }

  private async upload(): Promise<void> {
    await this.send('upload', `c${String(this.o.index).padStart(2, '0')}-${this.counter + 1}.bin`);
  }

  private async raceUpload(): Promise<void> {
    if (this.o.raceName === null) return;
    if (await this.send('race-upload', this.o.raceName)) this.raceUploaded = true;
  }

  /** Downloads `name` to a local file and returns the SHA-256 of what arrived (the client verified it too). */
  private async fetch(op: 'download' | 'race-download', name: string): Promise<string | undefined> {
    const local = path.join(this.o.dir, `down-${++this.counter}.bin`);
    try {
      const done = await this.op(op, name, () => this.c.download(name, local));
      if (done === undefined) return undefined;
      const got = sha256(await readFile(local));
      if (got !== done.value.sha256) this.problem(`download of ${name}: the client reported ${done.value.sha256} but the local file hashes to ${got}`);
      return got;
    } finally {
      for (const f of [local, `${local}.part`, `${local}.part.json`]) await rm(f, { force: true });
    }
  }

  private async download(name: string): Promise<void> {
    const want = this.files.get(name);
    const got = await this.fetch('download', name);
    if (want !== undefined && got !== undefined && got !== want.sha256) this.problem(`download of ${name} returned ${got}, uploaded ${want.sha256}`);
  }

  private async raceDownload(): Promise<void> {
    if (this.o.raceName === null) return;
    const got = await this.fetch('race-download', this.o.raceName);
    const known = this.o.ledger.versions.get(`${this.o.user}/${this.o.raceName}`);
    if (got !== undefined && !(known?.has(got) ?? false)) this.problem(`download of the shared ${this.o.raceName} returned ${got}, which no client uploaded`);
  }

  private async view(name: string): Promise<void> {
    const want = this.files.get(name);
    const done = await this.op('view', name, () => this.c.view(name));
    if (done !== undefined && want !== undefined && !done.value.equals(want.head)) this.problem(`view of ${name} returned ${done.value.length} bytes that differ from the uploaded first ${want.head.length}`);
  }

  private async list(): Promise<void> {
    const done = await this.op('list', null, () => this.c.list({ long: true }));
    if (done === undefined) return;
    const listed = new Map(done.value.map((e) => [e.name, e.size]));
    for (const [name, f] of this.files) {
      if (!listed.has(name)) this.problem(`list does not show ${name}, uploaded and not deleted`);
      else if (listed.get(name) !== f.size) this.problem(`list shows ${name} with ${String(listed.get(name))} bytes, uploaded ${f.size}`);
    }
    for (const name of this.deleted) if (listed.has(name)) this.problem(`list still shows ${name}, deleted`);
  }

  private async delete(name: string): Promise<void> {
    const key = `${this.o.user}/${name}`;
    const state = this.o.ledger.own.get(key);
    this.files.delete(name);
    const done = await this.op('delete', name, () => this.c.delete(name));
    if (state === undefined) return;
    if (done === undefined) {
      this.o.ledger.own.set(key, { ...state, state: 'unknown' });
      return;
    }
    this.o.ledger.own.set(key, { ...state, state: 'absent' });
    this.deleted.add(name);
  }
}
