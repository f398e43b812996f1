/**
 * Shards encoded one at a time (as remote workers do) and assembled out of order give the same
 * bytes as the streaming writer; duplicates are idempotent, conflicts and bad shards refused.
 */
import { mkdtemp, readFile, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { DatasetReader } from '../dataset.js';
import { writeSyntheticDataset } from '../synthetic.js';
import { CacheAssembler, ShardConflictError } from './assembler.js';
import { CacheIntegrityError } from './errors.js';
import type { StorageInput } from './manifest.js';
import { verifyCache } from './reader.js';
import { encodeCacheShard, inspectCacheShard, planShards, shardLayout } from './shard-codec.js';
import { StorageSchema } from './manifest.js';
import { LogitCacheWriter } from './writer.js';
import { repeatIds } from '../views.js';

const C = 5;
const ROWS = 700;
const T = 3;
const TEACHER = { name: 'toy', sha256: 'b'.repeat(64), classes: Array.from({ length: C }, (_, c) => `c${c}`) };

function rawLogits(ids: Int32Array): Float32Array {
  const out = new Float32Array(ids.length * C);
  ids.forEach((id, r) => {
    for (let c = 0; c < C; c++) out[r * C + c] = Math.fround(5 * Math.cos(id * 0.21 + c * 0.9));
  });
  return out;
}

let root: string;
let datasetPath: string;
let fingerprint: string;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'distillate-assembler-'));
  datasetPath = join(root, 'data.arrow');
  ({ fingerprint } = await writeSyntheticDataset(datasetPath, { rows: ROWS, classes: C, batchRows: 150, firstId: 100 }));
});

const cases: Array<{ name: string; storage: StorageInput; labelStatistics: boolean }> = [
  { name: 'dense float32', storage: { mode: 'dense', dtype: 'float32' }, labelStatistics: false },
  { name: 'top-k float16 with label statistics', storage: { mode: 'topk', k: 3, dtype: 'float16' }, labelStatistics: true },
];

describe('shards encoded apart and assembled', () => {
  for (const c of cases) {
    it(`match the streaming writer byte for byte (${c.name})`, async () => {
      const common = {
        teacher: TEACHER,
        dataset: { fingerprint, rows: ROWS },
        preprocessing: 'p',
        temperature: T,
        storage: c.storage,
        labelStatistics: c.labelStatistics,
      };
      const writer = await LogitCacheWriter.open({ ...common, root: join(root, `stream-${c.name}`), shardRows: 200, batchRows: 64 });
      const dataset = await DatasetReader.open(datasetPath);
      for await (const b of dataset) await writer.append({ ids: b.ids as Int32Array, logits: rawLogits(b.ids as Int32Array) });
      const streamed = await writer.finish();

      const layout = shardLayout(StorageSchema.parse(c.storage), C, { shardRows: 200, batchRows: 64 });
      expect(layout).toEqual({ shardRows: 256, batchRows: 64 });
      const plan = planShards(ROWS, layout);
      expect(plan.map((s) => s.rows)).toEqual([256, 256, 188]);
      const asm = await CacheAssembler.open({ ...common, root: join(root, `assembled-${c.name}`), layout });
      expect(asm.key).toBe(streamed.key);
      // Out of order, as workers finish.
      for (const spec of [...plan].reverse()) {
        const rows = await dataset.readRows(spec.start, spec.rows);
        const shard = encodeCacheShard(asm.encoding, layout.batchRows, rows.ids, rawLogits(rows.ids as Int32Array));
        const checked = inspectCacheShard(shard.bytes, { sha256: shard.sha256, encoding: asm.encoding, ids: rows.ids });
        expect(await asm.accept(spec.index, checked)).toBe('written');
        expect(await asm.accept(spec.index, checked)).toBe('duplicate');
      }
      const assembled = await asm.finish();
      expect(assembled.shards).toEqual(streamed.shards);
      for (const s of streamed.shards) {
        expect(
          Buffer.compare(
            await readFile(join(root, `assembled-${c.name}`, asm.key, s.file)),
            await readFile(join(root, `stream-${c.name}`, streamed.key, s.file)),
          ),
        ).toBe(0);
      }
      expect((await verifyCache(asm.dir)).ok).toBe(true);
    });
  }

  it('assembles a view cache (K rows per image) byte for byte as the streaming writer does, and refuses a layout that splits an image', async () => {
    const views = { count: 3, seed: 7, augment: { shift: 1, flip: true } };
    const storage = StorageSchema.parse({ mode: 'dense' });
    const common = { teacher: TEACHER, dataset: { fingerprint, rows: ROWS }, preprocessing: 'p', temperature: T, storage, labelStatistics: false, views };
    const dataset = await DatasetReader.open(datasetPath);
    const writer = await LogitCacheWriter.open({ ...common, root: join(root, 'views-stream'), shardRows: 200, batchRows: 64 });
    for await (const b of dataset) {
      const ids = repeatIds(b.ids as Int32Array, 3);
      await writer.append({ ids, logits: rawLogits(ids) });
    }
    const streamed = await writer.finish();

    const layout = shardLayout(storage, C, { shardRows: 200, batchRows: 64, viewCount: 3 });
    await expect(CacheAssembler.open({ ...common, root: join(root, 'views-bad'), layout: { shardRows: 200, batchRows: 64 } })).rejects.toThrow(
      /split an image's 3 views/,
    );
    const asm = await CacheAssembler.open({ ...common, root: join(root, 'views-assembled'), layout });
    expect(asm.key).toBe(streamed.key);
    expect(asm.plan.reduce((n, s) => n + s.rows, 0)).toBe(ROWS * 3);
    for (const spec of [...asm.plan].reverse()) {
      const images = await dataset.readRows(spec.start / 3, spec.rows / 3);
      const ids = repeatIds(images.ids as Int32Array, 3);
      const shard = encodeCacheShard(asm.encoding, layout.batchRows, ids, rawLogits(ids));
      await asm.accept(spec.index, inspectCacheShard(shard.bytes, { sha256: shard.sha256, encoding: asm.encoding, ids }));
    }
    const assembled = await asm.finish();
    expect(assembled.views).toEqual(views);
    expect(assembled.shards).toEqual(streamed.shards);
    expect((await verifyCache(asm.dir)).ok).toBe(true);
  });

  it('refuses a conflicting copy, bad hashes, wrong ids and wrong row counts; resumes after a restart', async () => {
    const storage = StorageSchema.parse({ mode: 'dense' });
    const layout = shardLayout(storage, C, { shardRows: 300 });
    const opts = {
      root: join(root, 'faults'),
      teacher: TEACHER,
      dataset: { fingerprint, rows: ROWS },
      preprocessing: 'p',
      temperature: T,
      storage,
      labelStatistics: false,
      layout,
    };
    const dataset = await DatasetReader.open(datasetPath);
    let asm = await CacheAssembler.open(opts);
    const rows = await dataset.readRows(300, 300);
    const good = encodeCacheShard(asm.encoding, layout.batchRows, rows.ids, rawLogits(rows.ids as Int32Array));
    await asm.accept(1, inspectCacheShard(good.bytes, { sha256: good.sha256, encoding: asm.encoding, ids: rows.ids }));

    const tampered = rawLogits(rows.ids as Int32Array);
    tampered[7] = tampered[7]! + 1;
    const other = encodeCacheShard(asm.encoding, layout.batchRows, rows.ids, tampered);
    await expect(asm.accept(1, inspectCacheShard(other.bytes, { sha256: other.sha256, encoding: asm.encoding, ids: rows.ids }))).rejects.toThrow(
      ShardConflictError,
    );
    expect(() => inspectCacheShard(good.bytes, { sha256: other.sha256, encoding: asm.encoding, ids: rows.ids })).toThrow(/claimed/);
    const shifted = await dataset.readRows(301, 300);
    expect(() => inspectCacheShard(good.bytes, { sha256: good.sha256, encoding: asm.encoding, ids: shifted.ids })).toThrow(CacheIntegrityError);
    const short = await dataset.readRows(300, 299);
    expect(() => inspectCacheShard(good.bytes, { sha256: good.sha256, encoding: asm.encoding, ids: short.ids })).toThrow(/expected no more rows|holds/);
    const wrongStorage = { ...asm.encoding, storage: StorageSchema.parse({ mode: 'topk', k: 2 }) };
    expect(() => inspectCacheShard(good.bytes, { sha256: good.sha256, encoding: wrongStorage, ids: rows.ids })).toThrow(/columns/);

    // A restart keeps the durable shard and asks only for the others.
    await asm.release();
    asm = await CacheAssembler.open(opts);
    expect(asm.has(1)).toBe(true);
    expect(asm.missing().map((s) => s.index)).toEqual([0, 2]);
    await asm.release();
    // The streaming writer resumes only a gap-free prefix: none here.
    const w = await LogitCacheWriter.open({ ...opts, shardRows: 300 });
    expect(w.resumedRows).toBe(0);
    await w.abort();
    expect((await readdir(join(root, 'faults', asm.key))).filter((f) => f.endsWith('.arrow'))).toEqual([]);
  });
});
