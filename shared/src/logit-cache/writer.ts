import type { Schema } from 'apache-arrow';
import { idAt, recordBatch, type AtomicArrowFileWriter, type Ids } from '../internal/arrow-io.js';
import { assertTemperature } from '../numerics.js';
import { PRODUCER } from '../version.js';
import { CacheIntegrityError } from './errors.js';
import { CacheCommitter } from './committer.js';
import { CacheManifestSchema, StorageSchema, cacheRecordBody, type CacheManifest, type Storage, type StorageInput, type TeacherRef } from './manifest.js';
import { cacheShardSchema, shardFileName } from './schema.js';
import { countTokens, featureBytes, shardBatchColumns, shardLayout } from './shard-codec.js';
import { featureSize, type StoredFeature } from '../features.js';
import { ViewSpecSchema, type ViewSpec, type ViewSpecInput } from '../views.js';
import type { TokenizerRef } from '../text/tokenizer.js';

export interface LogitCacheWriterOptions {
  /** Directory that holds caches; this cache goes to `<root>/<key>/`. */
  readonly root: string;
  readonly teacher: TeacherRef;
  readonly dataset: { readonly fingerprint: string; readonly rows: number };
  readonly preprocessing: string;
  readonly temperature: number;
  readonly storage: StorageInput;
  /** Also store pseudo_label, confidence, entropy and margin (computed at T = 1). */
  readonly labelStatistics?: boolean;
  /**
   * A view cache: rows arrive image-major, `views.count` per image (view 0, 1, … of the image,
   * as drawn by `drawView`), and the writer stores each row's view index and parameters.
   */
  readonly views?: ViewSpecInput | undefined;
  /**
   * A token cache: each row is a block of `positions` tokens of a token dataset, `append` takes
   * [rows, positions, vocabSize] logits and the blocks' tokens (−1 = padding), and every column
   * holds one entry per position. `teacher.classes` is then empty.
   */
  readonly tokens?: { readonly positions: number; readonly vocabSize: number; readonly tokenizer: TokenizerRef } | undefined;
  /**
   * Teacher features stored next to the logits (features.ts): `append` then takes each row's
   * stored (already pooled) values of every feature, in this order.
   */
  readonly features?: readonly StoredFeature[] | undefined;
  /**
   * Rows per shard file. Default: as many rows as fit in 16 MiB (a multiple of batchRows). A
   * crash loses at most one shard of work; small shards let one shard's fsync overlap the next
   * one's encoding, and readers load a shard whole into a buffer small enough for the allocator
   * to recycle (on this machine a fresh 64 MiB buffer read 5× slower than a reused one; see
   * BENCHMARKS.md).
   */
  readonly shardRows?: number;
  /** Rows per Arrow record batch inside a shard (default 4,096). */
  readonly batchRows?: number;
  readonly producer?: { readonly name: string; readonly version: string };
  /**
   * fsync each shard, progress.json and the manifest (default true; committer.ts). false still
   * writes atomically (temp file + rename: a killed process never leaves a partial shard) but a
   * power loss may drop recent shards; hash checks then refuse the cache instead of reading bad data.
   */
  readonly fsync?: boolean;
}

export { CacheExistsError, CacheLockedError } from './lock.js';

/** Closed shards that may still be draining/fsyncing while the next one is written. */
const MAX_SHARDS_IN_FLIGHT = 2;

/** One record batch's worth of buffers. Recycled once the batch is on disk: allocating
 * (and page-faulting) fresh multi-megabyte arrays per batch costs more than the encoding. */
interface BatchBuffers {
  ids: Ids;
  /** [batchRows, C] z / T. */
  scaled: Float32Array;
  /** [batchRows, C] raw z, kept only for label statistics. */
  raw: Float32Array | undefined;
  /** [batchRows, C] float16 bits of `scaled`, for dense float16 storage. */
  half: Uint16Array<ArrayBuffer> | undefined;
  /** Token caches: [batchRows, positions] token ids (−1 = padding). */
  tokens: Int32Array | undefined;
  /** [batchRows, size] per stored feature. */
  features: Float32Array[];
}

/**
 * Writes one logit cache as a stream of rows, through the cache-writing protocol
 * (committer.ts): shards of Arrow IPC files, each renamed into place only when complete and
 * recorded in `progress.json`, then `manifest.json` last. A writer reopened on the same key
 * after a crash resumes from `resumedRows`.
 *
 * `append` takes *raw* teacher logits; the writer stores z / T.
 */
export class LogitCacheWriter {
  readonly key: string;
  readonly dir: string;
  /** Classes, or a token cache's vocabulary size. */
  readonly classes: number;
  /** Logits per row: classes, or positions × vocabulary size. */
  readonly rowValues: number;
  readonly storage: Storage;
  readonly views: ViewSpec | undefined;
  /** Rows already durable from an earlier, interrupted run. The caller skips these rows. */
  readonly resumedRows: number;

  readonly #opts: LogitCacheWriterOptions;
  readonly #committer: CacheCommitter<CacheManifest>;
  readonly #labelStats: boolean;
  readonly #shardRows: number;
  readonly #batchRows: number;
  #schema: Schema | undefined;
  #idType: 'int32' | 'int64' | undefined;
  #pending: BatchBuffers | undefined;
  readonly #pool: BatchBuffers[] = [];
  #pendingRows = 0;
  #shard: AtomicArrowFileWriter | undefined;
  #shardFirstId = 0;
  /** Non-padding positions in the open shard (token caches). */
  #shardTokens = 0;
  #lastId = 0;
  #rowsClosed: number;
  #nextShard: number;
  #durable: Promise<void> = Promise.resolve();
  readonly #closing: Promise<void>[] = [];
  #failure: unknown;
  #closed = false;

  private constructor(opts: LogitCacheWriterOptions, committer: CacheCommitter<CacheManifest>, storage: Storage, views: ViewSpec | undefined) {
    this.#opts = opts;
    this.#committer = committer;
    this.key = committer.key;
    this.dir = committer.dir;
    this.classes = opts.tokens?.vocabSize ?? opts.teacher.classes.length;
    this.rowValues = (opts.tokens?.positions ?? 1) * this.classes;
    this.storage = storage;
    this.#labelStats = opts.labelStatistics ?? false;
    this.views = views;
    const layout = shardLayout(storage, this.classes, {
      ...(opts.shardRows === undefined ? {} : { shardRows: opts.shardRows }),
      ...(opts.batchRows === undefined ? {} : { batchRows: opts.batchRows }),
      ...(this.views === undefined ? {} : { viewCount: this.views.count }),
      ...(opts.tokens === undefined ? {} : { positions: opts.tokens.positions }),
      ...(opts.features === undefined ? {} : { featureBytes: featureBytes(opts.features) }),
    });
    this.#shardRows = layout.shardRows;
    this.#batchRows = layout.batchRows;
    const shards = committer.shards;
    this.resumedRows = committer.rows;
    this.#rowsClosed = this.resumedRows;
    this.#nextShard = shards.length;
    this.#lastId = shards.at(-1)?.lastId ?? 0;
  }

  static async open(opts: LogitCacheWriterOptions): Promise<LogitCacheWriter> {
    assertTemperature(opts.temperature);
    const storage = StorageSchema.parse(opts.storage);
    const C = opts.tokens?.vocabSize ?? opts.teacher.classes.length;
    if (C < 1) throw new RangeError(`teacher ${opts.teacher.name} lists no classes`);
    if (storage.mode === 'topk' && storage.k > C) throw new RangeError(`top-k storage with k = ${storage.k} needs at least k classes; the teacher has ${C}`);
    if (storage.mode === 'sampled' && opts.tokens === undefined)
      throw new RangeError('sampled storage is for token caches (a language-model teacher over a token dataset)');
    if (opts.tokens !== undefined && opts.views !== undefined) throw new RangeError('a token cache has no views');
    if (opts.shardRows !== undefined && !(Number.isInteger(opts.shardRows) && opts.shardRows > 0)) throw new RangeError(`shardRows must be a positive integer`);
    const views = opts.views === undefined ? undefined : ViewSpecSchema.parse(opts.views);
    const labelStatistics = opts.labelStatistics ?? false;
    const committer = await CacheCommitter.open({
      root: opts.root,
      key: {
        teacherSha256: opts.teacher.sha256,
        datasetFingerprint: opts.dataset.fingerprint,
        preprocessing: opts.preprocessing,
        temperature: opts.temperature,
        storage,
        views: opts.views,
        positions: opts.tokens?.positions,
        features: opts.features,
      },
      ...(opts.fsync === undefined ? {} : { fsync: opts.fsync }),
      record: (shards, key) => cacheRecordBody({ ...opts, key, storage, labelStatistics, producer: opts.producer ?? PRODUCER, views, shards: [...shards] }),
      manifest: CacheManifestSchema,
    });
    return new LogitCacheWriter(opts, committer, storage, views);
  }

  get rowsWritten(): number {
    return this.#rowsClosed + this.#pendingRows + (this.#shard?.rows ?? 0);
  }

  /** Append rows of raw teacher logits ([rows, C] row-major; token caches: [rows, positions, V] and the rows' tokens). */
  async append(batch: { ids: Ids; logits: Float32Array; tokens?: Int32Array; features?: readonly Float32Array[] }): Promise<void> {
    if (this.#closed) throw new Error('LogitCacheWriter is closed');
    if (this.#failure !== undefined) throw this.#failure;
    const rows = batch.ids.length;
    const C = this.rowValues;
    if (batch.logits.length !== rows * C) throw new RangeError(`logits hold ${batch.logits.length} values; ${rows} rows × ${C} values needs ${rows * C}`);
    const P = this.#opts.tokens?.positions;
    if ((P === undefined) !== (batch.tokens === undefined))
      throw new TypeError(P === undefined ? 'tokens are for token caches' : "a token cache needs each row's tokens");
    if (P !== undefined && batch.tokens!.length !== rows * P)
      throw new RangeError(`tokens hold ${batch.tokens!.length} values; ${rows} rows × ${P} positions needs ${rows * P}`);
    const stored = this.#opts.features ?? [];
    if ((batch.features?.length ?? 0) !== stored.length)
      throw new TypeError(`this cache stores ${stored.length} feature(s); the batch has ${batch.features?.length ?? 0}`);
    stored.forEach((f, i) => {
      if (batch.features![i]!.length !== rows * featureSize(f))
        throw new RangeError(`feature ${f.tensor}: ${batch.features![i]!.length} values; ${rows} rows × ${featureSize(f)} needs ${rows * featureSize(f)}`);
    });
    const idType = batch.ids instanceof BigInt64Array ? 'int64' : 'int32';
    this.#idType ??= idType;
    if (idType !== this.#idType) throw new TypeError(`ids changed type from ${this.#idType} to ${idType}`);
    this.#schema ??= cacheShardSchema(this.storage, this.classes, this.#labelStats, idType, this.views !== undefined, P, stored);
    const invT = 1 / this.#opts.temperature;
    let r = 0;
    while (r < rows) {
      const buf = (this.#pending ??= this.#takeBuffers(idType));
      const n = Math.min(rows - r, this.#batchRows - this.#pendingRows);
      (buf.ids as Int32Array).set((batch.ids as Int32Array).subarray(r, r + n), this.#pendingRows);
      const src = batch.logits.subarray(r * C, (r + n) * C);
      if (!scaleInto(src, buf.scaled.subarray(this.#pendingRows * C, (this.#pendingRows + n) * C), invT)) {
        const i = src.findIndex((v) => !Number.isFinite(v));
        throw new RangeError(`row ${idAt(batch.ids, r + Math.floor(i / C))}: teacher logit ${src[i]} is not finite`);
      }
      buf.raw?.set(src, this.#pendingRows * C);
      if (P !== undefined) buf.tokens!.set(batch.tokens!.subarray(r * P, (r + n) * P), this.#pendingRows * P);
      stored.forEach((f, i) => {
        const size = featureSize(f);
        buf.features[i]!.set(batch.features![i]!.subarray(r * size, (r + n) * size), this.#pendingRows * size);
      });
      this.#pendingRows += n;
      r += n;
      if (this.#pendingRows === this.#batchRows) await this.#flushBatch();
    }
  }

  #takeBuffers(idType: 'int32' | 'int64'): BatchBuffers {
    const reused = this.#pool.pop();
    if (reused !== undefined) return reused;
    const size = this.#batchRows * this.rowValues;
    const P = this.#opts.tokens?.positions;
    return {
      tokens: P === undefined ? undefined : new Int32Array(this.#batchRows * P),
      ids: idType === 'int64' ? new BigInt64Array(this.#batchRows) : new Int32Array(this.#batchRows),
      scaled: new Float32Array(size),
      raw: this.#labelStats ? new Float32Array(size) : undefined,
      half: this.storage.mode === 'dense' && this.storage.dtype === 'float16' ? new Uint16Array(size) : undefined,
      features: (this.#opts.features ?? []).map((f) => new Float32Array(this.#batchRows * featureSize(f))),
    };
  }

  async #flushBatch(): Promise<void> {
    const rows = this.#pendingRows;
    const buf = this.#pending;
    if (rows === 0 || buf === undefined || this.#schema === undefined) return;
    const C = this.rowValues;
    const P = this.#opts.tokens?.positions;
    // Dense columns (and the id column) are views of these buffers, which the Arrow writer holds
    // until they reach the file. Top-k and sampled batches copy the ids, and their other columns
    // are new arrays, so the buffers can be reused at once.
    const viewed = this.storage.mode === 'dense';
    const ids = (viewed ? buf.ids.subarray(0, rows) : buf.ids.slice(0, rows)) as Ids;
    const encoding = {
      storage: this.storage,
      classes: this.classes,
      temperature: this.#opts.temperature,
      labelStatistics: this.#labelStats,
      views: this.views,
      positions: P,
      features: this.#opts.features,
    };
    const tokens = P === undefined ? undefined : buf.tokens!.subarray(0, rows * P);
    if (tokens !== undefined) this.#shardTokens += countTokens(tokens);
    const features = (this.#opts.features ?? []).map((f, i) => buf.features[i]!.subarray(0, rows * featureSize(f)));
    const columns = shardBatchColumns(encoding, ids, buf.scaled.subarray(0, rows * C), buf.raw?.subarray(0, rows * C), buf.half, tokens, features);
    if (this.#shard === undefined) {
      this.#shard = this.#committer.shardWriter(this.#nextShard);
      this.#shardFirstId = idAt(ids, 0);
    }
    this.#lastId = idAt(ids, rows - 1);
    this.#pending = undefined;
    this.#pendingRows = 0;
    if (!viewed) this.#pool.push(buf);
    await this.#shard.write(recordBatch(this.#schema, columns), viewed ? () => this.#pool.push(buf) : undefined);
    if (this.#shard.rows >= this.#shardRows) await this.#closeShard();
  }

  /**
   * Close the open shard. Its fsync + rename + progress record run in the background, chained
   * in shard order, so the next shard's encoding overlaps with this one reaching the disk;
   * `finish()` waits for the chain before it writes the manifest.
   */
  async #closeShard(): Promise<void> {
    const shard = this.#shard;
    if (shard === undefined) return;
    // Bound the shards in flight: without this, a producer faster than the disk queues every
    // shard's bytes in memory behind the fsyncs (seen: 4 GB RSS writing a 4 GB cache).
    while (this.#closing.length >= MAX_SHARDS_IN_FLIGHT) await this.#closing.shift();
    this.#shard = undefined;
    const meta = {
      file: shardFileName(this.#nextShard++),
      rows: shard.rows,
      firstId: this.#shardFirstId,
      lastId: this.#lastId,
      ...(this.#opts.tokens === undefined ? {} : { tokens: this.#shardTokens }),
    };
    this.#shardTokens = 0;
    this.#rowsClosed += shard.rows;
    const closing = shard.close();
    closing.catch(() => undefined); // observed through #durable below
    this.#durable = this.#durable.then(async () => {
      const written = await closing;
      await this.#committer.commit({ ...meta, bytes: written.bytes, sha256: written.sha256 });
    });
    this.#durable.catch((err: unknown) => (this.#failure ??= err));
    this.#closing.push(this.#durable.catch(() => undefined));
  }

  /** Wait until every closed shard is renamed into place and recorded in progress.json. */
  async checkpoint(): Promise<number> {
    await this.#durable;
    return this.#committer.rows;
  }

  /** Flush, write the manifest last (atomically), and release the directory. */
  async finish(): Promise<CacheManifest> {
    if (this.#closed) throw new Error('LogitCacheWriter is closed');
    await this.#flushBatch();
    await this.#closeShard();
    await this.#durable;
    const expected = this.#opts.dataset.rows * (this.views?.count ?? 1);
    if (this.#rowsClosed !== expected) {
      await this.abort();
      throw new CacheIntegrityError(
        `cache ${this.key}: wrote ${this.#rowsClosed} rows but the dataset${this.views === undefined ? ' has' : ` × ${this.views.count} views needs`} ${expected}; no manifest written`,
      );
    }
    const manifest = await this.#committer.finish();
    this.#closed = true;
    return manifest;
  }

  /**
   * Stop without a manifest. Durable shards stay for a later resume; rows in the open shard
   * are dropped.
   */
  async abort(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#shard?.abort();
    this.#shard = undefined;
    await this.#durable.catch(() => undefined);
    await this.#committer.release();
  }
}

/** dst = src · factor; false if src holds any non-finite value. Kept small so V8 optimises it. */
function scaleInto(src: Float32Array, dst: Float32Array, factor: number): boolean {
  let bad = 0;
  for (let i = 0; i < src.length; i++) {
    const v = src[i]!;
    bad += v * 0; // stays 0 for finite values, becomes NaN at the first ±Infinity or NaN
    dst[i] = v * factor;
  }
  return bad === 0;
}
