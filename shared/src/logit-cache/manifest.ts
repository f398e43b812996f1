import { createHash } from 'node:crypto';
import { z } from 'zod';
import { ViewSpecSchema, type ViewSpecInput } from '../views.js';
import type { TokenizerRef } from '../text/tokenizer.js';
import { StoredFeatureSchema, type StoredFeature } from '../features.js';

export const CACHE_FORMAT = 'distillate.logit-cache';
export const CACHE_FORMAT_VERSION = 1;
export const MANIFEST_FILE = 'manifest.json';
export const PROGRESS_FILE = 'progress.json';

const Sha256 = z.string().regex(/^[0-9a-f]{64}$/, 'expected a lowercase hex sha256');

export const StorageSchema = z.discriminatedUnion('mode', [
  z.object({ mode: z.literal('dense'), dtype: z.enum(['float32', 'float16']).default('float32') }),
  z.object({
    mode: z.literal('topk'),
    k: z.number().int().positive(),
    dtype: z.enum(['float32', 'float16']).default('float32'),
  }),
  /**
   * Token caches only: per position, `n` draws from softmax(z / T) by a generator seeded from
   * (seed, row id, position), stored as the distinct ids drawn, how often each was drawn and the
   * teacher's log-probability of each (float16). Padding positions draw nothing.
   */
  z.object({
    mode: z.literal('sampled'),
    n: z.number().int().min(1).max(255),
    seed: z.number().int().nonnegative().default(1),
  }),
]);
export type Storage = z.infer<typeof StorageSchema>;
export type StorageInput = z.input<typeof StorageSchema>;

export const TeacherRefSchema = z.object({
  name: z.string().min(1),
  sha256: Sha256,
  /** A classifier's class names; empty for a language model (see the manifest's `tokens`). */
  classes: z.array(z.string()),
});
export type TeacherRef = z.infer<typeof TeacherRefSchema>;

export const ShardSchema = z.object({
  file: z.string().regex(/^part-\d{5}\.arrow$/),
  rows: z.number().int().positive(),
  bytes: z.number().int().positive(),
  sha256: Sha256,
  firstId: z.number().int(),
  lastId: z.number().int(),
  /** Token caches: the shard's positions that are not padding. */
  tokens: z.number().int().nonnegative().optional(),
});
export type Shard = z.infer<typeof ShardSchema>;

const ManifestBody = {
  format: z.literal(CACHE_FORMAT),
  version: z.literal(CACHE_FORMAT_VERSION),
  key: Sha256,
  teacher: TeacherRefSchema,
  dataset: z.object({ fingerprint: Sha256, rows: z.number().int().nonnegative() }),
  /** Canonical description of the input preprocessing the teacher saw (part of the key). */
  preprocessing: z.string(),
  /** Stored logits are z / temperature. */
  temperature: z.number().positive().finite(),
  storage: StorageSchema,
  /** Whether shards carry pseudo_label, confidence, entropy and margin (label jobs). */
  labelStatistics: z.boolean(),
  producer: z.object({ name: z.string(), version: z.string() }),
  /**
   * A view cache: `views.count` rows per image (image-major: an image's K views are adjacent and
   * never split across shards), each with the view's index and parameters (columns view, dx, dy,
   * flip). The cache then holds dataset.rows × count rows.
   */
  views: ViewSpecSchema.optional(),
  /**
   * A token cache (a language-model teacher over a token dataset): each row is one block of
   * `positions` tokens and every column holds one entry per position; `vocabSize` plays the part
   * of the class count. `bytesPerToken`: shard bytes over the positions that are not padding.
   */
  tokens: z
    .object({
      positions: z.number().int().min(1),
      vocabSize: z.number().int().min(2),
      tokenizer: z.object({ name: z.string(), sha256: Sha256, vocabSize: z.number().int().positive() }),
      count: z.number().int().nonnegative(),
      bytesPerToken: z.number().nonnegative(),
    })
    .optional(),
  /**
   * Teacher features stored next to the logits (features.ts): entry i is column `feature_i`,
   * FixedSizeList<Float16 or Float32> of the stored shape's size.
   */
  features: z.array(StoredFeatureSchema).optional(),
  shards: z.array(ShardSchema),
};

export const CacheManifestSchema = z.object({ ...ManifestBody, createdAt: z.string(), complete: z.literal(true) });
export type CacheManifest = z.infer<typeof CacheManifestSchema>;

/** Written after each durable shard while a cache is being built; resumption reads it. */
export const CacheProgressSchema = z.object({ ...ManifestBody, complete: z.literal(false) });
export type CacheProgress = z.infer<typeof CacheProgressSchema>;

export interface CacheKeyInput {
  readonly teacherSha256: string;
  readonly datasetFingerprint: string;
  readonly preprocessing: string;
  readonly temperature: number;
  readonly storage: StorageInput;
  readonly views?: ViewSpecInput | undefined;
  /** Token caches: positions per row. */
  readonly positions?: number | undefined;
  /** Teacher features stored with the logits (their specs; the shapes follow from the teacher). */
  readonly features?: readonly Pick<StoredFeature, 'tensor' | 'pool' | 'grid' | 'dtype'>[] | undefined;
}

/**
 * The cache key: sha256 over everything that changes the stored numbers. Two jobs with the
 * same key would write the same bytes, so the second is a cache hit.
 */
export function cacheKey(input: CacheKeyInput): string {
  const storage = StorageSchema.parse(input.storage);
  const canonical = JSON.stringify([
    CACHE_FORMAT,
    CACHE_FORMAT_VERSION,
    input.teacherSha256,
    input.datasetFingerprint,
    input.preprocessing,
    input.temperature,
    storage.mode,
    storage.mode === 'topk' ? storage.k : null,
    storage.mode === 'sampled' ? null : storage.dtype,
    // Appended only where they apply, so keys of earlier caches stay what they were.
    ...(storage.mode === 'sampled' ? [{ sampled: storage.n, seed: storage.seed }] : []),
    ...(input.positions === undefined ? [] : [{ positions: input.positions }]),
    // Appended only for view caches, so keys of plain caches stay what they were.
    ...(input.views === undefined ? [] : [ViewSpecSchema.parse(input.views)]),
    // Appended only when features are stored, so keys of logit-only caches stay what they were.
    ...(input.features === undefined || input.features.length === 0
      ? []
      : [{ features: input.features.map((f) => [f.tensor, f.pool, f.grid ?? null, f.dtype]) }]),
  ]);
  return createHash('sha256').update(canonical).digest('hex');
}

/** What a manifest and a progress record hold besides `complete` (and the manifest's createdAt). */
export function cacheRecordBody(o: {
  readonly key: string;
  readonly teacher: TeacherRef;
  readonly dataset: { readonly fingerprint: string; readonly rows: number };
  readonly preprocessing: string;
  readonly temperature: number;
  readonly storage: Storage;
  readonly labelStatistics: boolean;
  readonly producer: { readonly name: string; readonly version: string };
  readonly views?: z.infer<typeof ViewSpecSchema> | undefined;
  readonly tokens?: { readonly positions: number; readonly vocabSize: number; readonly tokenizer: TokenizerRef } | undefined;
  readonly features?: readonly StoredFeature[] | undefined;
  readonly shards: readonly Shard[];
}): Omit<CacheProgress, 'complete'> {
  const tokenCount = o.shards.reduce((s, x) => s + (x.tokens ?? 0), 0);
  const bytes = o.shards.reduce((s, x) => s + x.bytes, 0);
  return {
    format: CACHE_FORMAT,
    version: CACHE_FORMAT_VERSION,
    key: o.key,
    teacher: o.teacher,
    dataset: { fingerprint: o.dataset.fingerprint, rows: o.dataset.rows },
    preprocessing: o.preprocessing,
    temperature: o.temperature,
    storage: o.storage,
    labelStatistics: o.labelStatistics,
    producer: o.producer,
    ...(o.views === undefined ? {} : { views: o.views }),
    ...(o.tokens === undefined
      ? {}
      : {
          tokens: {
            positions: o.tokens.positions,
            vocabSize: o.tokens.vocabSize,
            tokenizer: { ...o.tokens.tokenizer },
            count: tokenCount,
            bytesPerToken: tokenCount === 0 ? 0 : Math.round((bytes / tokenCount) * 100) / 100,
          },
        }),
    ...(o.features === undefined || o.features.length === 0 ? {} : { features: o.features.map((f) => ({ ...f })) }),
    shards: [...o.shards],
  };
}
