/**
 * Teacher features stored next to the logits (feature distillation through the cache): which
 * intermediate tensor, how it is pooled, and at what precision. One spec per stored tensor; the
 * resolved form (with the stored shape per row) goes in the cache manifest, and the spec in the
 * cache key.
 *
 * Pooling works on a per-sample tensor [C, H, W] (or [C, …] of any spatial rank):
 *  - `none`: stored as it is;
 *  - `avg` / `max` without a grid: over every spatial position, giving [C] (global pooling);
 *  - `avg` / `max` with `grid: [h, w]`: adaptive pooling of a [C, H, W] map down to [C, h, w],
 *    cell (i, j) covering rows ⌊i·H/h⌋ … ⌈(i+1)·H/h⌉ − 1 and the same for columns (PyTorch's
 *    adaptive_avg_pool2d / adaptive_max_pool2d windows).
 */
import { z } from 'zod';

export const FeatureSpecSchema = z
  .object({
    /** The teacher's tensor (a node output; `distillate-server tensors` lists them). */
    tensor: z.string().min(1),
    pool: z.enum(['none', 'avg', 'max']).default('none'),
    grid: z.tuple([z.number().int().positive(), z.number().int().positive()]).optional(),
    dtype: z.enum(['float16', 'float32']).default('float16'),
  })
  .strict()
  .refine((f) => f.grid === undefined || f.pool !== 'none', { message: 'a grid needs pool avg or max', path: ['grid'] });
export type FeatureSpec = z.infer<typeof FeatureSpecSchema>;
export type FeatureSpecInput = z.input<typeof FeatureSpecSchema>;

/** A feature as a cache stores it: the spec, the tensor's shape per sample, and the stored shape per row. */
export const StoredFeatureSchema = z.object({
  tensor: z.string().min(1),
  pool: z.enum(['none', 'avg', 'max']),
  grid: z.tuple([z.number().int().positive(), z.number().int().positive()]).optional(),
  dtype: z.enum(['float16', 'float32']),
  /** The teacher's tensor per sample, before pooling. */
  source: z.array(z.number().int().positive()),
  /** What each cache row holds. */
  shape: z.array(z.number().int().positive()),
});
export type StoredFeature = z.infer<typeof StoredFeatureSchema>;

export class FeatureSpecError extends Error {
  override readonly name = 'FeatureSpecError';
}

/** The stored shape of `spec` over a tensor of per-sample shape `source`, or a FeatureSpecError naming both. */
export function resolveFeature(spec: FeatureSpec, source: readonly number[]): StoredFeature {
  const base = { tensor: spec.tensor, pool: spec.pool, dtype: spec.dtype, source: [...source], ...(spec.grid === undefined ? {} : { grid: spec.grid }) };
  if (spec.pool === 'none') return { ...base, shape: [...source] };
  if (source.length < 2)
    throw new FeatureSpecError(`feature ${spec.tensor}: pool ${spec.pool} needs a [C, H, W] map (or [C, …]); the tensor is [${source.join(', ')}] per sample`);
  if (spec.grid === undefined) return { ...base, shape: [source[0]!] };
  if (source.length !== 3) throw new FeatureSpecError(`feature ${spec.tensor}: a grid needs a [C, H, W] map; the tensor is [${source.join(', ')}] per sample`);
  const [C, H, W] = source as [number, number, number];
  const [h, w] = spec.grid;
  if (h > H || w > W) throw new FeatureSpecError(`feature ${spec.tensor}: grid [${h}, ${w}] is finer than the map [${C}, ${H}, ${W}]`);
  return { ...base, shape: [C, h, w] };
}

const count = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

/**
 * `rows` samples of the teacher's tensor ([rows, ...source], row-major) as the cache stores them
 * ([rows, ...shape]), in float64 accumulation.
 */
export function poolFeature(f: StoredFeature, values: Float32Array, rows: number, out = new Float32Array(rows * count(f.shape))): Float32Array {
  const inSize = count(f.source);
  if (values.length !== rows * inSize) throw new RangeError(`feature ${f.tensor}: ${values.length} values for ${rows} rows of [${f.source.join(', ')}]`);
  if (f.pool === 'none') {
    out.set(values);
    return out;
  }
  const max = f.pool === 'max';
  const C = f.source[0]!;
  if (f.grid === undefined) {
    const S = inSize / C;
    for (let r = 0; r < rows; r++)
      for (let c = 0; c < C; c++) {
        const at = r * inSize + c * S;
        let acc = max ? -Infinity : 0;
        for (let i = 0; i < S; i++) acc = max ? Math.max(acc, values[at + i]!) : acc + values[at + i]!;
        out[r * C + c] = max ? acc : acc / S;
      }
    return out;
  }
  const [, H, W] = f.source as [number, number, number];
  const [h, w] = f.grid;
  for (let r = 0; r < rows; r++)
    for (let c = 0; c < C; c++) {
      const map = r * inSize + c * H * W;
      for (let i = 0; i < h; i++) {
        const [y0, y1] = [Math.floor((i * H) / h), Math.ceil(((i + 1) * H) / h)];
        for (let j = 0; j < w; j++) {
          const [x0, x1] = [Math.floor((j * W) / w), Math.ceil(((j + 1) * W) / w)];
          let acc = max ? -Infinity : 0;
          for (let y = y0; y < y1; y++) for (let x = x0; x < x1; x++) acc = max ? Math.max(acc, values[map + y * W + x]!) : acc + values[map + y * W + x]!;
          out[((r * C + c) * h + i) * w + j] = max ? acc : acc / ((y1 - y0) * (x1 - x0));
        }
      }
    }
  return out;
}

/** Values per row of a stored feature. */
export function featureSize(f: StoredFeature): number {
  return count(f.shape);
}
