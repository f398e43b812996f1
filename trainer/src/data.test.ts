/**
 * The data path's shuffling by shard order, on real files: segments are visited in a random
 * order per epoch, every row arrives exactly once, and each row keeps its own teacher logits.
 */
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  DatasetReader,
  LogitCacheReader,
  LogitCacheWriter,
  alignDatasetWithCaches,
  applyView,
  drawView,
  imageGeometry,
  writeSyntheticDataset,
} from '@distillate/shared';
import { BatchPool, epochBatches, prefetch, segmentBounds, SEGMENT_ROWS, type SourceSpec, type TrainBatch } from './data.js';

const ROWS = 1000;
const C = 4;
/** The logit a fake teacher gives row `id`, class `c`: recoverable from the id alone. */
const logitOf = (id: number, c: number) => id / 100 + c;

let dataset: DatasetReader;
let cache: LogitCacheReader;

beforeAll(async () => {
  const dir = await mkdtemp(join(tmpdir(), 'distillate-data-'));
  const path = join(dir, 'd.arrow');
  const { fingerprint } = await writeSyntheticDataset(path, { rows: ROWS, inputShape: [4], classes: C, batchRows: 64 });
  dataset = await DatasetReader.open(path);
  const w = await LogitCacheWriter.open({
    root: join(dir, 'cache'),
    teacher: { name: 't', sha256: 'c'.repeat(64), classes: ['a', 'b', 'c', 'd'] },
    dataset: { fingerprint, rows: ROWS },
    preprocessing: '',
    temperature: 1,
    storage: { mode: 'dense' },
    shardRows: 150,
    batchRows: 40,
    fsync: false,
  });
  for await (const b of dataset.batches()) {
    const logits = new Float32Array(b.rows * C);
    for (let r = 0; r < b.rows; r++) for (let c = 0; c < C; c++) logits[r * C + c] = logitOf(b.ids[r] as number, c);
    await w.append({ ids: b.ids, logits });
  }
  cache = await LogitCacheReader.open(join(dir, 'cache', (await w.finish()).key));
});

describe('aligned row ranges', () => {
  it('read exactly rows [from, to) across dataset batches and cache shards', async () => {
    expect(await dataset.batchStart(250)).toBe(192); // batches of 64
    const shard = cache.manifest.shards[0]!.rows;
    expect(cache.manifest.shards.length).toBeGreaterThan(3);
    expect(cache.shardStart(250)).toBe(Math.floor(250 / shard) * shard);
    for (const [from, to] of [
      [0, 1000],
      [250, 731],
      [shard, 2 * shard],
      [999, 1000],
      [1, 2],
    ] as const) {
      const ids: number[] = [];
      for await (const b of alignDatasetWithCaches(dataset, [cache], { from, to })) {
        const t = b.teachers[0]!;
        if (t.kind !== 'dense') throw new Error('dense expected');
        for (let r = 0; r < b.rows; r++) {
          ids.push(b.ids[r] as number);
          expect(t.logits[r * C + 2]).toBeCloseTo(logitOf(b.ids[r] as number, 2), 5);
        }
      }
      expect(ids).toEqual(Array.from({ length: to - from }, (_, i) => from + i));
    }
    await expect(async () => {
      for await (const _ of alignDatasetWithCaches(dataset, [cache], { from: 1000 })) void _;
    }).rejects.toThrow(/outside \[0, 1000\)/);
  });
});

describe('epochBatches with shuffle', () => {
  const source = (): SourceSpec => ({ dataset, caches: [cache], rows: ROWS });
  const layout = { inputSize: 4, slots: [{ kind: 'dense', classes: C }] } as const;

  it('segments are the cache shards, or runs of dataset batches without a cache', async () => {
    const shard = cache.manifest.shards[0]!.rows;
    expect(await segmentBounds(source())).toEqual([...Array.from({ length: Math.ceil(ROWS / shard) }, (_, i) => i * shard), ROWS]);
    const bounds = await segmentBounds({ dataset, caches: [], rows: ROWS });
    expect(bounds).toEqual([0, 1000]); // 1,000 rows < SEGMENT_ROWS: one segment
    expect(SEGMENT_ROWS).toBeGreaterThan(ROWS);
    const bigPath = join(await mkdtemp(join(tmpdir(), 'distillate-data-')), 'big.arrow');
    await writeSyntheticDataset(bigPath, { rows: 40_000, inputShape: [2], classes: 2, batchRows: 8192 });
    const big = await DatasetReader.open(bigPath);
    // Record batches end at 8192, 16384, 24576, 32768, 40000: segments of ≥ 16,384 rows, and the rest.
    expect(await segmentBounds({ dataset: big, caches: [], rows: 40_000 })).toEqual([0, 16_384, 32_768, 40_000]);
  });

  it('visit every row once per epoch, with its own logits, in a shard order that changes with the seed', async () => {
    const firstSegments = new Set<number>();
    for (const seed of [1, 2, 3, 4, 5, 6]) {
      const seen: number[] = [];
      let firstBatch: number[] | undefined;
      // A buffer as small as a batch: each batch comes from (at most) two neighbouring segments.
      for await (const b of epochBatches([source()], layout, { batchSize: 16, shuffleBuffer: 16, seed, shuffle: true })) {
        const ids: number[] = [];
        for (let r = 0; r < b.rows; r++) {
          // x is the stored input; recover the id through the teacher logits instead.
          const id = Math.round((b.slots[0]!.logits[r * C]! - 0) * 100);
          ids.push(id);
          for (let c = 0; c < C; c++) expect(b.slots[0]!.logits[r * C + c]).toBeCloseTo(logitOf(id, c), 4);
        }
        firstBatch ??= ids;
        seen.push(...ids);
      }
      expect(seen.sort((a, b) => a - b)).toEqual(Array.from({ length: ROWS }, (_, i) => i));
      firstSegments.add(Math.floor(Math.min(...firstBatch!) / cache.manifest.shards[0]!.rows));
    }
    expect(firstSegments.size).toBeGreaterThan(1); // not always shard 0 first
  });

  it('with a BatchPool: batches handed back are refilled, and every batch holds what it would hold without the pool', async () => {
    const snapshot = (b: TrainBatch) => ({ rows: b.rows, x: [...b.x], labels: [...b.labels], has: [...b.hasTeacher], logits: [...b.slots[0]!.logits] });
    const options = { batchSize: 48, shuffleBuffer: 100, seed: 7, shuffle: true } as const;
    const plain: ReturnType<typeof snapshot>[] = [];
    for await (const b of epochBatches([source()], layout, options)) plain.push(snapshot(b));
    const pool = new BatchPool();
    const pooled: ReturnType<typeof snapshot>[][] = [];
    const objects = new Set<TrainBatch>();
    // Two epochs through one pool (the last, short batch of the first comes back too); a batch goes back two batches later, as a consumer holding a group would.
    for (let epoch = 0; epoch < 2; epoch++) {
      const held: TrainBatch[] = [];
      pooled.push([]);
      for await (const b of prefetch(epochBatches([source()], layout, { ...options, pool }), 3)) {
        pooled[epoch]!.push(snapshot(b));
        objects.add(b);
        held.push(b);
        if (held.length > 2) pool.release(held.shift()!);
      }
      for (const b of held) pool.release(b);
    }
    for (const epoch of pooled) expect(epoch).toEqual(plain);
    expect(plain.length).toBe(Math.ceil(ROWS / 48));
    // 2 × 21 batches from a handful of objects: the full ones were reused (the short last ones are fresh, and never refilled).
    expect(objects.size).toBeLessThan(12);
  });
});

describe('epochBatches with augment (fresh views)', () => {
  it("give every image the view drawn from (seed, id, epoch) by shared's view code, new each epoch, the same on a rerun", async () => {
    const path = join(await mkdtemp(join(tmpdir(), 'distillate-data-')), 'images.arrow');
    await writeSyntheticDataset(path, { rows: 200, inputShape: [8, 8, 1], classes: 3, batchRows: 64 });
    const images = await DatasetReader.open(path);
    const layout = { inputSize: 64, slots: [] } as const;
    const augment = { shift: 2, flip: true };
    const epoch = async (seed: number, e: number): Promise<Float32Array> => {
      const xs: Float32Array[] = [];
      const opts = { batchSize: 32, shuffleBuffer: 32, seed: 1, shuffle: false, augment: { augment, seed, epoch: e } };
      for await (const b of epochBatches([{ dataset: images, caches: [], rows: 200 }], layout, opts)) xs.push(b.x as Float32Array);
      return Float32Array.from(xs.flatMap((x) => [...x]));
    };
    const stored: number[] = [];
    for await (const b of images.batches()) stored.push(...b.inputs);
    const scale = images.info.scaling.scale;
    const g = imageGeometry(images.info);
    const e3 = await epoch(9, 3);
    let moved = 0;
    for (let id = 0; id < 200; id++) {
      const want = applyView(Uint8Array.from(stored.slice(id * 64, (id + 1) * 64)), new Uint8Array(64), g, drawView({ count: 1, seed: 9, augment }, id, 3));
      expect(Array.from(e3.subarray(id * 64, (id + 1) * 64))).toEqual(Array.from(want, (v) => Math.fround(v * scale)));
      if (want.some((v, d) => v !== stored[id * 64 + d])) moved++;
    }
    expect(moved).toBeGreaterThan(150); // most draws move the image (25 shifts × 2 flips, one is the identity)
    expect(await epoch(9, 3)).toEqual(e3);
    expect(await epoch(9, 4)).not.toEqual(e3);
    expect(await epoch(10, 3)).not.toEqual(e3);
    // A layout of stored inputs (for an engine that scales them) carries the same views as bytes.
    const views: number[] = [];
    const opts = { batchSize: 32, shuffleBuffer: 32, seed: 1, shuffle: false, augment: { augment, seed: 9, epoch: 3 } };
    for await (const b of epochBatches([{ dataset: images, caches: [], rows: 200 }], { ...layout, storedInputs: true }, opts)) {
      expect(b.x).toBeInstanceOf(Uint8Array);
      views.push(...b.x);
    }
    expect(Float32Array.from(views, (v) => Math.fround(v * scale))).toEqual(e3);
  });
});

describe('prefetch', () => {
  it('a source that fails while earlier items are still in use: the error comes out of the loop, not as an unhandled rejection', async () => {
    async function* source(): AsyncGenerator<number> {
      yield 1;
      yield 2;
      throw new Error('part-00003.arrow: sha256 mismatch');
    }
    const unhandled: unknown[] = [];
    const onUnhandled = (e: unknown): void => void unhandled.push(e);
    process.on('unhandledRejection', onUnhandled);
    try {
      const got: number[] = [];
      const run = async (): Promise<void> => {
        for await (const v of prefetch(source(), 3)) {
          got.push(v);
          await new Promise((r) => setTimeout(r, 20)); // the train step, while the source has already failed
        }
      };
      await expect(run()).rejects.toThrow('part-00003.arrow: sha256 mismatch');
      await new Promise((r) => setTimeout(r, 20));
      expect(got).toEqual([1, 2]);
      expect(unhandled).toEqual([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });
});
