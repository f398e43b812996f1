/** The job request: what a client may ask for, parsed with zod at the edge (HTTP handler, CLI). */
import { FeatureSpecSchema, StorageSchema, ViewSpecSchema } from '@distillate/shared';
import { z } from 'zod';

export const JobRequestSchema = z
  .object({
    type: z.enum(['precompute', 'label']),
    teacher: z.string().min(1),
    /** Dataset path relative to --data. */
    dataset: z.string().min(1),
    temperature: z.number().positive().finite().default(1),
    storage: StorageSchema.default({ mode: 'dense', dtype: 'float32' }),
    label: z
      .object({
        /** Keep rows whose top-1 probability is at least this. */
        threshold: z.number().min(0).max(1).default(0),
        /** Keep at most this many rows per pseudo-class (in dataset order). */
        perClassMax: z.number().int().positive().optional(),
        /** Where to write the selected rows as a dataset, relative to --data. */
        output: z.string().min(1).optional(),
      })
      .strict()
      .optional(),
    /**
     * Store K augmented views per image with the teacher's logits for each (precompute only):
     * `{ count: K, seed, augment: { shift: px, flip: bool } }`.
     */
    views: ViewSpecSchema.optional(),
    /**
     * Teacher features to store next to the logits (precompute and label jobs): intermediate tensors by
     * name (`GET /v1/teachers/:name/tensors`), each pooled as asked: `[{ tensor, pool: none |
     * avg | max, grid?: [h, w], dtype: float16 | float32 }]`.
     */
    features: z.array(FeatureSpecSchema).min(1).max(16).optional(),
    /** Rows per teacher inference call. */
    batchSize: z.number().int().positive().max(8192).default(256),
  })
  .strict()
  .refine((r) => r.type === 'label' || r.label === undefined, { message: '"label" options apply to label jobs only', path: ['label'] })
  .refine((r) => r.type === 'precompute' || r.views === undefined, { message: '"views" apply to precompute jobs only', path: ['views'] });
export type JobRequest = z.infer<typeof JobRequestSchema>;
export type JobRequestInput = z.input<typeof JobRequestSchema>;
