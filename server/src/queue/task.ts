/**
 * A shard task: one row range of a job's dataset and the cache shard it becomes. The
 * coordinator puts these on the BullMQ queue; workers parse them with this schema.
 */
import { StorageSchema, StoredFeatureSchema, ViewSpecSchema } from '@distillate/shared';
import { TeacherSidecarSchema } from '@distillate/shared/onnx';
import { z } from 'zod';

export const QUEUE_NAME = 'distillate-shards';
/** Attempts per task before the job fails with the last worker's error. */
export const DEFAULT_ATTEMPTS = 3;
/**
 * Rows per shard (= per task) when the queue is Redis and --shard-rows is not given: small
 * enough that a few workers get an even share of a 60,000-row job (30 tasks), large enough that
 * the per-task upload and fsync stay a small part of a task.
 */
export const DEFAULT_DISTRIBUTED_SHARD_ROWS = 2048;
/**
 * Positions per task for a token cache when --shard-rows is not given (rows = this / block
 * length): a block is L samples' worth of teacher work, so a task by rows would be L times longer.
 */
export const DEFAULT_DISTRIBUTED_SHARD_POSITIONS = 32_768;

const Sha256 = z.string().regex(/^[0-9a-f]{64}$/);

export const ShardTaskSchema = z.object({
  job: z.string().min(1),
  key: Sha256,
  index: z.number().int().nonnegative(),
  /** The shard's first cache row and its row count (for a view cache: whole images, K rows each). */
  start: z.number().int().nonnegative(),
  rows: z.number().int().positive(),
  teacher: z.object({ name: z.string().min(1), sha256: Sha256, sidecar: TeacherSidecarSchema }),
  dataset: z.object({ path: z.string().min(1), fingerprint: Sha256 }),
  /** The coordinator's description of the preprocessing; the worker must derive the same. */
  preprocessing: z.string(),
  temperature: z.number().positive().finite(),
  storage: StorageSchema,
  labelStatistics: z.boolean(),
  /** A view cache: each image of the task becomes its K views (shared's expandViews). */
  views: ViewSpecSchema.optional(),
  /** Teacher features stored with the logits, as the coordinator resolved them (the worker pools each the same way). */
  features: z.array(StoredFeatureSchema).optional(),
  /** A token cache: each row is a block of `block` tokens, and the teacher is a causal language model. */
  tokens: z.object({ block: z.number().int().min(2) }).optional(),
  /** Rows per teacher call (blocks, for a token cache). */
  batchSize: z.number().int().positive(),
  /** Rows per Arrow record batch in the shard. */
  batchRows: z.number().int().positive(),
});
export type ShardTask = z.infer<typeof ShardTaskSchema>;

/** BullMQ job id of a task (BullMQ ids may not contain ':'). */
export function taskId(job: string, index: number): string {
  return `${job}-${index}`;
}

/** Per-task timings a worker reports with its upload (milliseconds). */
export const TimingSchema = z.object({
  read: z.number().nonnegative().default(0),
  teacher: z.number().nonnegative().default(0),
  encode: z.number().nonnegative().default(0),
  upload: z.number().nonnegative().default(0),
});
export type Timing = z.infer<typeof TimingSchema>;
