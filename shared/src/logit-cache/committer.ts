/**
 * The one protocol for writing a cache directory, whatever its columns and whoever writes it
 * (the streaming LogitCacheWriter, the distributed CacheAssembler, later per-token and feature
 * caches):
 *
 *  1. claim: the key names the directory; a complete cache is refused, a live writer's lock is
 *     refused, a dead writer's lock is taken over (lock.ts);
 *  2. recover: the shards progress.json lists whose bytes still hash correctly are kept (with a
 *     plan: each that matches its planned rows, in any order; without: the prefix up to the
 *     first gap); everything else in the directory is removed;
 *  3. shard write: each shard is a temp file renamed into place when complete;
 *  4. progress: after each shard, progress.json lists the durable shards (writes serialized);
 *  5. manifest last: written atomically once every shard is recorded; progress.json and the
 *     lock go after it.
 *
 * One fsync policy covers shards, progress.json and the manifest: with `fsync` (the default)
 * each is on disk before the next step relies on it; without, every write is still atomic (a
 * killed process leaves no partial file), but a power loss may drop recent shards, which the
 * hash checks then refuse rather than read.
 */
import { readFile, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { AtomicArrowFileWriter, sha256File, writeFileAtomic } from '../internal/arrow-io.js';
import { LOCK_FILE, claimCacheDir } from './lock.js';
import { MANIFEST_FILE, PROGRESS_FILE, ShardSchema, type CacheKeyInput, type Shard } from './manifest.js';
import { shardFileName } from './schema.js';

export interface CacheCommitterOptions<M> {
  /** Directory that holds caches; this one goes to `<root>/<key>/`. */
  readonly root: string;
  /** What the key covers. */
  readonly key: CacheKeyInput;
  /** fsync shards, progress.json and the manifest (default true). */
  readonly fsync?: boolean;
  /**
   * Planned shards, by index (writers that receive shards out of order). Without a plan, shards
   * are written in order and recovery keeps the prefix up to the first gap.
   */
  readonly plan?: ReadonlyArray<{ readonly rows: number }>;
  /** The cache's record for these durable shards: everything of the manifest but `complete` and `createdAt`. */
  readonly record: (shards: readonly Shard[], key: string) => Record<string, unknown>;
  /** Validates the finished manifest (the column set's own schema). */
  readonly manifest: z.ZodType<M>;
}

/** What recovery reads of progress.json: the key and the shards; the rest is the column set's. */
const ProgressShardsSchema = z.object({ key: z.string(), shards: z.array(ShardSchema) });

export const shardIndex = (file: string): number => {
  const m = /^part-(\d+)\.arrow$/.exec(file);
  if (m === null) throw new Error(`${file} is not a shard file name`);
  return Number.parseInt(m[1]!, 10);
};

export class CacheCommitter<M> {
  readonly key: string;
  readonly dir: string;
  readonly fsync: boolean;
  readonly #o: CacheCommitterOptions<M>;
  readonly #shards = new Map<number, Shard>();
  #progress: Promise<void> = Promise.resolve();
  #closed = false;

  private constructor(o: CacheCommitterOptions<M>, key: string, dir: string, recovered: readonly Shard[]) {
    this.#o = o;
    this.key = key;
    this.dir = dir;
    this.fsync = o.fsync ?? true;
    for (const s of recovered) this.#shards.set(shardIndex(s.file), s);
  }

  /** Claim the directory and recover what an interrupted writer left. */
  static async open<M>(o: CacheCommitterOptions<M>): Promise<CacheCommitter<M>> {
    const { key, dir, recovered } = await claimCacheDir(o.root, o.key, (d, k) => recoverShards(d, k, o.plan));
    return new CacheCommitter(o, key, dir, recovered);
  }

  /** The durable shards, in index order. */
  get shards(): Shard[] {
    return [...this.#shards.entries()].sort((a, b) => a[0] - b[0]).map(([, s]) => s);
  }

  get rows(): number {
    let n = 0;
    for (const s of this.#shards.values()) n += s.rows;
    return n;
  }

  shard(index: number): Shard | undefined {
    return this.#shards.get(index);
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** A streaming writer for shard `index`: a temp file renamed into place on close. */
  shardWriter(index: number): AtomicArrowFileWriter {
    this.#assertOpen();
    return new AtomicArrowFileWriter(join(this.dir, shardFileName(index)), { fsync: this.fsync });
  }

  /** Write a whole encoded shard as shard `index` (atomic). */
  async writeShard(index: number, bytes: Uint8Array): Promise<string> {
    this.#assertOpen();
    const file = shardFileName(index);
    await writeFileAtomic(join(this.dir, file), bytes, { fsync: this.fsync });
    return file;
  }

  /**
   * Record a shard whose file is in place: progress.json lists it once this resolves. Records
   * are written one at a time, each with every shard committed so far.
   */
  commit(shard: Shard): Promise<void> {
    this.#assertOpen();
    this.#shards.set(shardIndex(shard.file), shard);
    const next = this.#progress.then(() =>
      writeFileAtomic(join(this.dir, PROGRESS_FILE), JSON.stringify({ ...this.#o.record(this.shards, this.key), complete: false }, null, 2), {
        fsync: this.fsync,
      }),
    );
    this.#progress = next.catch(() => undefined);
    return next;
  }

  /** Wait for every progress record written so far. */
  async settled(): Promise<void> {
    await this.#progress;
  }

  /** Write the manifest last (atomically, validated), then drop progress.json and the lock. */
  async finish(): Promise<M> {
    this.#assertOpen();
    if (this.#o.plan !== undefined && this.#shards.size !== this.#o.plan.length)
      throw new Error(`cache ${this.key}: ${this.#o.plan.length - this.#shards.size} of ${this.#o.plan.length} shards are missing`);
    await this.#progress;
    const manifest = this.#o.manifest.parse({ ...this.#o.record(this.shards, this.key), createdAt: new Date().toISOString(), complete: true });
    await writeFileAtomic(join(this.dir, MANIFEST_FILE), JSON.stringify(manifest, null, 2), { fsync: this.fsync });
    await rm(join(this.dir, PROGRESS_FILE), { force: true });
    await this.release();
    return manifest;
  }

  /** Stop without a manifest: durable shards stay for a later resume; the claim is released. */
  async release(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#progress;
    await rm(join(this.dir, LOCK_FILE), { force: true });
  }

  #assertOpen(): void {
    if (this.#closed) throw new Error(`cache ${this.key}: the writer is closed`);
  }
}

/** Step 2 of the protocol (see the top of this file). */
async function recoverShards(dir: string, key: string, plan: ReadonlyArray<{ readonly rows: number }> | undefined): Promise<Shard[]> {
  const kept: Shard[] = [];
  const raw = await readFile(join(dir, PROGRESS_FILE), 'utf8').catch(() => undefined);
  let parsed: z.infer<typeof ProgressShardsSchema> | undefined;
  try {
    const p = raw === undefined ? undefined : ProgressShardsSchema.safeParse(JSON.parse(raw));
    parsed = p?.success === true && p.data.key === key ? p.data : undefined;
  } catch {
    parsed = undefined; // a torn or foreign progress.json: nothing is kept
  }
  for (const shard of parsed?.shards ?? []) {
    const index = /^part-(\d+)\.arrow$/.test(shard.file) ? shardIndex(shard.file) : -1;
    const fits = plan === undefined ? index === kept.length : plan[index]?.rows === shard.rows;
    const actual = fits ? await sha256File(join(dir, shard.file)).catch(() => undefined) : undefined;
    const intact = actual !== undefined && actual.sha256 === shard.sha256 && actual.bytes === shard.bytes;
    if (intact) kept.push(shard);
    else if (plan === undefined) break; // in-order writers resume from the first gap
  }
  const keep = new Set([...kept.map((s) => s.file), PROGRESS_FILE, LOCK_FILE]);
  for (const name of await readdir(dir)) if (!keep.has(name)) await rm(join(dir, name), { force: true, recursive: true });
  return kept;
}
