/**
 * Precompute for language models: a causal-LM teacher over a token dataset into a token cache,
 * one row per block, each column one entry per position (dense float16/32, top-k with the exact
 * logsumexp, or sampled; shared/src/logit-cache). The same writer and commit protocol as class
 * caches: durable shards, resume after a crash, the manifest last. Refused in one line before any
 * teacher runs: a dataset cut by another tokenizer, a block longer than the teacher's context,
 * a vocabulary that does not match.
 */
import { LogitCacheWriter, StorageSchema, TokenDatasetReader, cacheKey, findCache, type Storage, type TokenDatasetInfo } from '@distillate/shared';
import { TeacherError, type Teacher, type TeacherInfo } from '@distillate/shared/onnx';
import { writePipelined, type PrecomputeOptions } from './precompute.js';

export interface TokenCachePlan {
  readonly info: TeacherInfo;
  readonly dataset: TokenDatasetReader;
  readonly fingerprint: string;
  readonly rows: number;
  readonly storage: Storage;
  readonly key: string;
  /** What the key calls preprocessing: the tokenizer and block length. */
  readonly preprocessing: string;
}

export async function planTokenCache(teacher: Teacher, datasetPath: string, req: PrecomputeOptions['request']): Promise<TokenCachePlan> {
  const { info } = await teacher.load();
  const dataset = await TokenDatasetReader.open(datasetPath);
  const refuse = (code: string, message: string): never => {
    throw new TeacherError('bad_request', code, message);
  };
  if (info.lm === undefined)
    refuse('not_a_language_model', `${datasetPath} is a token dataset but teacher ${info.name} is not a causal language model (sidecar kind causal-lm)`);
  const lm = info.lm!;
  const tok = dataset.info.tokenizer;
  if (tok.sha256 !== lm.tokenizer.sha256) {
    refuse(
      'tokenizer_mismatch',
      `${datasetPath} was tokenized by ${tok.name} (sha256 ${tok.sha256.slice(0, 12)}…) but teacher ${info.name} reads ${lm.tokenizer.name} (sha256 ${lm.tokenizer.sha256.slice(0, 12)}…); re-import the text with --tokenizer ${lm.tokenizer.name}`,
    );
  }
  if (tok.vocabSize !== lm.vocabSize)
    refuse('vocabulary_mismatch', `${datasetPath}'s tokenizer has ${tok.vocabSize} tokens but teacher ${info.name} outputs ${lm.vocabSize}`);
  if (dataset.info.block > lm.context) {
    refuse(
      'block_too_long',
      `${datasetPath} has blocks of ${dataset.info.block} tokens, longer than teacher ${info.name}'s context of ${lm.context}; re-import with --block ${lm.context} or less`,
    );
  }
  if (req.type !== 'precompute') refuse('not_for_tokens', `label jobs are for classifier teachers; precompute a token cache instead`);
  if (req.views !== undefined) refuse('not_for_tokens', 'views are for image datasets; a token dataset has none');
  if (req.features !== undefined && req.features.length > 0)
    refuse('not_for_tokens', 'feature capture is for classifier teachers; a token cache stores logits only');
  const storage = StorageSchema.parse(req.storage);
  if (storage.mode === 'topk' && storage.k > lm.vocabSize) refuse('bad_storage', `top-${storage.k} needs k ≤ the vocabulary of ${lm.vocabSize}`);
  const fingerprint = await dataset.fingerprint();
  const rows = await dataset.countRows();
  const preprocessing = tokenPreprocessing(dataset.info);
  const key = cacheKey({
    teacherSha256: info.sha256,
    datasetFingerprint: fingerprint,
    preprocessing,
    temperature: req.temperature,
    storage,
    positions: dataset.info.block,
  });
  return { info, dataset, fingerprint, rows, storage, key, preprocessing };
}

/** What a token cache's key calls preprocessing: the tokenizer and block length (a queue worker derives it from its copy of the rows). */
export function tokenPreprocessing(info: Pick<TokenDatasetInfo, 'tokenizer' | 'block'>): string {
  return `tokens;tokenizer=${info.tokenizer.sha256};block=${info.block}`;
}

/** Blocks per teacher call: about `batchSize` × 16 positions (a block is L samples' worth of work). */
export function blocksPerCall(batchSize: number, L: number): number {
  return Math.max(1, Math.floor((batchSize * 16) / L));
}

export async function precomputeTokenLogits(o: PrecomputeOptions): Promise<{ key: string; rows: number; cacheHit: boolean }> {
  const { teacher, request: req } = o;
  const plan = await planTokenCache(teacher, o.datasetPath, req);
  const { info, dataset, rows, key } = plan;
  const lm = info.lm!;
  const L = dataset.info.block;
  o.onStart?.(key, rows);
  if ((await findCache(o.cacheRoot, key)) !== undefined) {
    o.onProgress?.(rows, rows);
    return { key, rows, cacheHit: true };
  }
  const writer = await LogitCacheWriter.open({
    root: o.cacheRoot,
    teacher: { name: info.name, sha256: info.sha256, classes: [] },
    dataset: { fingerprint: plan.fingerprint, rows },
    preprocessing: plan.preprocessing,
    temperature: req.temperature,
    storage: plan.storage,
    tokens: { positions: L, vocabSize: lm.vocabSize, tokenizer: dataset.info.tokenizer },
    ...(o.shardRows === undefined ? {} : { shardRows: o.shardRows }),
  });
  const B = blocksPerCall(req.batchSize, L);
  // Two logit buffers in turn: the teacher fills one while the other is being written.
  const buffers = [new Float32Array(B * L * lm.vocabSize), new Float32Array(B * L * lm.vocabSize)];
  let turn = 0;
  await writePipelined({
    writer,
    batches: dataset.batches(),
    skip: writer.resumedRows,
    callRows: B,
    total: rows,
    options: o,
    compute: async (batch, r, n) => {
      const tokens = batch.tokens.slice(r * L, (r + n) * L);
      const logits = await teacher.tokenLogits(tokens, n, L, buffers[turn++ % 2]!.subarray(0, n * L * lm.vocabSize));
      return { ids: batch.ids.subarray(r, r + n), logits, tokens };
    },
  });
  return { key, rows, cacheHit: false };
}
