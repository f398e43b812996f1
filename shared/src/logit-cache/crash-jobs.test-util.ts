/**
 * Test helper: three cache writers over the one cache-writing protocol (committer.ts), each
 * writing shard by shard, so a test can kill -9 a process running one and resume in another:
 * the streaming LogitCacheWriter, the out-of-order CacheAssembler, and a writer of a column set
 * that exists only here (an id and a feature vector per row), which gets claim, recovery,
 * progress and manifest from the protocol with no code of its own for them.
 *
 * Run as a script (`node --conditions=source --import tsx crash-jobs.test-util.ts <job> <root>`),
 * it writes every shard of that job, printing `durable <n>` after each.
 */
import { Field, Float32, Int32, Schema } from 'apache-arrow';
import { z } from 'zod';
import { fixedSizeListData, idData, listType, recordBatch } from '../internal/arrow-io.js';
import { CacheAssembler } from './assembler.js';
import { CacheCommitter } from './committer.js';
import { ShardSchema, type CacheKeyInput } from './manifest.js';
import { encodeCacheShard, shardLayout } from './shard-codec.js';
import { shardFileName } from './schema.js';
import { LogitCacheWriter } from './writer.js';

export const CLASSES = 4;
export const SHARD_ROWS = 128;
export const SHARDS = 8;
export const ROWS = SHARD_ROWS * SHARDS;
const TEACHER = { name: 'crash', sha256: 'c'.repeat(64), classes: Array.from({ length: CLASSES }, (_, c) => `c${c}`) };
const DATASET = { fingerprint: 'd'.repeat(64), rows: ROWS };

export const ids = (shard: number): Int32Array => Int32Array.from({ length: SHARD_ROWS }, (_, i) => shard * SHARD_ROWS + i);
export function logits(rowIds: Int32Array): Float32Array {
  return Float32Array.from({ length: rowIds.length * CLASSES }, (_, i) => Math.fround(3 * Math.sin(rowIds[Math.floor(i / CLASSES)]! * 0.7 + (i % CLASSES))));
}

export interface CrashWriter {
  readonly dir: string;
  /** Shard indices already durable when it opened (recovered from an earlier process). */
  readonly recovered: readonly number[];
  /** Write shard `index` and resolve once it is durable. */
  write(index: number): Promise<void>;
  finish(): Promise<void>;
}

export interface CrashJob {
  /** The order the job writes its shards in. */
  readonly order: readonly number[];
  open(root: string): Promise<CrashWriter>;
}

const inOrder = Array.from({ length: SHARDS }, (_, i) => i);

const streaming: CrashJob = {
  order: inOrder,
  async open(root) {
    const w = await LogitCacheWriter.open({
      root,
      teacher: TEACHER,
      dataset: DATASET,
      preprocessing: '',
      temperature: 2,
      storage: { mode: 'dense' },
      shardRows: SHARD_ROWS,
      batchRows: 32,
    });
    return {
      dir: w.dir,
      recovered: inOrder.slice(0, w.resumedRows / SHARD_ROWS),
      async write(index) {
        await w.append({ ids: ids(index), logits: logits(ids(index)) });
        await w.checkpoint();
      },
      finish: async () => void (await w.finish()),
    };
  },
};

const assembled: CrashJob = {
  order: [3, 0, 6, 1, 7, 2, 5, 4],
  async open(root) {
    const storage = { mode: 'topk', k: 2, dtype: 'float32' } as const;
    const layout = shardLayout({ ...storage }, CLASSES, { shardRows: SHARD_ROWS, batchRows: 32 });
    const a = await CacheAssembler.open({
      root,
      teacher: TEACHER,
      dataset: DATASET,
      preprocessing: '',
      temperature: 2,
      storage,
      labelStatistics: true,
      layout,
    });
    return {
      dir: a.dir,
      recovered: inOrder.filter((i) => a.has(i)),
      write: async (index) => void (await a.accept(index, encodeCacheShard(a.encoding, 32, ids(index), logits(ids(index))))),
      finish: async () => void (await a.finish()),
    };
  },
};

/** The test-only column set: `id` and `feature` FixedSizeList<Float32>[3], and a manifest of its own. */
export const FEATURE_DIM = 3;
export const FeatureManifestSchema = z
  .object({
    format: z.literal('test.features'),
    key: z.string(),
    dim: z.number(),
    rows: z.number(),
    shards: z.array(ShardSchema),
    createdAt: z.string(),
    complete: z.literal(true),
  })
  .strict();
const featureSchema = new Schema([new Field('id', new Int32(), false), new Field('feature', listType(FEATURE_DIM, new Float32()), false)]);
export const features = (rowIds: Int32Array): Float32Array =>
  Float32Array.from({ length: rowIds.length * FEATURE_DIM }, (_, i) => rowIds[Math.floor(i / FEATURE_DIM)]! + (i % FEATURE_DIM) / 10);

const featureColumns: CrashJob = {
  order: [5, 1, 2, 0, 7, 3, 6, 4],
  async open(root) {
    const key: CacheKeyInput = {
      teacherSha256: TEACHER.sha256,
      datasetFingerprint: DATASET.fingerprint,
      preprocessing: 'features: test',
      temperature: 1,
      storage: { mode: 'dense', dtype: 'float32' },
    };
    const c = await CacheCommitter.open({
      root,
      key,
      plan: inOrder.map(() => ({ rows: SHARD_ROWS })),
      record: (shards, k) => ({ format: 'test.features', key: k, dim: FEATURE_DIM, rows: ROWS, shards: [...shards] }),
      manifest: FeatureManifestSchema,
    });
    return {
      dir: c.dir,
      recovered: inOrder.filter((i) => c.shard(i) !== undefined),
      async write(index) {
        const w = c.shardWriter(index);
        const rowIds = ids(index);
        await w.write(recordBatch(featureSchema, [idData(rowIds), fixedSizeListData(FEATURE_DIM, new Float32(), features(rowIds))]));
        const done = await w.close();
        await c.commit({ file: shardFileName(index), rows: SHARD_ROWS, bytes: done.bytes, sha256: done.sha256, firstId: rowIds[0]!, lastId: rowIds.at(-1)! });
      },
      finish: async () => void (await c.finish()),
    };
  },
};

export const CRASH_JOBS = { streaming, assembled, featureColumns } as const;
export type CrashJobName = keyof typeof CRASH_JOBS;

async function main(name: string, root: string): Promise<void> {
  const job = CRASH_JOBS[name as CrashJobName];
  if (job === undefined) throw new Error(`unknown job ${name}`);
  const w = await job.open(root);
  let n = 0;
  for (const index of job.order) {
    await w.write(index);
    process.stdout.write(`durable ${++n}\n`);
  }
  await w.finish();
}

if (process.argv[1]?.endsWith('crash-jobs.test-util.ts')) {
  main(process.argv[2] ?? '', process.argv[3] ?? '').catch((err: unknown) => {
    process.stderr.write(`${String(err)}\n`);
    process.exit(1);
  });
}
