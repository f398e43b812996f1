import type { DatasetBatch, DatasetReader } from '../dataset.js';
import { idAt, type Ids } from '../internal/arrow-io.js';
import { CacheMismatchError } from './errors.js';
import type { LogitBatch, LogitCacheReader } from './reader.js';

export interface AlignedBatch {
  readonly rows: number;
  readonly ids: Ids;
  readonly inputs: Float32Array | Uint8Array;
  readonly labels: Int32Array;
  /** One entry per cache, in the order the caches were given. */
  readonly teachers: readonly LogitBatch[];
}

function sliceDataset(b: DatasetBatch, start: number, end: number, D: number): DatasetBatch {
  if (start === 0 && end === b.rows) return b;
  return {
    rows: end - start,
    ids: b.ids.subarray(start, end) as Ids,
    inputs: b.inputs.subarray(start * D, end * D),
    labels: b.labels.subarray(start, end),
  };
}

function sliceLogits(b: LogitBatch, start: number, end: number, C: number): LogitBatch {
  if (start === 0 && end === b.rows) return b;
  const stats =
    b.stats === undefined
      ? {}
      : {
          stats: {
            pseudoLabel: b.stats.pseudoLabel.subarray(start, end),
            confidence: b.stats.confidence.subarray(start, end),
            entropy: b.stats.entropy.subarray(start, end),
            margin: b.stats.margin.subarray(start, end),
          },
        };
  const base = { rows: end - start, ids: b.ids.subarray(start, end) as Ids, file: b.file, rowInShard: b.rowInShard + start, ...stats };
  if (b.kind === 'dense') return { ...base, kind: 'dense', logits: b.logits.subarray(start * C, end * C) };
  return {
    ...base,
    kind: 'topk',
    k: b.k,
    indices: b.indices.subarray(start * b.k, end * b.k),
    logits: b.logits.subarray(start * b.k, end * b.k),
    logsumexp: b.logsumexp.subarray(start, end),
  };
}

/** Pulls batches from an async iterator and hands out row ranges of them. */
class Cursor<T extends { rows: number }> {
  readonly #it: AsyncIterator<T>;
  #current: T | undefined;
  #offset = 0;
  #done = false;
  constructor(it: AsyncIterator<T>) {
    this.#it = it;
  }
  /** Rows left in the current batch (fetching the next batch if needed); 0 at the end. */
  async available(): Promise<number> {
    while (!this.#done && (this.#current === undefined || this.#offset >= this.#current.rows)) {
      const r = await this.#it.next();
      if (r.done === true) this.#done = true;
      else {
        this.#current = r.value;
        this.#offset = 0;
      }
    }
    return this.#done ? 0 : this.#current!.rows - this.#offset;
  }
  /** Drop the next `n` rows. */
  async skip(n: number): Promise<void> {
    while (n > 0) {
      const k = Math.min(n, await this.available());
      if (k === 0) return;
      this.take(k);
      n -= k;
    }
  }
  take(n: number): { batch: T; start: number; end: number } {
    const batch = this.#current!;
    const start = this.#offset;
    this.#offset += n;
    return { batch, start, end: start + n };
  }
  async close(): Promise<void> {
    await this.#it.return?.(undefined);
  }
}

export interface AlignOptions {
  /** Temperature to read the caches at (default: each cache's stored one). */
  readonly temperature?: number;
  /** Compare each cache's recorded dataset fingerprint with the dataset file (default true). */
  readonly checkFingerprint?: boolean;
  /** Only rows [from, to) (default: all). Reading starts at the batch or shard holding `from`. */
  readonly from?: number;
  readonly to?: number;
}

/**
 * Stream a dataset together with one or more logit caches over it, in dataset order, as
 * batches whose rows line up. Batch boundaries may differ between files; this re-cuts them
 * into zero-copy views. Any disagreement (fingerprint, row count, or a single id) throws a
 * CacheMismatchError naming the cache shard and the row.
 */
export async function* alignDatasetWithCaches(
  dataset: DatasetReader,
  caches: readonly LogitCacheReader[],
  options: AlignOptions = {},
): AsyncGenerator<AlignedBatch, void, undefined> {
  if (options.checkFingerprint ?? true) {
    const fingerprint = await dataset.fingerprint();
    for (const c of caches) {
      if (c.manifest.dataset.fingerprint !== fingerprint) {
        throw new CacheMismatchError(
          `cache ${c.key} was built from dataset ${c.manifest.dataset.fingerprint.slice(0, 12)}…, but ${dataset.path} has fingerprint ${fingerprint.slice(0, 12)}…`,
        );
      }
    }
  }
  const D = dataset.inputSize;
  const from = options.from ?? 0;
  const to = options.to ?? Number.POSITIVE_INFINITY;
  const ranged = from > 0 ? { from } : {};
  const data = new Cursor(dataset.batches(ranged));
  const teachers = caches.map((c) => new Cursor(c.batches({ ...(options.temperature === undefined ? {} : { temperature: options.temperature }), ...ranged })));
  let row = from;
  try {
    if (from > 0) {
      await data.skip(from - (await dataset.batchStart(from)));
      for (let i = 0; i < caches.length; i++) await teachers[i]!.skip(from - caches[i]!.shardStart(from));
    }
    while (row < to) {
      const n0 = await data.available();
      const ns = await Promise.all(teachers.map((t) => t.available()));
      if (n0 === 0) {
        const extra = ns.findIndex((n) => n > 0);
        if (extra >= 0) throw new CacheMismatchError(`cache ${caches[extra]!.key} has more rows than ${dataset.path} (${row})`);
        return;
      }
      const short = ns.findIndex((n) => n === 0);
      if (short >= 0) throw new CacheMismatchError(`cache ${caches[short]!.key} ends at row ${row}, but ${dataset.path} has more rows`);
      const n = Math.min(n0, ...ns, to - row);
      const d = data.take(n);
      const ds = sliceDataset(d.batch, d.start, d.end, D);
      const logits = teachers.map((t, i) => {
        const s = t.take(n);
        const C = caches[i]!.classes.length;
        const lb = sliceLogits(s.batch, s.start, s.end, C);
        for (let r = 0; r < n; r++) {
          if (lb.ids[r] !== ds.ids[r]) {
            throw new CacheMismatchError(
              `${caches[i]!.dir}/${lb.file} row ${lb.rowInShard + r} has id ${idAt(lb.ids, r)}, but ${dataset.path} row ${row + r} has id ${idAt(ds.ids, r)}`,
            );
          }
        }
        return lb;
      });
      row += n;
      yield { rows: n, ids: ds.ids, inputs: ds.inputs, labels: ds.labels, teachers: logits };
    }
  } finally {
    await data.close();
    await Promise.all(teachers.map((t) => t.close()));
  }
}
