import { z } from 'zod';
import type { Ops } from '../ops.js';
import { rowMean } from '../ops.js';
import { defineHint } from './hint.js';

/**
 * A [N, C, H, W] map's spatial attention (Zagoruyko & Komodakis, ICLR 2017, "Paying More
 * Attention to Attention", arXiv:1612.03928, with p = 2): the mean over channels of the squared
 * activations, flattened to [N, H·W] and scaled to unit L2 norm (ε 1e-12 inside the root, for an
 * all-zero map).
 */
export function attentionMap<T>(o: Ops<T>, x: T): T {
  const q = o.flatten(o.mean(o.mul(x, x), 1));
  return o.div(q, o.sqrt(o.add(o.sum(o.mul(q, q), -1), o.scalar(1e-12))));
}

/**
 * Attention transfer: the mean over positions of the squared difference of the two normalized
 * attention maps, then over the rows. No parameters: the channel counts may differ, the spatial
 * sizes must match (checked when the run is planned).
 */
export const at = defineHint({
  reference: 'Zagoruyko & Komodakis 2017, arXiv:1612.03928',
  params: z.object({}).strict(),
  student: 'none',
  loss(o, x) {
    const d = o.sub(attentionMap(o, x.student), attentionMap(o, x.teacher));
    return rowMean(o, o.mean(o.mul(d, d), -1), x.rows);
  },
});
