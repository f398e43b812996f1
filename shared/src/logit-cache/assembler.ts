/**
 * Builds a cache from shards that arrive out of order (uploaded by remote workers). Each
 * shard is checked by the caller (`inspectCacheShard`), written atomically under its planned
 * file name and recorded in progress.json; the manifest is written last, once every planned
 * shard is durable. A second copy of a shard with the same bytes is accepted and ignored; one
 * with different bytes is refused. Reopened after a crash, it keeps every recorded shard whose
 * bytes still hash correctly.
 */
import { readFile, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { sha256File, writeFileAtomic } from '../internal/arrow-io.js';
import { assertTemperature } from '../numerics.js';
import { PRODUCER } from '../version.js';
import { ViewSpecSchema, type ViewSpec, type ViewSpecInput } from '../views.js';
import { LOCK_FILE, claimCacheDir } from './lock.js';
import {
  CacheManifestSchema,
  CacheProgressSchema,
  MANIFEST_FILE,
  PROGRESS_FILE,
  StorageSchema,
  cacheRecordBody,
  type CacheManifest,
  type CacheProgress,
  type Shard,
  type Storage,
  type StorageInput,
  type TeacherRef,
} from './manifest.js';
import { shardFileName } from './schema.js';
import { planShards, type EncodedShard, type ShardEncoding, type ShardLayout, type ShardSpec } from './shard-codec.js';

export class ShardConflictError extends Error {
  override readonly name = 'ShardConflictError';
}

export interface CacheAssemblerOptions {
  readonly root: string;
  readonly teacher: TeacherRef;
  readonly dataset: { readonly fingerprint: string; readonly rows: number };
  readonly preprocessing: string;
  readonly temperature: number;
  readonly storage: StorageInput;
  readonly labelStatistics: boolean;
  /** A view cache: `views.count` rows per image, image-major; `layout` must hold whole images. */
  readonly views?: ViewSpecInput | undefined;
  readonly layout: ShardLayout;
  readonly producer?: { readonly name: string; readonly version: string };
  /** fsync each shard, progress.json and the manifest (default true). */
  readonly fsync?: boolean;
}

export type AcceptOutcome = 'written' | 'duplicate';

export class CacheAssembler {
  readonly key: string;
  readonly dir: string;
  readonly storage: Storage;
  readonly views: ViewSpec | undefined;
  /** Shards over the cache's rows: dataset rows × views per image. */
  readonly plan: readonly ShardSpec[];
  readonly #o: CacheAssemblerOptions;
  readonly #shards = new Map<number, Shard>();
  /** Shards being written: a concurrent copy of the same shard waits for the first. */
  readonly #writing = new Map<number, Promise<void>>();
  #progress: Promise<void> = Promise.resolve();
  #closed = false;

  private constructor(o: CacheAssemblerOptions, key: string, storage: Storage, views: ViewSpec | undefined, plan: ShardSpec[], shards: Shard[]) {
    this.#o = o;
    this.key = key;
    this.dir = join(o.root, key);
    this.storage = storage;
    this.views = views;
    this.plan = plan;
    for (const s of shards) this.#shards.set(indexOf(s.file), s);
  }

  static async open(o: CacheAssemblerOptions): Promise<CacheAssembler> {
    assertTemperature(o.temperature);
    const storage = StorageSchema.parse(o.storage);
    const views = o.views === undefined ? undefined : ViewSpecSchema.parse(o.views);
    const K = views?.count ?? 1;
    if (o.layout.shardRows % K !== 0 || o.layout.batchRows % K !== 0) throw new RangeError(`shards of ${o.layout.shardRows} rows in batches of ${o.layout.batchRows} would split an image's ${K} views; use a layout from shardLayout(…, { viewCount: ${K} })`);
    const plan = planShards(o.dataset.rows * K, o.layout);
    const { key, recovered } = await claimCacheDir(
      o.root,
      { teacherSha256: o.teacher.sha256, datasetFingerprint: o.dataset.fingerprint, preprocessing: o.preprocessing, temperature: o.temperature, storage, views },
      (dir, k) => recover(dir, k, plan),
    );
    return new CacheAssembler(o, key, storage, views, plan, recovered);
  }

  /** What every shard of this cache must look like (for `inspectCacheShard`). */
  get encoding(): ShardEncoding {
    return { storage: this.storage, classes: this.#o.teacher.classes.length, temperature: this.#o.temperature, labelStatistics: this.#o.labelStatistics, views: this.views };
  }

  has(index: number): boolean {
    return this.#shards.has(index);
  }

  shard(index: number): Shard | undefined {
    return this.#shards.get(index);
  }

  /** Planned shards not yet durable. */
  missing(): ShardSpec[] {
    return this.plan.filter((s) => !this.#shards.has(s.index));
  }

  get doneRows(): number {
    let n = 0;
    for (const s of this.#shards.values()) n += s.rows;
    return n;
  }

  get complete(): boolean {
    return this.#shards.size === this.plan.length;
  }

  /**
   * Write an inspected shard as shard `index`. Resolves once the shard and its progress record
   * are durable. The same bytes again: 'duplicate', nothing written. Different bytes for a shard
   * already held: ShardConflictError, nothing written.
   */
  async accept(index: number, shard: EncodedShard): Promise<AcceptOutcome> {
    if (this.#closed) throw new Error('CacheAssembler is closed');
    const spec = this.plan[index];
    if (spec === undefined) throw new RangeError(`cache ${this.key} has ${this.plan.length} shards; there is no shard ${index}`);
    if (shard.rows !== spec.rows) throw new RangeError(`shard ${index} holds ${shard.rows} rows; it should hold ${spec.rows}`);
    await this.#writing.get(index);
    const held = this.#shards.get(index);
    if (held !== undefined) {
      if (held.sha256 === shard.sha256) return 'duplicate';
      throw new ShardConflictError(`shard ${index} of cache ${this.key} is already stored with sha256 ${held.sha256}; a copy with sha256 ${shard.sha256} was refused`);
    }
    const file = shardFileName(index);
    const write = (async () => {
      await writeFileAtomic(join(this.dir, file), shard.bytes, { fsync: this.#o.fsync ?? true });
      this.#shards.set(index, { file, rows: shard.rows, bytes: shard.bytes.byteLength, sha256: shard.sha256, firstId: shard.firstId, lastId: shard.lastId });
      await this.#recordProgress();
    })();
    this.#writing.set(index, write.catch(() => undefined));
    try {
      await write;
    } finally {
      this.#writing.delete(index);
    }
    return 'written';
  }

  /** Progress writes run one at a time, each with every shard durable when it starts. */
  #recordProgress(): Promise<void> {
    const next = this.#progress.then(() => {
      const progress: CacheProgress = { ...this.#body(), complete: false };
      return writeFileAtomic(join(this.dir, PROGRESS_FILE), JSON.stringify(progress, null, 2), { fsync: this.#o.fsync ?? true });
    });
    this.#progress = next.catch(() => undefined);
    return next;
  }

  #body(): Omit<CacheProgress, 'complete'> {
    const o = this.#o;
    const shards = [...this.#shards.entries()].sort((a, b) => a[0] - b[0]).map(([, s]) => s);
    return cacheRecordBody({ ...o, key: this.key, storage: this.storage, views: this.views, producer: o.producer ?? PRODUCER, shards });
  }

  /** Write the manifest (last, atomically) once every shard is durable, and release the directory. */
  async finish(): Promise<CacheManifest> {
    if (!this.complete) throw new Error(`cache ${this.key}: ${this.missing().length} of ${this.plan.length} shards are missing`);
    await Promise.all(this.#writing.values());
    await this.#progress;
    const manifest = CacheManifestSchema.parse({ ...this.#body(), createdAt: new Date().toISOString(), complete: true });
    await writeFileAtomic(join(this.dir, MANIFEST_FILE), JSON.stringify(manifest, null, 2), { fsync: this.#o.fsync ?? true });
    await rm(join(this.dir, PROGRESS_FILE), { force: true });
    await this.release();
    return manifest;
  }

  /** Stop without a manifest; durable shards stay for a later resume. */
  async release(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.all(this.#writing.values());
    await this.#progress;
    await rm(join(this.dir, LOCK_FILE), { force: true });
  }
}

function indexOf(file: string): number {
  return Number.parseInt(/^part-(\d+)\.arrow$/.exec(file)![1]!, 10);
}

/**
 * The shards progress.json lists that still match the plan and their hash, in any order;
 * everything else in the directory (temp files, unlisted or damaged shards) is removed.
 */
async function recover(dir: string, key: string, plan: readonly ShardSpec[]): Promise<Shard[]> {
  const kept: Shard[] = [];
  const raw = await readFile(join(dir, PROGRESS_FILE), 'utf8').catch(() => undefined);
  let parsed: ReturnType<typeof CacheProgressSchema.safeParse> | undefined;
  try {
    parsed = raw === undefined ? undefined : CacheProgressSchema.safeParse(JSON.parse(raw));
  } catch {
    parsed = undefined;
  }
  if (parsed?.success === true && parsed.data.key === key) {
    for (const shard of parsed.data.shards) {
      const spec = plan[indexOf(shard.file)];
      if (spec === undefined || spec.rows !== shard.rows) continue;
      const actual = await sha256File(join(dir, shard.file)).catch(() => undefined);
      if (actual?.sha256 === shard.sha256 && actual.bytes === shard.bytes) kept.push(shard);
    }
  }
  const keep = new Set([...kept.map((s) => s.file), PROGRESS_FILE, LOCK_FILE]);
  for (const name of await readdir(dir)) if (!keep.has(name)) await rm(join(dir, name), { force: true, recursive: true });
  return kept;
}
