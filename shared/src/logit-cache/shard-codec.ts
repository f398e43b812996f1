/**
 * One cache shard as bytes: how its rows split into shards and record batches (the layout),
 * the columns of one record batch, a whole shard encoded in memory (what a remote worker
 * uploads), and the coordinator's check of an uploaded shard. The streaming writer (writer.ts)
 * builds its batches with the same `shardBatchColumns`, so a shard encoded here is byte for byte
 * the shard the in-process writer would have written for the same rows.
 */
import { createHash } from 'node:crypto';
import { Float16, Float32, Int32, RecordBatchFileWriter, Uint16, Uint32, Uint8, makeData, type Data, type Schema } from 'apache-arrow';
import { encodeFloat16 } from '../float16.js';
import { fixedSizeListData, idAt, idData, listColumn, listData, primitiveColumn, readArrowBytes, recordBatch, type Ids } from '../internal/arrow-io.js';
import { labelStatistics, logSumExp, topK } from '../numerics.js';
import { CacheIntegrityError } from './errors.js';
import type { Storage } from './manifest.js';
import { cacheShardSchema, tokenIdType } from './schema.js';
import { sampleRows } from './sampling.js';
import { drawView, type ViewSpec } from '../views.js';
import { featureSize, type StoredFeature } from '../features.js';

/** Rows per shard file and per Arrow record batch inside it. */
export interface ShardLayout {
  readonly shardRows: number;
  readonly batchRows: number;
}

/**
 * The layout for a cache. Default: record batches of up to 4,096 rows and shards of as many
 * whole batches as fit in 16 MiB. A requested `shardRows` is rounded up to whole batches, as the
 * writer closes a shard only between batches.
 */
export function shardLayout(
  storage: Storage,
  classes: number,
  options: { shardRows?: number; batchRows?: number; viewCount?: number; positions?: number; featureBytes?: number } = {},
): ShardLayout {
  // Token caches: a row is a block of `positions` positions. A sampled position holds at most n
  // entries of 5 bytes; the estimate only sizes batches and shards.
  const perPosition =
    storage.mode === 'sampled'
      ? 1 + 5 * Math.min(storage.n, classes)
      : (storage.mode === 'dense' ? classes : storage.k * 2) * (storage.dtype === 'float16' ? 2 : 4) + (storage.mode === 'topk' ? 4 : 0);
  const rowBytes = 4 + (options.positions ?? 1) * perPosition + (options.featureBytes ?? 0);
  // View caches: batches (and so shards) hold whole images, K rows each.
  const K = options.viewCount ?? 1;
  // A token cache's batch buffers hold the full logits ([positions, vocabulary] floats per row)
  // before top-k or sampling shrinks them: bound those to 16 MiB as well.
  const inputBound = options.positions === undefined ? Infinity : Math.floor((16 << 20) / (options.positions * classes * 4));
  const fit = Math.max(1, Math.min(options.batchRows ?? 4096, Math.floor((16 << 20) / rowBytes), inputBound));
  const maxBatch = Math.max(K, fit - (fit % K));
  if (options.shardRows === undefined) {
    return { shardRows: Math.max(1, Math.floor((16 << 20) / rowBytes / maxBatch)) * maxBatch, batchRows: maxBatch };
  }
  const wanted = Math.max(K, options.shardRows - (options.shardRows % K));
  const batchRows = Math.min(maxBatch, wanted);
  return { shardRows: Math.ceil(wanted / batchRows) * batchRows, batchRows };
}

export interface ShardSpec {
  readonly index: number;
  /** First row (0-based position in the dataset). */
  readonly start: number;
  readonly rows: number;
}

/** The shards a cache of `rows` rows consists of, in order. */
export function planShards(rows: number, layout: ShardLayout): ShardSpec[] {
  const out: ShardSpec[] = [];
  for (let start = 0, index = 0; start < rows; start += layout.shardRows, index++) out.push({ index, start, rows: Math.min(layout.shardRows, rows - start) });
  return out;
}

/** What the stored numbers depend on, besides the rows themselves. */
export interface ShardEncoding {
  readonly storage: Storage;
  readonly classes: number;
  readonly temperature: number;
  readonly labelStatistics: boolean;
  /** A view cache: the batch starts at an image's first view and holds whole images. */
  readonly views?: ViewSpec | undefined;
  /** A token cache: positions per row (`classes` is then the vocabulary size). */
  readonly positions?: number | undefined;
  /** Teacher features stored with the logits (column feature_i is features[i]). */
  readonly features?: readonly StoredFeature[] | undefined;
}

/** Bytes per row of the stored features (for shard sizing). */
export function featureBytes(features: readonly StoredFeature[] | undefined): number {
  return (features ?? []).reduce((n, f) => n + featureSize(f) * (f.dtype === 'float16' ? 2 : 4), 0);
}

/**
 * The columns of one record batch. `scaled` is z / T ([rows, C]); `raw` (z) is needed only for
 * label statistics; `half` is scratch for dense float16 values (allocated when absent).
 */
export function shardBatchColumns(
  e: ShardEncoding,
  ids: Ids,
  scaled: Float32Array,
  raw: Float32Array | undefined,
  half?: Uint16Array<ArrayBuffer>,
  tokens?: Int32Array,
  features?: readonly Float32Array[],
): Data[] {
  const rows = ids.length;
  const C = e.classes;
  const P = e.positions ?? 1;
  const columns: Data[] = [idData(ids)];
  if (e.storage.mode === 'sampled') {
    if (e.positions === undefined || tokens === undefined) throw new RangeError('sampled storage is for token caches');
    const s = sampleRows(scaled, ids, P, C, e.storage.n, e.storage.seed, tokens);
    const idType = tokenIdType(C);
    columns.push(fixedSizeListData(P, new Uint8(), s.unique));
    columns.push(listData(idType, s.offsets, s.indices));
    columns.push(listData(new Uint8(), s.offsets, s.counts));
    columns.push(listData(new Float16(), s.offsets, encodeFloat16(s.logprobs)));
  } else {
    const f16 = e.storage.dtype === 'float16';
    const valueType = f16 ? new Float16() : new Float32();
    if (e.storage.mode === 'dense') {
      columns.push(fixedSizeListData(P * C, valueType, f16 ? encodeFloat16(scaled, half).subarray(0, rows * P * C) : scaled));
    } else {
      const k = e.storage.k;
      const top = topK(scaled, C, k);
      const lse = Float32Array.from(logSumExp(scaled, C));
      if (e.positions === undefined) {
        columns.push(fixedSizeListData(k, new Uint32(), top.indices));
        columns.push(fixedSizeListData(k, valueType, f16 ? encodeFloat16(top.values) : top.values));
        columns.push(makeData({ type: new Float32(), length: rows, data: lse }));
      } else {
        const idType = tokenIdType(C);
        columns.push(fixedSizeListData(P * k, idType, idType instanceof Uint16 ? Uint16Array.from(top.indices) : top.indices));
        columns.push(fixedSizeListData(P * k, valueType, f16 ? encodeFloat16(top.values) : top.values));
        columns.push(fixedSizeListData(P, new Float32(), lse));
      }
    }
  }
  if (e.labelStatistics) {
    if (raw === undefined) throw new Error('label statistics need the raw logits');
    const s = labelStatistics(raw, C);
    columns.push(makeData({ type: new Int32(), length: rows, data: s.pseudoLabel }));
    columns.push(makeData({ type: new Float32(), length: rows, data: s.confidence }));
    columns.push(makeData({ type: new Float32(), length: rows, data: s.entropy }));
    columns.push(makeData({ type: new Float32(), length: rows, data: s.margin }));
  }
  if (e.views !== undefined) {
    const K = e.views.count;
    if (rows % K !== 0) throw new RangeError(`a view cache batch holds whole images (${K} rows each); got ${rows} rows`);
    const view = new Int32Array(rows);
    const dx = new Int32Array(rows);
    const dy = new Int32Array(rows);
    const flip = new Int32Array(rows);
    for (let r = 0; r < rows; r++) {
      const p = drawView(e.views, idAt(ids, r), r % K);
      view[r] = r % K;
      dx[r] = p.dx;
      dy[r] = p.dy;
      flip[r] = p.flip ? 1 : 0;
    }
    for (const data of [view, dx, dy, flip]) columns.push(makeData({ type: new Int32(), length: rows, data }));
  }
  const stored = e.features ?? [];
  if ((features?.length ?? 0) !== stored.length) throw new RangeError(`this cache stores ${stored.length} feature(s); the batch has ${features?.length ?? 0}`);
  stored.forEach((f, i) => {
    const size = featureSize(f);
    const values = features![i]!;
    if (values.length !== rows * size) throw new RangeError(`feature ${f.tensor}: ${values.length} values for ${rows} rows of ${size}`);
    // float32 values are copied: callers reuse their buffers, and the Arrow writer keeps what it is given.
    columns.push(
      fixedSizeListData(size, f.dtype === 'float16' ? new Float16() : new Float32(), f.dtype === 'float16' ? encodeFloat16(values) : values.slice()),
    );
  });
  return columns;
}

export interface EncodedShard {
  readonly bytes: Uint8Array;
  readonly sha256: string;
  readonly rows: number;
  readonly firstId: number;
  readonly lastId: number;
  /** A token cache: the shard's non-padding positions (the manifest's token count). */
  readonly tokens?: number;
}

/**
 * One shard encoded in memory, record batch by record batch: `add` takes the teacher's raw
 * logits for the next rows ([rows, C]; a token cache: [rows, positions, V] with the rows'
 * `tokens`, −1 = padding), at most one record batch's worth, so a worker holds one batch of full
 * logits at a time, not the shard's. Non-finite logits are refused.
 */
export class ShardEncoder {
  readonly #e: ShardEncoding;
  readonly #schema: Schema;
  readonly #writer = new RecordBatchFileWriter();
  #rows = 0;
  #tokens = 0;
  #firstId = 0;
  #lastId = 0;

  constructor(e: ShardEncoding, idType: 'int32' | 'int64') {
    this.#e = e;
    this.#schema = cacheShardSchema(e.storage, e.classes, e.labelStatistics, idType, e.views !== undefined, e.positions, e.features);
  }

  /** Append one record batch (with the stored features of its rows, when the cache has any). */
  add(ids: Ids, logits: Float32Array, tokens?: Int32Array, features?: readonly Float32Array[]): void {
    const e = this.#e;
    const rows = ids.length;
    const P = e.positions ?? 1;
    const rowValues = P * e.classes;
    if (rows === 0) return;
    if (logits.length !== rows * rowValues)
      throw new RangeError(
        `logits hold ${logits.length} values; ${rows} rows × ${e.positions === undefined ? '' : `${P} positions × `}${e.classes} classes needs ${rows * rowValues}`,
      );
    if ((e.positions === undefined) !== (tokens === undefined))
      throw new TypeError(e.positions === undefined ? 'tokens are for token caches' : "a token cache needs each row's tokens");
    if (tokens !== undefined && tokens.length !== rows * P)
      throw new RangeError(`tokens hold ${tokens.length} values; ${rows} rows × ${P} positions needs ${rows * P}`);
    // Fresh each batch: the Arrow writer keeps references to the column buffers until finish().
    const scaled = new Float32Array(logits.length);
    const invT = 1 / e.temperature;
    for (let i = 0; i < logits.length; i++) {
      const v = logits[i]!;
      if (!Number.isFinite(v)) throw new RangeError(`row ${idAt(ids, Math.floor(i / rowValues))}: teacher logit ${v} is not finite`);
      scaled[i] = v * invT;
    }
    // Label statistics read the raw logits now; nothing else keeps them.
    this.#writer.write(recordBatch(this.#schema, shardBatchColumns(e, ids, scaled, e.labelStatistics ? logits : undefined, undefined, tokens, features)));
    if (this.#rows === 0) this.#firstId = idAt(ids, 0);
    this.#lastId = idAt(ids, rows - 1);
    this.#rows += rows;
    if (tokens !== undefined) this.#tokens += countTokens(tokens);
  }

  finish(): EncodedShard {
    if (this.#rows === 0) throw new RangeError('a shard needs at least one row');
    this.#writer.finish();
    const bytes = this.#writer.toUint8Array(true);
    return {
      bytes,
      sha256: createHash('sha256').update(bytes).digest('hex'),
      rows: this.#rows,
      firstId: this.#firstId,
      lastId: this.#lastId,
      ...(this.#e.positions === undefined ? {} : { tokens: this.#tokens }),
    };
  }
}

/**
 * One whole shard in memory from all its rows' logits at once (`ShardEncoder.add` per record
 * batch of `batchRows`, as the writer splits them).
 */
export function encodeCacheShard(
  e: ShardEncoding,
  batchRows: number,
  ids: Ids,
  logits: Float32Array,
  tokens?: Int32Array,
  features?: readonly Float32Array[],
): EncodedShard {
  const rows = ids.length;
  const P = e.positions ?? 1;
  const rowValues = P * e.classes;
  if (logits.length !== rows * rowValues)
    throw new RangeError(
      `logits hold ${logits.length} values; ${rows} rows × ${e.positions === undefined ? '' : `${P} positions × `}${e.classes} classes needs ${rows * rowValues}`,
    );
  const encoder = new ShardEncoder(e, ids instanceof BigInt64Array ? 'int64' : 'int32');
  for (let r = 0; r < rows; r += batchRows) {
    const n = Math.min(batchRows, rows - r);
    encoder.add(
      ids.subarray(r, r + n) as Ids,
      logits.subarray(r * rowValues, (r + n) * rowValues),
      tokens?.subarray(r * P, (r + n) * P),
      features?.map((f, i) => f.subarray(r * featureSize(e.features![i]!), (r + n) * featureSize(e.features![i]!))),
    );
  }
  return encoder.finish();
}

/** Positions that are not padding (−1). */
export function countTokens(tokens: Int32Array): number {
  let n = 0;
  for (let i = 0; i < tokens.length; i++) if (tokens[i] !== -1) n++;
  return n;
}

/**
 * Check shard bytes received from elsewhere before they are written: the hash the sender
 * claims, the schema this cache needs, and exactly the expected ids in order. Throws
 * CacheIntegrityError naming the first problem.
 */
export function inspectCacheShard(bytes: Uint8Array, expected: { sha256: string; encoding: ShardEncoding; ids: Ids; tokens?: number }): EncodedShard {
  const sha256 = createHash('sha256').update(bytes).digest('hex');
  if (sha256 !== expected.sha256) throw new CacheIntegrityError(`shard bytes hash to ${sha256}, not the claimed ${expected.sha256}`);
  const e = expected.encoding;
  const want = cacheShardSchema(
    e.storage,
    e.classes,
    e.labelStatistics,
    expected.ids instanceof BigInt64Array ? 'int64' : 'int32',
    e.views !== undefined,
    e.positions,
    e.features,
  );
  const wantFields = want.fields.map((f) => `${f.name}:${String(f.type)}`).join(', ');
  let rows = 0;
  try {
    for (const batch of readArrowBytes(bytes)) {
      const fields = batch.schema.fields.map((f) => `${f.name}:${String(f.type)}`).join(', ');
      if (fields !== wantFields) throw new CacheIntegrityError(`shard columns are [${fields}]; this cache needs [${wantFields}]`);
      const ids = primitiveColumn<Ids>(batch, 'id', 'shard');
      for (let i = 0; i < ids.length; i++) {
        if (rows + i >= expected.ids.length || ids[i] !== expected.ids[rows + i]) {
          throw new CacheIntegrityError(
            `shard row ${rows + i} has id ${String(ids[i])}; expected ${rows + i < expected.ids.length ? String(expected.ids[rows + i]) : 'no more rows'}`,
          );
        }
      }
      if (e.storage.mode === 'dense') listColumn(batch, 'logits', 'shard');
      rows += batch.numRows;
    }
  } catch (err) {
    if (err instanceof CacheIntegrityError) throw err;
    throw new CacheIntegrityError(`shard is not a readable Arrow IPC file: ${(err as Error).message}`);
  }
  if (rows !== expected.ids.length) throw new CacheIntegrityError(`shard holds ${rows} rows; expected ${expected.ids.length}`);
  // A token shard's count of non-padding positions is the receiver's (from its dataset), not the sender's claim.
  return {
    bytes,
    sha256,
    rows,
    firstId: idAt(expected.ids, 0),
    lastId: idAt(expected.ids, rows - 1),
    ...(expected.tokens === undefined ? {} : { tokens: expected.tokens }),
  };
}
