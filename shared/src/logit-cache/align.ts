import type { DatasetBatch, DatasetReader } from '../dataset.js';
import { idAt, type Ids } from '../internal/arrow-io.js';
import { CacheMismatchError } from './errors.js';
import type { LogitBatch, LogitCacheReader } from './reader.js';
import { applyView, imageGeometry, pickView, type ViewParams } from '../views.js';

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
  const views =
    b.views === undefined
      ? {}
      : {
          views: {
            view: b.views.view.subarray(start, end),
            dx: b.views.dx.subarray(start, end),
            dy: b.views.dy.subarray(start, end),
            flip: b.views.flip.subarray(start, end),
          },
        };
  const features = b.features === undefined ? {} : { features: b.features.map((f) => f.subarray(start * (f.length / b.rows), end * (f.length / b.rows))) };
  const base = { rows: end - start, ids: b.ids.subarray(start, end) as Ids, file: b.file, rowInShard: b.rowInShard + start, ...stats, ...views, ...features };
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
  /**
   * Read the dataset's record batches into one reused buffer (DatasetReader.batches `reuse`): a
   * batch's inputs are then valid only until the next batch is requested. For a consumer that
   * copies rows out before asking for more.
   */
  readonly reuse?: boolean;
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
  const data = new Cursor(dataset.batches({ ...ranged, ...(options.reuse === true ? { reuse: true } : {}) }));
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

export interface ViewAlignOptions extends AlignOptions {
  /** Chooses each image's view this pass (`pickView`): vary it per epoch. */
  readonly viewSeed: number;
}

/** Rows `picks[i]` of each K-row group, gathered into a compact batch of one row per image. */
function gatherViews(b: LogitBatch, picks: Int32Array, K: number, C: number, ids: Ids): LogitBatch {
  const n = picks.length;
  const row = (i: number) => i * K + picks[i]!;
  // Each image's stored features are those of its picked view.
  const features =
    b.features === undefined
      ? {}
      : {
          features: b.features.map((f) => {
            const size = f.length / b.rows;
            const out = new Float32Array(n * size);
            for (let i = 0; i < n; i++) out.set(f.subarray(row(i) * size, (row(i) + 1) * size), i * size);
            return out;
          }),
        };
  const base = { rows: n, ids, file: b.file, rowInShard: b.rowInShard, ...features };
  if (b.kind === 'dense') {
    const logits = new Float32Array(n * C);
    for (let i = 0; i < n; i++) logits.set(b.logits.subarray(row(i) * C, (row(i) + 1) * C), i * C);
    return { ...base, kind: 'dense', logits };
  }
  const k = b.k;
  const indices = new Uint32Array(n * k);
  const logits = new Float32Array(n * k);
  const logsumexp = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    indices.set(b.indices.subarray(row(i) * k, (row(i) + 1) * k), i * k);
    logits.set(b.logits.subarray(row(i) * k, (row(i) + 1) * k), i * k);
    logsumexp[i] = b.logsumexp[row(i)]!;
  }
  return { ...base, kind: 'topk', k, indices, logits, logsumexp };
}

/**
 * Like `alignDatasetWithCaches`, for view caches (K rows per image, image-major): each image
 * gets one of its K stored views, picked by `viewSeed`; the stored transform of that view is
 * applied to the stored image (shared code, so the pixels are exactly what the teacher saw) and
 * the view's logits come with it. Every cache must hold the same views (same spec); ranges
 * (`from`, `to`) are in images.
 */
export async function* alignDatasetWithViewCaches(
  dataset: DatasetReader,
  caches: readonly LogitCacheReader[],
  options: ViewAlignOptions,
): AsyncGenerator<AlignedBatch, void, undefined> {
  const spec = caches[0]?.manifest.views;
  if (spec === undefined) throw new CacheMismatchError('alignDatasetWithViewCaches needs view caches');
  for (const c of caches) {
    if (JSON.stringify(c.manifest.views) !== JSON.stringify(spec)) {
      throw new CacheMismatchError(
        `caches ${caches[0]!.key} and ${c.key} hold different views (${JSON.stringify(spec)} vs ${JSON.stringify(c.manifest.views ?? null)}); teachers read together must share one view spec`,
      );
    }
  }
  if (options.checkFingerprint ?? true) {
    const fingerprint = await dataset.fingerprint();
    for (const c of caches) {
      if (c.manifest.dataset.fingerprint !== fingerprint)
        throw new CacheMismatchError(
          `cache ${c.key} was built from dataset ${c.manifest.dataset.fingerprint.slice(0, 12)}…, but ${dataset.path} has fingerprint ${fingerprint.slice(0, 12)}…`,
        );
    }
  }
  const K = spec.count;
  const geometry = imageGeometry(dataset.info);
  const D = dataset.inputSize;
  const from = options.from ?? 0;
  const to = options.to ?? Number.POSITIVE_INFINITY;
  const temperature = options.temperature === undefined ? {} : { temperature: options.temperature };
  const data = new Cursor(dataset.batches({ ...(from > 0 ? { from } : {}), ...(options.reuse === true ? { reuse: true } : {}) }));
  const teachers = caches.map((c) => new Cursor(c.batches({ ...temperature, ...(from > 0 ? { from: from * K } : {}) })));
  let row = from;
  try {
    if (from > 0) {
      await data.skip(from - (await dataset.batchStart(from)));
      for (let i = 0; i < caches.length; i++) await teachers[i]!.skip(from * K - caches[i]!.shardStart(from * K));
    }
    while (row < to) {
      const n0 = await data.available();
      const ns = await Promise.all(teachers.map(async (t) => Math.floor((await t.available()) / K)));
      if (n0 === 0) return;
      const short = ns.findIndex((n) => n === 0);
      if (short >= 0) throw new CacheMismatchError(`view cache ${caches[short]!.key} ends at image ${row}, but ${dataset.path} has more rows`);
      const n = Math.min(n0, ...ns, to - row);
      const d = data.take(n);
      const ds = sliceDataset(d.batch, d.start, d.end, D);
      const picks = new Int32Array(n);
      for (let i = 0; i < n; i++) picks[i] = pickView(options.viewSeed, 0, idAt(ds.ids, i), K);
      const inputs = ds.inputs instanceof Uint8Array ? new Uint8Array(n * D) : new Float32Array(n * D);
      const logits = teachers.map((t, ti) => {
        const s = t.take(n * K);
        const lb = sliceLogits(s.batch, s.start, s.end, caches[ti]!.classes.length);
        for (let r = 0; r < n * K; r++) {
          if (lb.ids[r] !== ds.ids[Math.floor(r / K)]) {
            throw new CacheMismatchError(
              `${caches[ti]!.dir}/${lb.file} row ${lb.rowInShard + r} has id ${idAt(lb.ids, r)}, but ${dataset.path} row ${row + Math.floor(r / K)} has id ${idAt(ds.ids, Math.floor(r / K))}`,
            );
          }
        }
        if (ti === 0) {
          const v = lb.views;
          if (v === undefined) throw new CacheMismatchError(`view cache ${caches[0]!.key} has no view columns`);
          for (let i = 0; i < n; i++) {
            const r = i * K + picks[i]!;
            const p: ViewParams = { dx: v.dx[r]!, dy: v.dy[r]!, flip: v.flip[r] === 1 };
            applyView(ds.inputs.subarray(i * D, (i + 1) * D), inputs.subarray(i * D, (i + 1) * D), geometry, p);
          }
        }
        return gatherViews(lb, picks, K, caches[ti]!.classes.length, ds.ids);
      });
      row += n;
      yield { rows: n, ids: ds.ids, inputs, labels: ds.labels, teachers: logits };
    }
  } finally {
    await data.close();
    await Promise.all(teachers.map((t) => t.close()));
  }
}
