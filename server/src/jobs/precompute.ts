/**
 * The precompute pipeline, a plain function: a teacher's logits over a dataset into a logit
 * cache, written through LogitCacheWriter (inference of the next batch overlaps the write of
 * the previous one), resuming from the cache's durable shards. A cache that already exists is a
 * hit and nothing runs.
 */
import { DatasetReader, LogitCacheWriter, cacheKey, findCache, StorageSchema, type Ids } from '@distillate/shared';
import { datasetPreprocessor, type Teacher } from '@distillate/shared/onnx';
import type { Logger } from 'pino';
import type { JobRequest } from './request.js';

/** Thrown when the signal aborts a run (cancel or shutdown); durable shards stay for a resume. */
export class PrecomputeInterrupted extends Error {
  override readonly name = 'PrecomputeInterrupted';
}

/** The preprocessing part of the cache key. Label caches carry extra columns: keep them apart. */
export function cachePreprocessing(description: string, labelStatistics: boolean): string {
  return labelStatistics ? `${description};columns=label-statistics` : description;
}

export interface PrecomputeOptions {
  readonly teacher: Teacher;
  readonly datasetPath: string;
  readonly cacheRoot: string;
  readonly request: Pick<JobRequest, 'type' | 'temperature' | 'storage' | 'batchSize'>;
  readonly shardRows?: number;
  readonly signal?: AbortSignal;
  readonly logger?: Logger;
  /** The cache key and row count are known (before any row runs). */
  readonly onStart?: (key: string, rows: number) => void;
  readonly onProgress?: (done: number, total: number) => void;
}

export interface PrecomputeResult {
  readonly key: string;
  readonly rows: number;
  readonly cacheHit: boolean;
  readonly dataset: DatasetReader;
}

export async function precomputeLogits(o: PrecomputeOptions): Promise<PrecomputeResult> {
  const { teacher, request: req } = o;
  const { info } = await teacher.load();
  const dataset = await DatasetReader.open(o.datasetPath);
  const pre = datasetPreprocessor(dataset.info, info, teacher.sidecar);
  const fingerprint = await dataset.fingerprint();
  const rows = await dataset.countRows();
  const label = req.type === 'label';
  const preprocessing = cachePreprocessing(pre.description, label);
  const storage = StorageSchema.parse(req.storage);
  const key = cacheKey({ teacherSha256: info.sha256, datasetFingerprint: fingerprint, preprocessing, temperature: req.temperature, storage });
  o.onStart?.(key, rows);
  if ((await findCache(o.cacheRoot, key)) !== undefined) {
    o.onProgress?.(rows, rows);
    return { key, rows, cacheHit: true, dataset };
  }
  const writer = await LogitCacheWriter.open({
    root: o.cacheRoot,
    teacher: { name: info.name, sha256: info.sha256, classes: [...info.classes] },
    dataset: { fingerprint, rows },
    preprocessing,
    temperature: req.temperature,
    storage,
    labelStatistics: label,
    ...(o.shardRows === undefined ? {} : { shardRows: o.shardRows }),
  });
  try {
    const B = req.batchSize;
    const D = dataset.inputSize;
    let skip = writer.resumedRows;
    let done = skip;
    if (skip > 0) o.logger?.info({ key, resumedRows: skip }, 'resuming from durable shards');
    o.onProgress?.(done, rows);
    let pendingWrite: Promise<void> = Promise.resolve();
    // onnxruntime-node runs inference synchronously before resolving, so the input buffer is
    // free again once `logits` resolves: reuse it rather than allocating per batch.
    let scratch: Float32Array | undefined;
    for await (const batch of dataset) {
      let start = 0;
      if (skip > 0) {
        start = Math.min(skip, batch.rows);
        skip -= start;
      }
      for (let r = start; r < batch.rows; r += B) {
        if (o.signal?.aborted === true) throw new PrecomputeInterrupted('interrupted');
        const n = Math.min(B, batch.rows - r);
        const x = pre.apply(batch.inputs.subarray(r * D, (r + n) * D), n, scratch);
        scratch = x.length === B * D ? x : scratch;
        const z = await teacher.logits(x, n);
        await pendingWrite;
        pendingWrite = writer.append({ ids: batch.ids.subarray(r, r + n) as Ids, logits: z });
        // A write that fails (a full disk) while the next batch runs is thrown at the next
        // `await pendingWrite`, not left as an unhandled rejection that takes the server down.
        pendingWrite.catch(() => undefined);
        done += n;
        o.onProgress?.(done, rows);
      }
    }
    await pendingWrite;
    await writer.finish();
  } catch (err) {
    await writer.abort();
    throw err;
  }
  return { key, rows, cacheHit: false, dataset };
}
