import { featureSize } from '../features.js';
import { createHash } from 'node:crypto';
import { readFile, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { RecordBatch } from 'apache-arrow';
import { decodeFloat16 } from '../float16.js';
import { idAt, listColumn, primitiveColumn, readArrowBytes, readArrowFile, readWholeFile, sha256File, varListColumn, type Ids } from '../internal/arrow-io.js';
import { segmentOf } from '../internal/offsets.js';
import { assertTemperature } from '../numerics.js';
import { CacheIntegrityError, CacheNotFoundError } from './errors.js';
import { CacheManifestSchema, MANIFEST_FILE, type CacheManifest, type Shard } from './manifest.js';

interface LogitBatchBase {
  readonly rows: number;
  readonly ids: Ids;
  /** The shard file these rows came from and the index of the first row within it. */
  readonly file: string;
  readonly rowInShard: number;
  /** Present only for caches written by label jobs. */
  readonly stats?: {
    readonly pseudoLabel: Int32Array;
    readonly confidence: Float32Array;
    readonly entropy: Float32Array;
    readonly margin: Float32Array;
  };
  /** Present only for view caches: each row's view index and transform (views.ts). */
  /** The stored teacher features of these rows, one [rows, size] array per manifest `features` entry. */
  readonly features?: readonly Float32Array[];
  readonly views?: {
    readonly view: Int32Array;
    readonly dx: Int32Array;
    readonly dy: Int32Array;
    readonly flip: Int32Array;
  };
}

export interface DenseLogitBatch extends LogitBatchBase {
  readonly kind: 'dense';
  /** [rows, C] teacher logits divided by the requested temperature. */
  readonly logits: Float32Array;
}

export interface TopKLogitBatch extends LogitBatchBase {
  readonly kind: 'topk';
  readonly k: number;
  /** [rows, k] class indices, descending by logit. */
  readonly indices: Uint32Array;
  /** [rows, k] kept logits / T. */
  readonly logits: Float32Array;
  /** [rows] log Σ_c exp(z_c / T) over all C classes: p_kept = exp(logit − logsumexp). */
  readonly logsumexp: Float32Array;
}

export type LogitBatch = DenseLogitBatch | TopKLogitBatch;

/**
 * A sampled token cache's rows (sampling.ts): per position the distinct ids drawn, their counts
 * and log-probabilities. Row r's entries are [offsets[r], offsets[r + 1]); within a row, position
 * p's are the next `unique[r × positions + p]` entries.
 */
export interface SampledLogitBatch {
  readonly rows: number;
  readonly ids: Ids;
  /** The shard file this batch came from, and the batch's first row within it. */
  readonly file: string;
  readonly rowInShard: number;
  readonly positions: number;
  /** Draws per position. */
  readonly n: number;
  readonly unique: Uint8Array;
  readonly offsets: Int32Array;
  readonly indices: Uint16Array | Uint32Array;
  readonly counts: Uint8Array;
  /** log softmax(z / T) of each kept id, at the cache's temperature. */
  readonly logprobs: Float32Array;
}

export type VerifyMode = 'lazy' | 'eager' | 'none';

export interface LogitCacheReaderOptions {
  /**
   * When to check shard sha256s. `lazy` (default) hashes each shard just before streaming it;
   * `eager` hashes all shards in `open()`; `none` trusts the files.
   */
  readonly verify?: VerifyMode;
  /**
   * Read every shard into one reused buffer. Faster (no fresh memory per shard: on this
   * machine page faults made fresh buffers ~5× slower to fill), but a batch's arrays are only
   * valid until the next batch is requested: copy what you keep. Default false.
   */
  readonly recycleBuffers?: boolean;
}

async function readManifest(dir: string): Promise<CacheManifest> {
  let raw: string;
  try {
    raw = await readFile(join(dir, MANIFEST_FILE), 'utf8');
  } catch {
    throw new CacheNotFoundError(`${dir} is not a logit cache: it has no ${MANIFEST_FILE} (an interrupted job leaves none)`);
  }
  let json: unknown;
  try {
    json = JSON.parse(raw);
  } catch (err) {
    throw new CacheIntegrityError(`${join(dir, MANIFEST_FILE)}: not valid JSON (${(err as Error).message})`);
  }
  const parsed = CacheManifestSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new CacheIntegrityError(`${join(dir, MANIFEST_FILE)}: not a complete cache manifest (${issue?.path.join('.') || 'root'}: ${issue?.message})`);
  }
  return parsed.data;
}

/**
 * Shards up to this size are read whole with one readFile and verified from memory, then cut
 * into zero-copy batches: one read instead of a hash pass plus a read pass, and no per-batch
 * allocation. Memory is bounded by the shard size (16 MiB by default), not the cache size.
 * Larger shards are hashed and then streamed through a FileHandle.
 */
const WHOLE_SHARD_LIMIT = 256 << 20;

function checkShardInMemory(path: string, shard: Shard, bytes: Uint8Array, verifyHash: boolean): void {
  if (bytes.byteLength !== shard.bytes) {
    throw new CacheIntegrityError(`${path}: shard is ${bytes.byteLength} bytes but the manifest says ${shard.bytes} (truncated or overwritten)`);
  }
  if (!verifyHash) return;
  const sha256 = createHash('sha256').update(bytes).digest('hex');
  if (sha256 !== shard.sha256) throw new CacheIntegrityError(`${path}: sha256 ${sha256} does not match the manifest's ${shard.sha256} (corrupted)`);
}

async function checkShardBytes(dir: string, shard: Shard): Promise<void> {
  const path = join(dir, shard.file);
  let info;
  try {
    info = await stat(path);
  } catch {
    throw new CacheIntegrityError(`${path}: shard listed in the manifest is missing`);
  }
  if (info.size !== shard.bytes) {
    throw new CacheIntegrityError(`${path}: shard is ${info.size} bytes but the manifest says ${shard.bytes} (truncated or overwritten)`);
  }
  const { sha256 } = await sha256File(path);
  if (sha256 !== shard.sha256) {
    throw new CacheIntegrityError(`${path}: sha256 ${sha256} does not match the manifest's ${shard.sha256} (corrupted)`);
  }
}

/**
 * Streams a complete logit cache, shard by shard and batch by batch. Float32 dense logits at
 * the stored temperature are zero-copy views of the file's record batches; float16 values and
 * temperature-rescaled values are decoded into fresh arrays per batch.
 */
export class LogitCacheReader {
  readonly dir: string;
  readonly manifest: CacheManifest;
  readonly #verify: VerifyMode;
  readonly #recycle: boolean;

  private constructor(dir: string, manifest: CacheManifest, verify: VerifyMode, recycle: boolean) {
    this.dir = dir;
    this.manifest = manifest;
    this.#verify = verify;
    this.#recycle = recycle;
  }

  static async open(dir: string, options: LogitCacheReaderOptions = {}): Promise<LogitCacheReader> {
    const manifest = await readManifest(dir);
    const verify = options.verify ?? 'lazy';
    if (verify === 'eager') for (const shard of manifest.shards) await checkShardBytes(dir, shard);
    return new LogitCacheReader(dir, manifest, verify, options.recycleBuffers ?? false);
  }

  get key(): string {
    return this.manifest.key;
  }

  get classes(): readonly string[] {
    return this.manifest.teacher.classes;
  }

  /** Rows of the dataset it covers (the cache itself holds rows × viewCount). */
  get rows(): number {
    return this.manifest.dataset.rows;
  }

  /** Views per image: 1 for a plain cache. */
  get viewCount(): number {
    return this.manifest.views?.count ?? 1;
  }

  /**
   * Yield batches with logits at `temperature` (default: the stored one). Dense caches rescale
   * exactly (z/T' = (z/T)·T/T'). Top-k caches cannot: the tail mass at T' needs the logits that
   * were dropped, so they refuse any other temperature.
   */
  async *batches(options: { temperature?: number; from?: number } = {}): AsyncGenerator<LogitBatch, void, undefined> {
    const m = this.manifest;
    const firstShard = options.from === undefined || options.from === 0 ? 0 : this.#shardOf(options.from);
    const T = options.temperature ?? m.temperature;
    assertTemperature(T);
    if (m.storage.mode === 'sampled') throw new RangeError(`cache ${m.key} is a sampled token cache: read it with sampledBatches()`);
    if (m.storage.mode === 'topk' && T !== m.temperature) {
      throw new RangeError(
        `cache ${m.key} stores top-${m.storage.k} logits at T = ${m.temperature}; it cannot be read at T = ${T} (the dropped tail is not stored). Rebuild it at T = ${T} or use dense storage.`,
      );
    }
    const factor = m.temperature / T;
    for await (const { batch, path, file, row } of this.#recordBatches(firstShard)) {
      let out: LogitBatch;
      try {
        out = this.#decode(batch, path, file, row, factor);
      } catch (err) {
        if (err instanceof CacheIntegrityError || err instanceof RangeError) throw err;
        throw new CacheIntegrityError(`${path}: unreadable shard (${err instanceof Error ? err.message : String(err)})`);
      }
      yield out;
    }
  }

  /** A sampled token cache's batches, shard by shard (hashes checked as `batches` does). */
  async *sampledBatches(): AsyncGenerator<SampledLogitBatch, void, undefined> {
    const m = this.manifest;
    if (m.storage.mode !== 'sampled' || m.tokens === undefined) throw new RangeError(`cache ${m.key} is not a sampled token cache (storage ${m.storage.mode})`);
    const n = m.storage.n;
    const positions = m.tokens.positions;
    for await (const { batch, path, file, row } of this.#recordBatches(0)) {
      const index = varListColumn<Uint16Array | Uint32Array>(batch, 'sample_index', path);
      yield {
        rows: batch.numRows,
        ids: primitiveColumn<Ids>(batch, 'id', path),
        file,
        rowInShard: row,
        positions,
        n,
        unique: listColumn<Uint8Array>(batch, 'sample_unique', path).values,
        offsets: index.offsets,
        indices: index.values,
        counts: varListColumn<Uint8Array>(batch, 'sample_count', path).values,
        logprobs: decodeFloat16(varListColumn<Uint16Array>(batch, 'sample_logprob', path).values),
      };
    }
  }

  /** Every record batch from shard `firstShard` on, each shard checked against the manifest. */
  async *#recordBatches(firstShard: number): AsyncGenerator<{ batch: RecordBatch; path: string; file: string; row: number }, void, undefined> {
    const m = this.manifest;
    let recycled: Buffer | undefined;
    for (const shard of m.shards.slice(firstShard)) {
      const path = join(this.dir, shard.file);
      let row = 0;
      try {
        let batches: Iterable<RecordBatch> | AsyncIterable<RecordBatch>;
        if (shard.bytes <= WHOLE_SHARD_LIMIT) {
          let bytes: Buffer;
          try {
            bytes = await readWholeFile(path, recycled);
            if (this.#recycle && (recycled === undefined || bytes.length > recycled.length)) recycled = bytes;
          } catch {
            throw new CacheIntegrityError(`${path}: shard listed in the manifest is missing`);
          }
          checkShardInMemory(path, shard, bytes, this.#verify === 'lazy');
          batches = readArrowBytes(bytes);
        } else {
          if (this.#verify === 'lazy') await checkShardBytes(this.dir, shard);
          batches = readArrowFile(path);
        }
        for await (const batch of batches) {
          const ids = primitiveColumn<Ids>(batch, 'id', path);
          if (row === 0 && batch.numRows > 0 && idAt(ids, 0) !== shard.firstId) {
            throw new CacheIntegrityError(`${path}: first id ${idAt(ids, 0)} does not match the manifest's ${shard.firstId}`);
          }
          const at = row;
          row += batch.numRows;
          yield { batch, path, file: shard.file, row: at };
        }
      } catch (err) {
        if (err instanceof CacheIntegrityError || err instanceof RangeError) throw err;
        throw new CacheIntegrityError(`${path}: unreadable shard (${err instanceof Error ? err.message : String(err)})`);
      }
      if (row !== shard.rows) throw new CacheIntegrityError(`${path}: holds ${row} rows but the manifest says ${shard.rows}`);
    }
  }

  [Symbol.asyncIterator](): AsyncGenerator<LogitBatch, void, undefined> {
    return this.batches();
  }

  /** First row of each shard, then the row count. */
  shardOffsets(): number[] {
    const offsets = [0];
    for (const s of this.manifest.shards) offsets.push(offsets.at(-1)! + s.rows);
    return offsets;
  }

  #shardOf(row: number): number {
    return segmentOf(this.shardOffsets(), row, `cache ${this.manifest.key}`);
  }

  /** First row of the shard that holds `row`: where `batches({ from: row })` starts. */
  shardStart(row: number): number {
    return this.shardOffsets()[this.#shardOf(row)]!;
  }

  #decode(batch: RecordBatch, path: string, file: string, rowInShard: number, factor: number): LogitBatch {
    const m = this.manifest;
    const rows = batch.numRows;
    const ids = primitiveColumn<Ids>(batch, 'id', path);
    const stats = m.labelStatistics
      ? {
          pseudoLabel: primitiveColumn<Int32Array>(batch, 'pseudo_label', path),
          confidence: primitiveColumn<Float32Array>(batch, 'confidence', path),
          entropy: primitiveColumn<Float32Array>(batch, 'entropy', path),
          margin: primitiveColumn<Float32Array>(batch, 'margin', path),
        }
      : undefined;
    const views =
      m.views === undefined
        ? undefined
        : {
            view: primitiveColumn<Int32Array>(batch, 'view', path),
            dx: primitiveColumn<Int32Array>(batch, 'dx', path),
            dy: primitiveColumn<Int32Array>(batch, 'dy', path),
            flip: primitiveColumn<Int32Array>(batch, 'flip', path),
          };
    const features = m.features?.map((f, i) => {
      const col = listColumn<Float32Array | Uint16Array>(batch, `feature_${i}`, path);
      if (col.size !== featureSize(f)) throw new CacheIntegrityError(`${path}: column feature_${i} has lists of ${col.size}, expected ${featureSize(f)}`);
      return col.values instanceof Uint16Array ? decodeFloat16(col.values) : col.values;
    });
    const base = {
      rows,
      ids,
      file,
      rowInShard,
      ...(stats === undefined ? {} : { stats }),
      ...(views === undefined ? {} : { views }),
      ...(features === undefined ? {} : { features }),
    };
    const values = (name: string, size: number): Float32Array => {
      const col = listColumn<Float32Array | Uint16Array>(batch, name, path);
      if (col.size !== size) throw new CacheIntegrityError(`${path}: column ${name} has lists of ${col.size}, expected ${size}`);
      let out = col.values instanceof Uint16Array ? decodeFloat16(col.values) : col.values;
      if (factor !== 1) {
        out = out === col.values ? new Float32Array(out) : out;
        for (let i = 0; i < out.length; i++) out[i]! *= factor;
      }
      return out;
    };
    // A token cache: every row holds `positions` entries of what a class cache's row holds.
    const P = m.tokens?.positions ?? 1;
    if (m.storage.mode === 'dense') {
      return { kind: 'dense', ...base, logits: values('logits', P * (m.tokens?.vocabSize ?? m.teacher.classes.length)) };
    }
    if (m.storage.mode !== 'topk') throw new RangeError(`cache ${m.key} is a sampled token cache: read it with sampledBatches()`);
    const k = m.storage.k;
    const indices = listColumn<Uint32Array | Uint16Array>(batch, 'topk_index', path);
    if (indices.size !== P * k) throw new CacheIntegrityError(`${path}: topk_index has lists of ${indices.size}, expected ${P * k}`);
    return {
      kind: 'topk',
      ...base,
      k,
      indices: indices.values instanceof Uint32Array ? indices.values : Uint32Array.from(indices.values),
      logits: values('topk_logit', P * k),
      logsumexp: P === 1 ? primitiveColumn<Float32Array>(batch, 'logsumexp', path) : listColumn<Float32Array>(batch, 'logsumexp', path).values,
    };
  }
}

export interface CacheEntry {
  readonly key: string;
  readonly dir: string;
  readonly manifest: CacheManifest;
}

/** Complete caches under `root`. Directories without a complete manifest are skipped. */
export async function listCaches(root: string): Promise<CacheEntry[]> {
  let names: string[];
  try {
    names = await readdir(root);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  const out: CacheEntry[] = [];
  for (const name of names.sort()) {
    const dir = join(root, name);
    try {
      const manifest = await readManifest(dir);
      if (manifest.key === name) out.push({ key: name, dir, manifest });
    } catch {
      // not a cache (yet): an interrupted job, or an unrelated directory
    }
  }
  return out;
}

/** Open the complete cache `<root>/<key>` if there is one. */
export async function findCache(root: string, key: string): Promise<CacheEntry | undefined> {
  const dir = join(root, key);
  try {
    return { key, dir, manifest: await readManifest(dir) };
  } catch (err) {
    if (err instanceof CacheNotFoundError) return undefined;
    throw err;
  }
}

export interface CacheVerification {
  readonly ok: boolean;
  readonly dir: string;
  readonly key?: string;
  readonly rows: number;
  readonly problems: readonly string[];
}

/**
 * Full check of a cache: manifest, every shard's size and sha256, row counts, and ids in
 * ascending shard order. Never throws for a bad cache; it reports the problems.
 */
export async function verifyCache(dir: string): Promise<CacheVerification> {
  const problems: string[] = [];
  let manifest: CacheManifest;
  try {
    manifest = await readManifest(dir);
  } catch (err) {
    return { ok: false, dir, rows: 0, problems: [(err as Error).message] };
  }
  if (manifest.key !== dir.split(/[\\/]/).filter(Boolean).at(-1)) {
    problems.push(`${dir}: directory name does not match manifest key ${manifest.key}`);
  }
  let rows = 0;
  for (const shard of manifest.shards) {
    try {
      await checkShardBytes(dir, shard);
    } catch (err) {
      problems.push((err as Error).message);
    }
  }
  if (problems.length === 0) {
    try {
      const reader = await LogitCacheReader.open(dir, { verify: 'none' });
      const byFile = new Map(manifest.shards.map((s) => [s.file, s]));
      for await (const b of manifest.storage.mode === 'sampled' ? reader.sampledBatches() : reader.batches()) {
        rows += b.rows;
        const shard = byFile.get(b.file);
        const last = idAt(b.ids, b.rows - 1);
        if (shard !== undefined && b.rowInShard + b.rows === shard.rows && last !== shard.lastId) {
          problems.push(`${join(dir, b.file)}: last id ${last} does not match the manifest's ${shard.lastId}`);
        }
      }
    } catch (err) {
      problems.push((err as Error).message);
    }
    const expected = manifest.dataset.rows * (manifest.views?.count ?? 1);
    if (problems.length === 0 && rows !== expected) {
      problems.push(
        `${dir}: shards hold ${rows} rows but the dataset${manifest.views === undefined ? ' has' : ` × ${manifest.views.count} views needs`} ${expected}`,
      );
    }
  }
  return { ok: problems.length === 0, dir, key: manifest.key, rows, problems };
}
