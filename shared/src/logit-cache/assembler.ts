/**
 * Builds a cache from shards that arrive out of order (uploaded by remote workers), through the
 * cache-writing protocol (committer.ts). Each shard is checked by the caller
 * (`inspectCacheShard`), written atomically under its planned file name and recorded in
 * progress.json; the manifest is written last, once every planned shard is durable. A second
 * copy of a shard with the same bytes is accepted and ignored; one with different bytes is
 * refused. Reopened after a crash, it keeps every recorded shard whose bytes still hash correctly.
 */
import { assertTemperature } from '../numerics.js';
import { PRODUCER } from '../version.js';
import { ViewSpecSchema, type ViewSpec, type ViewSpecInput } from '../views.js';
import { CacheCommitter } from './committer.js';
import {
  CacheManifestSchema,
  StorageSchema,
  cacheRecordBody,
  type CacheManifest,
  type Shard,
  type Storage,
  type StorageInput,
  type TeacherRef,
} from './manifest.js';
import type { TokenizerRef } from '../text/tokenizer.js';
import type { StoredFeature } from '../features.js';
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
  /** A token cache: a row is a block of `positions` tokens (as LogitCacheWriterOptions.tokens); `teacher.classes` is then empty. */
  readonly tokens?: { readonly positions: number; readonly vocabSize: number; readonly tokenizer: TokenizerRef } | undefined;
  /** Teacher features stored with the logits (as LogitCacheWriterOptions.features). */
  readonly features?: readonly StoredFeature[] | undefined;
  readonly producer?: { readonly name: string; readonly version: string };
  /** fsync each shard, progress.json and the manifest (default true; committer.ts). */
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
  readonly #committer: CacheCommitter<CacheManifest>;
  /** Shards being written: a concurrent copy of the same shard waits for the first. */
  readonly #writing = new Map<number, Promise<void>>();

  private constructor(o: CacheAssemblerOptions, committer: CacheCommitter<CacheManifest>, storage: Storage, views: ViewSpec | undefined, plan: ShardSpec[]) {
    this.#o = o;
    this.#committer = committer;
    this.key = committer.key;
    this.dir = committer.dir;
    this.storage = storage;
    this.views = views;
    this.plan = plan;
  }

  static async open(o: CacheAssemblerOptions): Promise<CacheAssembler> {
    assertTemperature(o.temperature);
    const storage = StorageSchema.parse(o.storage);
    const views = o.views === undefined ? undefined : ViewSpecSchema.parse(o.views);
    const K = views?.count ?? 1;
    if (storage.mode === 'sampled' && o.tokens === undefined)
      throw new RangeError('sampled storage is for token caches (a language-model teacher over a token dataset)');
    if (o.layout.shardRows % K !== 0 || o.layout.batchRows % K !== 0)
      throw new RangeError(
        `shards of ${o.layout.shardRows} rows in batches of ${o.layout.batchRows} would split an image's ${K} views; use a layout from shardLayout(…, { viewCount: ${K} })`,
      );
    const plan = planShards(o.dataset.rows * K, o.layout);
    const committer = await CacheCommitter.open({
      root: o.root,
      key: {
        teacherSha256: o.teacher.sha256,
        datasetFingerprint: o.dataset.fingerprint,
        preprocessing: o.preprocessing,
        temperature: o.temperature,
        storage,
        views,
        positions: o.tokens?.positions,
        features: o.features,
      },
      ...(o.fsync === undefined ? {} : { fsync: o.fsync }),
      plan,
      record: (shards, key) => cacheRecordBody({ ...o, key, storage, views, producer: o.producer ?? PRODUCER, shards: [...shards] }),
      manifest: CacheManifestSchema,
    });
    return new CacheAssembler(o, committer, storage, views, plan);
  }

  /** What every shard of this cache must look like (for `inspectCacheShard`). */
  get encoding(): ShardEncoding {
    return {
      storage: this.storage,
      classes: this.#o.tokens?.vocabSize ?? this.#o.teacher.classes.length,
      temperature: this.#o.temperature,
      labelStatistics: this.#o.labelStatistics,
      views: this.views,
      positions: this.#o.tokens?.positions,
      features: this.#o.features,
    };
  }

  has(index: number): boolean {
    return this.#committer.shard(index) !== undefined;
  }

  shard(index: number): Shard | undefined {
    return this.#committer.shard(index);
  }

  /** Planned shards not yet durable. */
  missing(): ShardSpec[] {
    return this.plan.filter((s) => !this.has(s.index));
  }

  get doneRows(): number {
    return this.#committer.rows;
  }

  get complete(): boolean {
    return this.missing().length === 0;
  }

  /**
   * Write an inspected shard as shard `index`. Resolves once the shard and its progress record
   * are durable. The same bytes again: 'duplicate', nothing written. Different bytes for a shard
   * already held: ShardConflictError, nothing written.
   */
  async accept(index: number, shard: EncodedShard): Promise<AcceptOutcome> {
    if (this.#committer.closed) throw new Error('CacheAssembler is closed');
    const spec = this.plan[index];
    if (spec === undefined) throw new RangeError(`cache ${this.key} has ${this.plan.length} shards; there is no shard ${index}`);
    if (shard.rows !== spec.rows) throw new RangeError(`shard ${index} holds ${shard.rows} rows; it should hold ${spec.rows}`);
    await this.#writing.get(index);
    const held = this.shard(index);
    if (held !== undefined) {
      if (held.sha256 === shard.sha256) return 'duplicate';
      throw new ShardConflictError(
        `shard ${index} of cache ${this.key} is already stored with sha256 ${held.sha256}; a copy with sha256 ${shard.sha256} was refused`,
      );
    }
    const write = (async () => {
      const file = await this.#committer.writeShard(index, shard.bytes);
      await this.#committer.commit({
        file,
        rows: shard.rows,
        bytes: shard.bytes.byteLength,
        sha256: shard.sha256,
        firstId: shard.firstId,
        lastId: shard.lastId,
        ...(this.#o.tokens === undefined ? {} : { tokens: shard.tokens ?? 0 }),
      });
    })();
    this.#writing.set(
      index,
      write.catch(() => undefined),
    );
    try {
      await write;
    } finally {
      this.#writing.delete(index);
    }
    return 'written';
  }

  /** Write the manifest (last, atomically) once every shard is durable, and release the directory. */
  async finish(): Promise<CacheManifest> {
    if (!this.complete) throw new Error(`cache ${this.key}: ${this.missing().length} of ${this.plan.length} shards are missing`);
    await Promise.all(this.#writing.values());
    return this.#committer.finish();
  }

  /** Stop without a manifest; durable shards stay for a later resume. */
  async release(): Promise<void> {
    await Promise.all(this.#writing.values());
    await this.#committer.release();
  }
}
