/**
 * The precompute pipeline, a plain function: a teacher's logits over a dataset into a logit
 * cache, written through LogitCacheWriter (inference of the next batch overlaps the write of
 * the previous one), resuming from the cache's durable shards. A cache that already exists is a
 * hit and nothing runs.
 */
import {
  DatasetReader,
  isTokenDataset,
  LogitCacheWriter,
  cacheKey,
  expandViews,
  findCache,
  imageGeometry,
  StorageSchema,
  FeatureSpecError,
  poolFeature,
  resolveFeature,
  FeatureSpecSchema,
  closestNames,
  type FeatureSpecInput,
  type Ids,
  type Storage,
  type StoredFeature,
  type ViewSpec,
} from '@distillate/shared';
import { TeacherError, datasetPreprocessor, type Preprocessor, type Teacher, type TeacherInfo } from '@distillate/shared/onnx';
import type { Logger } from 'pino';
import type { JobRequest } from './request.js';
import { precomputeTokenLogits } from './precompute-tokens.js';

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
  readonly request: Pick<JobRequest, 'type' | 'temperature' | 'storage' | 'batchSize'> & {
    readonly views?: ViewSpec | undefined;
    readonly features?: readonly FeatureSpecInput[] | undefined;
  };
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
  /** The dataset read (absent for a token dataset, whose cache is a language model's). */
  readonly dataset?: DatasetReader;
}

/** What a job's cache is (its key and everything the key is made of), before any row runs. */
export interface CachePlan {
  readonly info: TeacherInfo;
  readonly dataset: DatasetReader;
  readonly pre: Preprocessor;
  readonly fingerprint: string;
  /** Dataset rows (images, for a view cache). */
  readonly rows: number;
  readonly labelStatistics: boolean;
  readonly preprocessing: string;
  readonly storage: Storage;
  /** Teacher features stored with the logits (empty: logits only). */
  readonly features: StoredFeature[];
  readonly key: string;
}

/**
 * The features a job stores, resolved against the teacher's tensors (tensors.ts): refused in
 * one line before any row runs when a name is unknown (with the closest names), the tensor is
 * not float32, or the pooling cannot apply to its shape (naming both).
 */
export async function planFeatures(teacher: Teacher, specs: readonly FeatureSpecInput[] | undefined): Promise<StoredFeature[]> {
  if (specs === undefined || specs.length === 0) return [];
  const tensors = await teacher.tensors();
  const refuse = (code: string, message: string): never => {
    throw new TeacherError('bad_request', code, message);
  };
  return specs.map((input) => {
    const spec = FeatureSpecSchema.parse(input);
    const t = tensors.find((x) => x.name === spec.tensor);
    if (t === undefined) {
      const close = closestNames(
        spec.tensor,
        tensors.map((x) => x.name),
      ).map((n) => `${n} [${tensors.find((x) => x.name === n)!.shape.join(', ')}]`);
      return refuse(
        'unknown_tensor',
        `teacher ${teacher.name} has no tensor "${spec.tensor}"; the closest: ${close.join(', ')} (distillate-server tensors --teacher ${teacher.name} lists all ${tensors.length})`,
      );
    }
    if (t.dtype !== 'float32') return refuse('bad_feature', `teacher ${teacher.name}'s tensor ${t.name} is ${t.dtype}; features are float32 tensors`);
    try {
      return resolveFeature(spec, t.shape);
    } catch (err) {
      if (err instanceof FeatureSpecError) return refuse('bad_feature', `teacher ${teacher.name}: ${err.message}`);
      throw err;
    }
  });
}

/** The cache a job makes: the in-process pipeline and the Redis coordinator both start here. */
export async function planCache(teacher: Teacher, datasetPath: string, req: PrecomputeOptions['request']): Promise<CachePlan> {
  const { info } = await teacher.load();
  const dataset = await DatasetReader.open(datasetPath);
  const pre = datasetPreprocessor(dataset.info, info, teacher.sidecar);
  const fingerprint = await dataset.fingerprint();
  const rows = await dataset.countRows();
  const labelStatistics = req.type === 'label';
  const preprocessing = cachePreprocessing(pre.description, labelStatistics);
  const storage = StorageSchema.parse(req.storage);
  const features = await planFeatures(teacher, req.features);
  const key = cacheKey({
    teacherSha256: info.sha256,
    datasetFingerprint: fingerprint,
    preprocessing,
    temperature: req.temperature,
    storage,
    views: req.views,
    features,
  });
  return { info, dataset, pre, fingerprint, rows, labelStatistics, preprocessing, storage, features, key };
}

export async function precomputeLogits(o: PrecomputeOptions): Promise<PrecomputeResult> {
  if (await isTokenDataset(o.datasetPath)) return precomputeTokenLogits(o);
  const { teacher, request: req } = o;
  const { info, dataset, pre, fingerprint, rows, labelStatistics: label, preprocessing, storage, features, key } = await planCache(teacher, o.datasetPath, req);
  const views = req.views;
  const geometry = views === undefined ? undefined : imageGeometry(dataset.info); // refuses flat samples
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
    views,
    ...(features.length === 0 ? {} : { features }),
    ...(o.shardRows === undefined ? {} : { shardRows: o.shardRows }),
  });
  const K = views?.count ?? 1;
  const names = features.map((f) => f.tensor);
  // Images per teacher call: its K views go in one call with the image.
  const B = Math.max(1, Math.floor(req.batchSize / K));
  const D = dataset.inputSize;
  // onnxruntime-node runs inference synchronously before resolving, so the input buffer is
  // free again once `logits` resolves: reuse it rather than allocating per batch.
  let scratch: Float32Array | undefined;
  await writePipelined({
    writer,
    batches: dataset,
    // Durable shards hold whole images (a view cache's shards are multiples of K rows).
    skip: writer.resumedRows / K,
    callRows: B,
    total: rows,
    options: o,
    compute: async (batch, r, n) => {
      const stored = batch.inputs.subarray(r * D, (r + n) * D);
      let ids: Ids = batch.ids.subarray(r, r + n);
      let raw: Float32Array | Uint8Array = stored;
      if (views !== undefined && geometry !== undefined) {
        ({ ids, raw } = expandViews(views, geometry, ids, stored, D));
      }
      const x = pre.apply(raw, n * K, scratch);
      scratch = x.length === B * K * D ? x : scratch;
      if (features.length === 0) return { ids, logits: await teacher.logits(x, n * K) };
      const out = await teacher.logitsAndTensors(x, n * K, names);
      return { ids, logits: out.logits, features: features.map((f, i) => poolFeature(f, out.tensors[i]!, n * K)) };
    },
  });
  return { key, rows, cacheHit: false, dataset };
}

/**
 * The loop both precompute pipelines (classes here, tokens in precompute-tokens.ts) share:
 * `batches` in teacher calls of `callRows` rows, the first `skip` rows (durable from an earlier
 * run) passed over, each call's logits computed while the previous call's are written, progress
 * after each call, then the manifest; on any error the writer is aborted (durable shards stay).
 */
export async function writePipelined<Batch extends { readonly rows: number }>(o: {
  readonly writer: LogitCacheWriter;
  readonly batches: AsyncIterable<Batch>;
  readonly skip: number;
  readonly callRows: number;
  readonly total: number;
  readonly options: Pick<PrecomputeOptions, 'signal' | 'logger' | 'onProgress'>;
  /** Rows [start, start + rows) of `batch`, as the writer takes them. */
  readonly compute: (batch: Batch, start: number, rows: number) => Promise<Parameters<LogitCacheWriter['append']>[0]>;
}): Promise<void> {
  const { writer, options } = o;
  try {
    let skip = o.skip;
    let done = skip;
    if (skip > 0) options.logger?.info({ key: writer.key, resumedRows: skip }, 'resuming from durable shards');
    options.onProgress?.(done, o.total);
    let pendingWrite: Promise<void> = Promise.resolve();
    for await (const batch of o.batches) {
      let start = 0;
      if (skip > 0) {
        start = Math.min(skip, batch.rows);
        skip -= start;
      }
      for (let r = start; r < batch.rows; r += o.callRows) {
        if (options.signal?.aborted === true) throw new PrecomputeInterrupted('interrupted');
        const n = Math.min(o.callRows, batch.rows - r);
        const rows = await o.compute(batch, r, n);
        await pendingWrite;
        pendingWrite = writer.append(rows);
        // A write that fails (a full disk) while the next batch runs is thrown at the next
        // `await pendingWrite`, not left as an unhandled rejection that takes the server down.
        pendingWrite.catch(() => undefined);
        done += n;
        options.onProgress?.(done, o.total);
      }
    }
    await pendingWrite;
    await writer.finish();
  } catch (err) {
    await writer.abort();
    throw err;
  }
}
