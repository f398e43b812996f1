/**
 * The training data path: a dataset plus its logit caches, streamed with bounded memory
 * (shared's aligned readers), shuffled twice — segments (cache shards, or runs of dataset
 * record batches) are read in a random order each epoch, and rows mix in a fixed-size buffer —
 * then cut into batches and prefetched ahead of the train step. Nothing here holds more than the shuffle buffer, a few
 * batches and one cache shard per cache, whatever the dataset's size.
 */
import {
  alignDatasetWithCaches,
  alignDatasetWithViewCaches,
  applyView,
  drawView,
  imageGeometry,
  mulberry32,
  type AlignedBatch,
  type AlignOptions,
  type DatasetInfo,
  type DatasetReader,
  type LogitCacheReader,
  type ViewSpec,
} from '@distillate/shared';

/**
 * Rows [from, to) of a source with its caches lined up. View caches (K stored views per image)
 * give each image one of its views, picked by `viewSeed`, transformed as the teacher saw it.
 * The dataset is read into one reused buffer (AlignOptions.reuse): rows are copied out of each
 * aligned batch before the next is asked for.
 */
function aligned(src: SourceSpec, options: AlignOptions, viewSeed: number): AsyncGenerator<AlignedBatch, void, undefined> {
  const reusing = { ...options, reuse: true };
  return src.caches.some((c) => c.manifest.views !== undefined)
    ? alignDatasetWithViewCaches(src.dataset, src.caches, { ...reusing, viewSeed })
    : alignDatasetWithCaches(src.dataset, src.caches, reusing);
}

/** How one teacher slot is stored in a batch. */
export type SlotSpec = ({ readonly kind: 'dense'; readonly classes: number } | { readonly kind: 'topk'; readonly k: number }) & {
  /** The stored teacher features the run reads (hints, in their order): the cache's feature index and its values per row. */
  readonly features?: readonly { readonly index: number; readonly size: number }[];
};

export interface BatchLayout {
  /** Values per sample. */
  readonly inputSize: number;
  /**
   * x holds the datasets' stored uint8 values, unscaled, for an engine that scales them
   * (StudentEngine.storedInput); every source is then a uint8 dataset with that scaling.
   */
  readonly storedInputs?: boolean;
  readonly slots: readonly SlotSpec[];
}

export interface SlotData {
  /** dense: [rows, C] raw teacher logits z. top-k: [rows, k] stored z / T_cache. */
  readonly logits: Float32Array;
  readonly indices?: Int32Array;
  readonly logsumexp?: Float32Array;
  /** [rows, size] per stored teacher feature (SlotSpec.features). */
  readonly features?: readonly Float32Array[];
}

export interface TrainBatch {
  readonly rows: number;
  /** [rows, D], scaled (stored × scale + offset); the stored uint8 values when the layout says `storedInputs`. */
  readonly x: Float32Array | Uint8Array;
  /** Class index in the student's label space; −1 = no label for this row. */
  readonly labels: Int32Array;
  /** 1 where the row has teacher targets (all slots), else 0. */
  readonly hasTeacher: Uint8Array;
  readonly slots: readonly SlotData[];
}

export interface SourceSpec {
  readonly dataset: DatasetReader;
  readonly caches: readonly LogitCacheReader[];
  /** Map dataset label → student label (e.g. into a union label space); identity when absent. */
  readonly labelMap?: Int32Array;
  /** Pool rows from a label job: keep rows with confidence ≥ threshold; hard = CE on pseudo-labels, soft = teacher logits. */
  readonly pseudo?: { readonly threshold: number; readonly hard: boolean };
  readonly rows: number;
  /** Where this source's cache holds each planned teacher feature, when not at the layout's index (a pool's label cache). */
  readonly featureIndex?: readonly number[];
}

/** A fixed-capacity row store, column-wise typed arrays. */
class RowStore {
  readonly x: Float32Array | Uint8Array;
  readonly labels: Int32Array;
  readonly hasTeacher: Uint8Array;
  readonly slots: Array<{ logits: Float32Array; indices?: Int32Array; logsumexp?: Float32Array; features?: Float32Array[] }>;
  constructor(
    readonly layout: BatchLayout,
    readonly capacity: number,
  ) {
    this.x = layout.storedInputs === true ? new Uint8Array(capacity * layout.inputSize) : new Float32Array(capacity * layout.inputSize);
    this.labels = new Int32Array(capacity);
    this.hasTeacher = new Uint8Array(capacity);
    this.slots = layout.slots.map((s) => ({
      ...(s.kind === 'dense'
        ? { logits: new Float32Array(capacity * s.classes) }
        : { logits: new Float32Array(capacity * s.k), indices: new Int32Array(capacity * s.k), logsumexp: new Float32Array(capacity) }),
      ...(s.features === undefined ? {} : { features: s.features.map((f) => new Float32Array(capacity * f.size)) }),
    }));
  }

  copyRow(to: number, from: RowStore, at: number): void {
    const D = this.layout.inputSize;
    this.x.set(from.x.subarray(at * D, (at + 1) * D), to * D);
    this.labels[to] = from.labels[at]!;
    this.hasTeacher[to] = from.hasTeacher[at]!;
    for (let i = 0; i < this.slots.length; i++) {
      const s = this.layout.slots[i]!;
      const a = this.slots[i]!;
      const b = from.slots[i]!;
      const w = s.kind === 'dense' ? s.classes : s.k;
      a.logits.set(b.logits.subarray(at * w, (at + 1) * w), to * w);
      if (s.kind === 'topk') {
        a.indices!.set(b.indices!.subarray(at * w, (at + 1) * w), to * w);
        a.logsumexp![to] = b.logsumexp![at]!;
      }
      s.features?.forEach(({ size }, f) => a.features![f]!.set(b.features![f]!.subarray(at * size, (at + 1) * size), to * size));
    }
  }

  /** Whether a batch's arrays have this store's sizes (the layout can change between epochs: self-distillation). */
  #fits(b: TrainBatch): boolean {
    return (
      b.x.length === this.x.length &&
      b.x.constructor === this.x.constructor &&
      b.labels.length === this.capacity &&
      b.slots.length === this.slots.length &&
      b.slots.every((s, i) => {
        const mine = this.slots[i]!;
        return (
          s.logits.length === mine.logits.length &&
          s.indices?.length === mine.indices?.length &&
          s.logsumexp?.length === mine.logsumexp?.length &&
          s.features?.length === mine.features?.length &&
          (s.features ?? []).every((f, j) => f.length === mine.features![j]!.length)
        );
      })
    );
  }

  /** A batch owning copies of the first `rows` rows: a full one reuses a batch handed back to `pool`, if there is one. */
  take(rows: number, pool?: BatchPool): TrainBatch {
    const D = this.layout.inputSize;
    const reused = rows === this.capacity ? pool?.reuse((b) => this.#fits(b)) : undefined;
    if (reused !== undefined) {
      reused.x.set(this.x);
      reused.labels.set(this.labels);
      reused.hasTeacher.set(this.hasTeacher);
      reused.slots.forEach((to, i) => {
        const from = this.slots[i]!;
        to.logits.set(from.logits);
        to.indices?.set(from.indices!);
        to.logsumexp?.set(from.logsumexp!);
        to.features?.forEach((f, j) => f.set(from.features![j]!));
      });
      return reused;
    }
    return {
      rows,
      x: this.x.slice(0, rows * D),
      labels: this.labels.slice(0, rows),
      hasTeacher: this.hasTeacher.slice(0, rows),
      slots: this.layout.slots.map((s, i) => {
        const w = s.kind === 'dense' ? s.classes : s.k;
        const a = this.slots[i]!;
        const features = s.features === undefined ? {} : { features: s.features.map(({ size }, j) => a.features![j]!.slice(0, rows * size)) };
        return s.kind === 'dense'
          ? { logits: a.logits.slice(0, rows * w), ...features }
          : { logits: a.logits.slice(0, rows * w), indices: a.indices!.slice(0, rows * w), logsumexp: a.logsumexp!.slice(0, rows), ...features };
      }),
    };
  }
}

/**
 * Full batches handed back by their consumer once it is done with them, refilled by the next
 * `take` instead of allocated: a training epoch then allocates a few dozen batches, not one per
 * step. Fresh typed arrays of 400 KB per MLP batch were the largest share of the external memory
 * that set off V8's full collections (`node --trace-gc`: "external memory pressure").
 */
export class BatchPool {
  readonly #free: TrainBatch[] = [];
  /** Hand a batch back: its arrays will be overwritten by a later batch. */
  release(batch: TrainBatch): void {
    this.#free.push(batch);
  }
  /** A batch handed back that `fits`; those that do not (an earlier layout) are dropped. */
  reuse(fits: (b: TrainBatch) => boolean): TrainBatch | undefined {
    for (let b = this.#free.pop(); b !== undefined; b = this.#free.pop()) if (fits(b)) return b;
    return undefined;
  }
}

/** Fresh augmented views: the view of each image for this epoch. */
export interface AugmentOptions {
  readonly augment: ViewSpec['augment'];
  readonly seed: number;
  /** View index drawn for every image: fresh views each epoch. */
  readonly epoch: number;
}

/** Row `row` of `inputs` (stored values) → its view, drawn from (seed, id, epoch); a buffer reused per call. */
type Augmenter = (inputs: Float32Array | Uint8Array, row: number, id: number) => Float32Array | Uint8Array;

function augmenter(info: DatasetInfo, D: number, opts: AugmentOptions): Augmenter {
  const geometry = imageGeometry(info);
  // One draw per (seed, id, epoch) with shared's view code: view `epoch` of a view cache with
  // the same seed and augmentation is the same transform.
  const spec: ViewSpec = { count: 1, seed: opts.seed, augment: opts.augment };
  let u8: Uint8Array | undefined;
  let f32: Float32Array | undefined;
  return (inputs, row, id) => {
    const src = inputs.subarray(row * D, (row + 1) * D);
    const p = drawView(spec, id, opts.epoch);
    return src instanceof Uint8Array ? applyView(src, (u8 ??= new Uint8Array(D)), geometry, p) : applyView(src, (f32 ??= new Float32Array(D)), geometry, p);
  };
}

/**
 * to[at…at+D) = from[from0…from0+D)·scale + offset; a plain copy when that is the identity on
 * float32 values, or when `to` takes stored values (uint8 to uint8, scaled by the engine).
 */
function scaleRow(to: Float32Array | Uint8Array, at: number, from: Float32Array | Uint8Array, from0: number, D: number, scale: number, offset: number): void {
  if (to instanceof Uint8Array) {
    if (!(from instanceof Uint8Array)) throw new Error('internal: a layout of stored inputs reads uint8 datasets only');
    to.set(from.subarray(from0, from0 + D), at);
    return;
  }
  if (scale === 1 && offset === 0 && from instanceof Float32Array) {
    to.set(from.subarray(from0, from0 + D), at);
    return;
  }
  for (let d = 0; d < D; d++) to[at + d] = from[from0 + d]! * scale + offset;
}

/** Write up to `n` rows of an aligned batch (from row `start`) into `store` from slot 0. */
function fillChunk(store: RowStore, b: AlignedBatch, start: number, n: number, src: SourceSpec, scale: number, offset: number, augment?: Augmenter): number {
  const D = store.layout.inputSize;
  let w = 0;
  for (let r = start; r < start + n; r++) {
    let label = b.labels[r]!;
    let hasTeacher = src.caches.length > 0 ? 1 : 0;
    if (src.pseudo !== undefined) {
      const stats = b.teachers[0]?.stats;
      if (stats === undefined) throw new Error('semi-supervised pool cache has no pseudo-label columns (use a label job)');
      if (stats.confidence[r]! < src.pseudo.threshold) continue;
      if (src.pseudo.hard) {
        label = stats.pseudoLabel[r]!;
        hasTeacher = 0;
      }
    }
    if (label >= 0 && src.labelMap !== undefined) label = src.labelMap[label]!;
    if (augment === undefined) scaleRow(store.x, w * D, b.inputs, r * D, D, scale, offset);
    else scaleRow(store.x, w * D, augment(b.inputs, r, Number(b.ids[r]!)), 0, D, scale, offset);
    store.labels[w] = label;
    store.hasTeacher[w] = hasTeacher;
    store.layout.slots.forEach((spec, i) => {
      const t = b.teachers[i];
      const slot = store.slots[i]!;
      if (t === undefined) return; // a source without this teacher (hasTeacher = 0)
      if (spec.kind === 'dense') {
        if (t.kind !== 'dense') throw new Error('teacher slot expects dense logits');
        const C = spec.classes;
        const T = src.caches[i]!.manifest.temperature;
        for (let c = 0; c < C; c++) slot.logits[w * C + c] = t.logits[r * C + c]! * T; // stored z/T → z
      } else {
        if (t.kind !== 'topk') throw new Error('teacher slot expects top-k logits');
        const k = spec.k;
        for (let j = 0; j < k; j++) {
          slot.logits[w * k + j] = t.logits[r * k + j]!;
          slot.indices![w * k + j] = t.indices[r * k + j]!;
        }
        slot.logsumexp![w] = t.logsumexp[r]!;
      }
      spec.features?.forEach(({ index, size }, f) => {
        const at = src.featureIndex?.[f] ?? index;
        const values = t.features?.[at];
        if (values === undefined) throw new Error(`cache ${src.caches[i]!.dir} has no stored feature ${at}`);
        // Another feature's values (a wrong index) would be read silently: its size per row differs.
        if (values.length !== b.rows * size) throw new Error(`cache ${src.caches[i]!.dir}: stored feature ${at} does not hold ${size} values per row`);
        slot.features![f]!.set(values.subarray(r * size, (r + 1) * size), w * size);
      });
    });
    w++;
  }
  return w;
}

/** Rows per shuffled segment when a source has no cache whose shards can serve as segments. */
export const SEGMENT_ROWS = 16_384;

/**
 * Segment boundaries for shuffling by shard order: the first cache's shards, or else runs of
 * whole dataset record batches of at least SEGMENT_ROWS rows. Every row is in exactly one segment.
 */
export async function segmentBounds(src: SourceSpec): Promise<number[]> {
  if (src.caches.length > 0) {
    // A view cache's shards hold whole images, K rows each: bounds in images.
    const K = src.caches[0]!.viewCount;
    return src.caches[0]!.shardOffsets().map((o) => o / K);
  }
  const offsets = await src.dataset.batchOffsets();
  const bounds = [0];
  for (const o of offsets.slice(1)) if (o - bounds.at(-1)! >= SEGMENT_ROWS || o === offsets.at(-1)) bounds.push(o);
  return bounds;
}

/** One pass over a source with its segments in a random order (each aligned as usual). */
async function* segmentsInRandomOrder(src: SourceSpec, random: () => number, viewSeed: number): AsyncGenerator<AlignedBatch, void, undefined> {
  const bounds = await segmentBounds(src);
  if (bounds.at(-1) !== src.rows) throw new Error(`${src.dataset.path} has ${src.rows} rows but its cache ${src.caches[0]?.dir ?? ''} holds ${bounds.at(-1)}`);
  const order = Array.from({ length: bounds.length - 1 }, (_, i) => i);
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  let first = true;
  for (const i of order) {
    yield* aligned(src, { from: bounds[i]!, to: bounds[i + 1]!, checkFingerprint: first }, viewSeed);
    first = false;
  }
}

export interface EpochOptions {
  readonly batchSize: number;
  readonly shuffleBuffer: number;
  readonly seed: number;
  /** false: dataset order, no shuffling (evaluation). true: segment order and buffer shuffling. */
  readonly shuffle: boolean;
  /** Train on fresh augmented views (applied to the stored values, before scaling). */
  readonly augment?: AugmentOptions;
  /** Where full batches come back to after use, to be refilled (BatchPool). */
  readonly pool?: BatchPool;
}

/**
 * One epoch of batches. Sources are interleaved in random 256-row pieces, weighted by the rows
 * each has left, so a small labelled set mixes evenly with a large pool.
 */
export async function* epochBatches(sources: readonly SourceSpec[], layout: BatchLayout, opts: EpochOptions): AsyncGenerator<TrainBatch> {
  const random = mulberry32(opts.seed);
  const cap = opts.shuffle ? Math.max(opts.shuffleBuffer, opts.batchSize) : 0;
  const buffer = cap > 0 ? new RowStore(layout, cap) : undefined;
  const out = new RowStore(layout, opts.batchSize);
  const chunk = new RowStore(layout, 256);
  let filled = 0;
  let outRows = 0;
  const iters = sources.map((s) => ({
    src: s,
    it: opts.shuffle ? segmentsInRandomOrder(s, random, opts.seed) : aligned(s, {}, opts.seed),
    current: undefined as AlignedBatch | undefined,
    at: 0,
    remaining: s.rows,
    scale: s.dataset.info.scaling.scale,
    offset: s.dataset.info.scaling.offset,
    augment: opts.augment === undefined ? undefined : augmenter(s.dataset.info, layout.inputSize, opts.augment),
  }));
  try {
    for (;;) {
      const live = iters.filter((i) => i.remaining > 0);
      if (live.length === 0) break;
      let pick = random() * live.reduce((a, i) => a + i.remaining, 0);
      const s = live.find((i) => (pick -= i.remaining) < 0) ?? live[live.length - 1]!;
      if (s.current === undefined || s.at >= s.current.rows) {
        const next = await s.it.next();
        if (next.done === true) {
          s.remaining = 0;
          continue;
        }
        s.current = next.value;
        s.at = 0;
      }
      const n = Math.min(256, s.current.rows - s.at);
      const got = fillChunk(chunk, s.current, s.at, n, s.src, s.scale, s.offset, s.augment);
      s.at += n;
      s.remaining -= n;
      for (let r = 0; r < got; r++) {
        if (buffer === undefined) {
          out.copyRow(outRows++, chunk, r);
        } else if (filled < cap) {
          buffer.copyRow(filled++, chunk, r);
          continue;
        } else {
          const j = Math.floor(random() * cap);
          out.copyRow(outRows++, buffer, j);
          buffer.copyRow(j, chunk, r);
        }
        if (outRows === opts.batchSize) {
          yield out.take(outRows, opts.pool);
          outRows = 0;
        }
      }
    }
    if (buffer !== undefined) {
      // Drain the buffer in random order.
      const order = Array.from({ length: filled }, (_, i) => i);
      for (let i = order.length - 1; i > 0; i--) {
        const j = Math.floor(random() * (i + 1));
        [order[i], order[j]] = [order[j]!, order[i]!];
      }
      for (const j of order) {
        out.copyRow(outRows++, buffer, j);
        if (outRows === opts.batchSize) {
          yield out.take(outRows, opts.pool);
          outRows = 0;
        }
      }
    }
    if (outRows > 0) yield out.take(outRows, opts.pool);
  } finally {
    await Promise.all(iters.map((i) => i.it.return(undefined)));
  }
}

/** Keep up to `depth` items pulled ahead of the consumer, so I/O overlaps the train step. */
export async function* prefetch<T>(source: AsyncIterator<T>, depth = 3): AsyncGenerator<T> {
  const queue: Array<Promise<IteratorResult<T>>> = [];
  try {
    for (;;) {
      while (queue.length < depth) {
        const next = source.next();
        // Handled now, thrown when its turn comes: a batch that fails while earlier ones are still
        // being trained on must not surface as an unhandled rejection (a crash with a stack trace).
        next.catch(() => undefined);
        queue.push(next);
      }
      const r = await queue.shift()!;
      if (r.done === true) return;
      yield r.value;
    }
  } finally {
    await source.return?.(undefined);
  }
}
