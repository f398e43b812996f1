import { z } from 'zod';
import { defineLoss, Temperature } from './method.js';
import { divideBy, rowMean } from './ops.js';

/**
 * Total variation distance, ½ Σ_c |softmax(t/T)_c − softmax(s/T)_c|, mean over rows: a bounded
 * distance (0 to 1), as in Wen et al., ACL 2023, "f-Divergence Minimization for Sequence-Level
 * Knowledge Distillation" (arXiv:2307.15190). Unscaled by T (it is not a KL).
 */
export const tvd = defineLoss({
  reference: 'Wen et al. 2023, arXiv:2307.15190',
  params: z.object({ temperature: Temperature.default(1) }).strict(),
  usesLabels: false,
  loss(o, x, p) {
    const T = p.temperature;
    const diff = o.sub(o.softmax(divideBy(o, x.teacher, T)), o.softmax(divideBy(o, x.student, T)));
    return rowMean(o, o.mul(o.sum(o.abs(diff), -1), o.scalar(0.5)), x.rows);
  },
});
