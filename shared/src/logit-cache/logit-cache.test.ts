import { appendFile, mkdtemp, readFile, readdir, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { DatasetReader } from '../dataset.js';
import { decodeFloat16, encodeFloat16 } from '../float16.js';
import { labelStatistics, logSumExp, topK } from '../numerics.js';
import { writeSyntheticDataset } from '../synthetic.js';
import { alignDatasetWithCaches } from './align.js';
import { CacheIntegrityError, CacheMismatchError, CacheNotFoundError } from './errors.js';
import { MANIFEST_FILE, PROGRESS_FILE, type StorageInput } from './manifest.js';
import { LogitCacheReader, findCache, listCaches, verifyCache, type LogitBatch } from './reader.js';
import { CacheExistsError, LogitCacheWriter } from './writer.js';

const C = 7;
const ROWS = 1000;
const T = 2;
const TEACHER = { name: 'toy', sha256: 'a'.repeat(64), classes: Array.from({ length: C }, (_, c) => `c${c}`) };

/** Deterministic raw teacher logits for a row id. */
function rawLogits(ids: Int32Array): Float32Array {
  const out = new Float32Array(ids.length * C);
  ids.forEach((id, r) => {
    for (let c = 0; c < C; c++) out[r * C + c] = Math.fround(6 * Math.sin(id * 0.37 + c * 1.3) + (c === id % C ? 3 : 0));
  });
  return out;
}

let root: string;
let datasetPath: string;
let fingerprint: string;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'distillate-cache-'));
  datasetPath = join(root, 'data.arrow');
  ({ fingerprint } = await writeSyntheticDataset(datasetPath, { rows: ROWS, classes: C, batchRows: 300, firstId: 5000 }));
});

async function buildCache(storage: StorageInput, extra: { labelStatistics?: boolean; shardRows?: number; subdir?: string } = {}) {
  const writer = await LogitCacheWriter.open({
    root: join(root, extra.subdir ?? 'caches'),
    teacher: TEACHER,
    dataset: { fingerprint, rows: ROWS },
    preprocessing: 'scale=1/255',
    temperature: T,
    storage,
    labelStatistics: extra.labelStatistics ?? false,
    shardRows: extra.shardRows ?? 256,
    batchRows: 64,
  });
  const dataset = await DatasetReader.open(datasetPath);
  for await (const b of dataset) await writer.append({ ids: b.ids as Int32Array, logits: rawLogits(b.ids as Int32Array) });
  return writer.finish();
}

async function readAll(dir: string, temperature?: number): Promise<LogitBatch[]> {
  const reader = await LogitCacheReader.open(dir);
  const out: LogitBatch[] = [];
  for await (const b of reader.batches(temperature === undefined ? {} : { temperature })) out.push(b);
  return out;
}

function concatIds(batches: LogitBatch[]): number[] {
  return batches.flatMap((b) => [...(b.ids as Int32Array)]);
}

const allIds = Int32Array.from({ length: ROWS }, (_, i) => 5000 + i);

describe('logit cache round trip', () => {
  it('dense float32 stores z/T exactly and rescales to any T′', async () => {
    const manifest = await buildCache({ mode: 'dense', dtype: 'float32' });
    expect(manifest.shards.length).toBe(4); // 256 + 256 + 256 + 232
    expect(manifest.shards.map((s) => s.rows)).toEqual([256, 256, 256, 232]);
    expect(manifest.shards[0]!.firstId).toBe(5000);
    expect(manifest.shards[3]!.lastId).toBe(5999);
    const dir = join(root, 'caches', manifest.key);
    const batches = await readAll(dir);
    expect(concatIds(batches)).toEqual([...allIds]);
    const got = Float32Array.from(batches.flatMap((b) => [...b.logits]));
    const raw = rawLogits(allIds);
    expect(got).toEqual(raw.map((v) => Math.fround(v / T)));
    // Read at T′ = 1: z/T · T/1.
    const atOne = Float32Array.from((await readAll(dir, 1)).flatMap((b) => [...b.logits]));
    atOne.forEach((v, i) => expect(v).toBeCloseTo(raw[i]!, 5));
    expect((await verifyCache(dir)).ok).toBe(true);
  });

  it('dense float16 stores the correctly rounded halves of z/T', async () => {
    const manifest = await buildCache({ mode: 'dense', dtype: 'float16' });
    const batches = await readAll(join(root, 'caches', manifest.key));
    const got = Float32Array.from(batches.flatMap((b) => [...b.logits]));
    const want = decodeFloat16(encodeFloat16(rawLogits(allIds).map((v) => Math.fround(v / T))));
    expect(got).toEqual(want);
  });

  it('top-k keeps the k largest scaled logits and the exact logsumexp over all classes', async () => {
    const manifest = await buildCache({ mode: 'topk', k: 3 });
    const dir = join(root, 'caches', manifest.key);
    const batches = await readAll(dir);
    const scaled = rawLogits(allIds).map((v) => Math.fround(v / T));
    const want = topK(scaled, C, 3);
    const lse = logSumExp(scaled, C);
    const b0 = batches[0]!;
    expect(b0.kind).toBe('topk');
    if (b0.kind !== 'topk') return;
    expect(b0.k).toBe(3);
    const indices = Uint32Array.from(batches.flatMap((b) => (b.kind === 'topk' ? [...b.indices] : [])));
    const kept = Float32Array.from(batches.flatMap((b) => [...b.logits]));
    const lses = Float32Array.from(batches.flatMap((b) => (b.kind === 'topk' ? [...b.logsumexp] : [])));
    expect(indices).toEqual(want.indices);
    expect(kept).toEqual(want.values);
    expect(lses).toEqual(Float32Array.from(lse));
    // Kept probabilities + tail mass = 1.
    const p = [0, 1, 2].map((j) => Math.exp(kept[j]! - lses[0]!));
    expect(p.reduce((a, b) => a + b)).toBeLessThanOrEqual(1);
    const reader = await LogitCacheReader.open(dir);
    await expect(async () => {
      for await (const _ of reader.batches({ temperature: 1 })) void _;
    }).rejects.toThrow(/cannot be read at T = 1/);
  });

  it('top-k float16 round-trips', async () => {
    const manifest = await buildCache({ mode: 'topk', k: 2, dtype: 'float16' });
    const batches = await readAll(join(root, 'caches', manifest.key));
    const scaled = rawLogits(allIds).map((v) => Math.fround(v / T));
    const want = decodeFloat16(encodeFloat16(topK(scaled, C, 2).values));
    expect(Float32Array.from(batches.flatMap((b) => [...b.logits]))).toEqual(want);
  });

  it('label jobs store pseudo_label, confidence, entropy and margin at T = 1', async () => {
    const manifest = await buildCache({ mode: 'dense' }, { labelStatistics: true, subdir: 'labelled' });
    expect(manifest.labelStatistics).toBe(true);
    const batches = await readAll(join(root, 'labelled', manifest.key));
    const want = labelStatistics(rawLogits(allIds), C);
    const col = (f: (b: LogitBatch) => ArrayLike<number>) => batches.flatMap((b) => [...Array.from(f(b))]);
    expect(col((b) => b.stats!.pseudoLabel)).toEqual([...want.pseudoLabel]);
    expect(col((b) => b.stats!.confidence)).toEqual([...want.confidence]);
    expect(col((b) => b.stats!.entropy)).toEqual([...want.entropy]);
    expect(col((b) => b.stats!.margin)).toEqual([...want.margin]);
  });

  it('is content-addressed: the same job again is a cache hit, and listCaches finds it', async () => {
    const first = await buildCache({ mode: 'dense' }, { subdir: 'hit' });
    await expect(buildCache({ mode: 'dense' }, { subdir: 'hit' })).rejects.toThrow(CacheExistsError);
    expect((await findCache(join(root, 'hit'), first.key))?.manifest.key).toBe(first.key);
    const listed = await listCaches(join(root, 'hit'));
    expect(listed.map((c) => c.key)).toEqual([first.key]);
  });
});

describe('logit cache integrity', () => {
  async function freshCopy(sub: string) {
    const manifest = await buildCache({ mode: 'dense' }, { subdir: sub });
    return { manifest, dir: join(root, sub, manifest.key) };
  }

  it('a corrupted shard is refused with an error naming the file', async () => {
    const { dir } = await freshCopy('corrupt');
    const shard = join(dir, 'part-00001.arrow');
    const bytes = await readFile(shard);
    bytes[bytes.length >> 1]! ^= 0xff;
    await writeFile(shard, bytes);
    await expect(readAll(dir)).rejects.toThrow(CacheIntegrityError);
    await expect(readAll(dir)).rejects.toThrow(/part-00001\.arrow: sha256 .* does not match/);
    const v = await verifyCache(dir);
    expect(v.ok).toBe(false);
    expect(v.problems.join('\n')).toMatch(/part-00001\.arrow/);
    await expect(LogitCacheReader.open(dir, { verify: 'eager' })).rejects.toThrow(/part-00001\.arrow/);
  });

  it('a truncated or extended shard is refused with an error naming the file', async () => {
    const { dir } = await freshCopy('truncated');
    await truncate(join(dir, 'part-00002.arrow'), 100);
    await expect(readAll(dir)).rejects.toThrow(/part-00002\.arrow: shard is 100 bytes but the manifest says \d+ \(truncated/);
    const { dir: dir2 } = await freshCopy('extended');
    await appendFile(join(dir2, 'part-00000.arrow'), 'xx');
    await expect(readAll(dir2)).rejects.toThrow(/part-00000\.arrow: shard is \d+ bytes/);
  });

  it('a missing shard, or a directory without a complete manifest, is not a cache', async () => {
    const { dir } = await freshCopy('missing');
    const { rm } = await import('node:fs/promises');
    await rm(join(dir, 'part-00003.arrow'));
    await expect(readAll(dir)).rejects.toThrow(/part-00003\.arrow: shard listed in the manifest is missing/);
    await rm(join(dir, MANIFEST_FILE));
    await expect(LogitCacheReader.open(dir)).rejects.toThrow(CacheNotFoundError);
    expect(await listCaches(join(root, 'missing'))).toEqual([]);
  });
});

describe('crash safety and resume', () => {
  it('an interrupted writer leaves no manifest; reopening resumes from the durable shards', async () => {
    const sub = join(root, 'resume');
    const open = () =>
      LogitCacheWriter.open({
        root: sub,
        teacher: TEACHER,
        dataset: { fingerprint, rows: ROWS },
        preprocessing: 'scale=1/255',
        temperature: T,
        storage: { mode: 'dense' },
        shardRows: 256,
        batchRows: 64,
      });
    const first = await open();
    expect(first.resumedRows).toBe(0);
    // Write 600 rows: shards 0 and 1 become durable, 88 rows sit in an open shard.
    await first.append({ ids: allIds.subarray(0, 600), logits: rawLogits(allIds.subarray(0, 600)) });
    expect(await first.checkpoint()).toBe(512);
    const dir = first.dir;
    const files = await readdir(dir);
    expect(files).toContain(PROGRESS_FILE);
    expect(files).not.toContain(MANIFEST_FILE);
    expect(files.filter((f) => /^part-\d{5}\.arrow$/.test(f))).toEqual(['part-00000.arrow', 'part-00001.arrow']);
    // Simulate kill -9: the process is gone, nothing is closed. A lock held by a dead pid is stale.
    await writeFile(join(dir, '.lock'), '999999999');
    await writeFile(join(dir, 'part-00002.arrow.tmp-999999999'), 'partial');
    expect(await listCaches(sub)).toEqual([]);
    await expect(LogitCacheReader.open(dir)).rejects.toThrow(CacheNotFoundError);

    const second = await open();
    expect(second.resumedRows).toBe(512);
    expect(await readdir(dir)).not.toContain('part-00002.arrow.tmp-999999999');
    await second.append({ ids: allIds.subarray(512), logits: rawLogits(allIds.subarray(512)) });
    const manifest = await second.finish();
    expect(manifest.shards.map((s) => s.rows)).toEqual([256, 256, 256, 232]);
    expect(await verifyCache(dir)).toMatchObject({ ok: true, rows: ROWS });
    expect(await readdir(dir)).not.toContain(PROGRESS_FILE);
    const got = Float32Array.from((await readAll(dir)).flatMap((b) => [...b.logits]));
    expect(got).toEqual(rawLogits(allIds).map((v) => Math.fround(v / T)));
  });

  it('a damaged durable shard is rewritten on resume rather than trusted', async () => {
    const sub = join(root, 'resume-damaged');
    const open = () =>
      LogitCacheWriter.open({
        root: sub,
        teacher: TEACHER,
        dataset: { fingerprint, rows: ROWS },
        preprocessing: '',
        temperature: T,
        storage: { mode: 'dense' },
        shardRows: 256,
        batchRows: 64,
      });
    const first = await open();
    await first.append({ ids: allIds.subarray(0, 600), logits: rawLogits(allIds.subarray(0, 600)) });
    await first.abort();
    await truncate(join(first.dir, 'part-00001.arrow'), 10);
    const second = await open();
    expect(second.resumedRows).toBe(256);
    await second.abort();
  });

  it('finish() refuses to write a manifest when rows are missing', async () => {
    const w = await LogitCacheWriter.open({
      root: join(root, 'short'),
      teacher: TEACHER,
      dataset: { fingerprint, rows: ROWS },
      preprocessing: '',
      temperature: T,
      storage: { mode: 'dense' },
    });
    await w.append({ ids: allIds.subarray(0, 10), logits: rawLogits(allIds.subarray(0, 10)) });
    await expect(w.finish()).rejects.toThrow(/wrote 10 rows but the dataset has 1000/);
    expect(await readdir(w.dir)).not.toContain(MANIFEST_FILE);
  });

  it('refuses non-finite teacher logits', async () => {
    const w = await LogitCacheWriter.open({
      root: join(root, 'nan'),
      teacher: TEACHER,
      dataset: { fingerprint, rows: 1 },
      preprocessing: '',
      temperature: T,
      storage: { mode: 'dense' },
    });
    const logits = rawLogits(allIds.subarray(0, 1));
    logits[3] = NaN;
    await expect(w.append({ ids: allIds.subarray(0, 1), logits })).rejects.toThrow(/row 5000: teacher logit NaN is not finite/);
    await w.abort();
  });
});

describe('aligning a dataset with caches', () => {
  it('yields rows in lockstep across different batch boundaries', async () => {
    const manifest = await buildCache({ mode: 'dense' }, { subdir: 'align' });
    const topk = await buildCache({ mode: 'topk', k: 2 }, { subdir: 'align' });
    const dataset = await DatasetReader.open(datasetPath);
    const caches = [await LogitCacheReader.open(join(root, 'align', manifest.key)), await LogitCacheReader.open(join(root, 'align', topk.key))];
    let rows = 0;
    for await (const b of alignDatasetWithCaches(dataset, caches)) {
      expect(b.teachers[0]!.ids).toEqual(b.ids);
      expect(b.teachers[1]!.ids).toEqual(b.ids);
      expect(b.teachers[0]!.logits.length).toBe(b.rows * C);
      expect(b.inputs.length).toBe(b.rows * 64);
      rows += b.rows;
    }
    expect(rows).toBe(ROWS);
  });

  it('refuses a cache built from a different dataset (fingerprint)', async () => {
    const other = join(root, 'other.arrow');
    await writeSyntheticDataset(other, { rows: ROWS, classes: C, seed: 99, firstId: 5000 });
    const manifest = await buildCache({ mode: 'dense' }, { subdir: 'align2' });
    const cache = await LogitCacheReader.open(join(root, 'align2', manifest.key));
    const it = alignDatasetWithCaches(await DatasetReader.open(other), [cache]);
    await expect(it.next()).rejects.toThrow(CacheMismatchError);
    await expect(alignDatasetWithCaches(await DatasetReader.open(other), [cache]).next()).rejects.toThrow(
      /was built from dataset .* but .*other\.arrow has fingerprint/,
    );
  });

  it('names the shard and row where ids stop matching', async () => {
    // Same rows and fingerprint check disabled, but ids shifted from row 300 on.
    const shifted = join(root, 'shifted.arrow');
    const { DatasetWriter } = await import('../dataset.js');
    const src = await DatasetReader.open(datasetPath);
    const w = DatasetWriter.create(shifted, src.info);
    for await (const b of src) {
      const ids = Int32Array.from(b.ids as Int32Array, (id) => (id >= 5300 ? id + 1 : id));
      await w.append({ ids, inputs: b.inputs, labels: b.labels });
    }
    await w.close();
    const manifest = await buildCache({ mode: 'dense' }, { subdir: 'align3' });
    const cache = await LogitCacheReader.open(join(root, 'align3', manifest.key));
    const run = async () => {
      for await (const _ of alignDatasetWithCaches(await DatasetReader.open(shifted), [cache], { checkFingerprint: false })) void _;
    };
    await expect(run()).rejects.toThrow(/part-00001\.arrow row 44 has id 5300, but .*shifted\.arrow row 300 has id 5301/);
  });

  it('refuses a cache with fewer rows than the dataset', async () => {
    const small = join(root, 'small.arrow');
    const { fingerprint: fp } = await writeSyntheticDataset(small, { rows: 100, classes: C, firstId: 5000 });
    const w = await LogitCacheWriter.open({
      root: join(root, 'align4'),
      teacher: TEACHER,
      dataset: { fingerprint: fp, rows: 100 },
      preprocessing: '',
      temperature: T,
      storage: { mode: 'dense' },
    });
    await w.append({ ids: allIds.subarray(0, 100), logits: rawLogits(allIds.subarray(0, 100)) });
    const m = await w.finish();
    const cache = await LogitCacheReader.open(join(root, 'align4', m.key));
    const run = async () => {
      for await (const _ of alignDatasetWithCaches(await DatasetReader.open(datasetPath), [cache], { checkFingerprint: false })) void _;
    };
    await expect(run()).rejects.toThrow(/ends at row 100, but .*data\.arrow has more rows/);
  });
});

describe('recycled read buffers', () => {
  it('yield the same values as fresh buffers when each batch is consumed before the next', async () => {
    const manifest = await buildCache({ mode: 'dense' }, { subdir: 'recycle' });
    const dir = join(root, 'recycle', manifest.key);
    const fresh = Float32Array.from((await readAll(dir)).flatMap((b) => [...b.logits]));
    const reader = await LogitCacheReader.open(dir, { recycleBuffers: true });
    const copied: number[] = [];
    for await (const b of reader.batches()) copied.push(...b.logits);
    expect(Float32Array.from(copied)).toEqual(fresh);
  });
});
