import { z } from 'zod';
import { defineLoss, Temperature } from './method.js';
import { divideBy, dropClasses, klRows, MASK, rowMean, times } from './ops.js';

/**
 * Zhao et al., CVPR 2022, "Decoupled Knowledge Distillation" (arXiv:2203.08679), eq. 7:
 * α·TCKD + β·NCKD, both × T², mean over rows.
 * TCKD = KL over the binary split (target, all non-targets) of softmax(z/T);
 * NCKD = KL over the non-target classes, renormalised (softmax with the target removed).
 */
export const dkd = defineLoss({
  reference: 'Zhao et al. 2022, arXiv:2203.08679, eq. 7',
  params: z.object({ alpha: z.number().default(1), beta: z.number().default(8), temperature: Temperature.default(4) }).strict(),
  usesLabels: true,
  loss(o, x, p) {
    type T = typeof x.student;
    const T = p.temperature;
    const s = divideBy(o, x.student, T);
    const t = divideBy(o, x.teacher, T);
    // log of the binary (target, other) masses, in log space to stay finite.
    const binary = (logP: T): T => {
      const target = o.sum(o.mul(logP, x.target), -1);
      const other = o.logSumExp(o.sub(logP, o.mul(x.target, o.scalar(MASK))), -1);
      return o.concat([target, other], -1);
    };
    const tckd = rowMean(o, klRows(o, binary(o.logSoftmax(t)), binary(o.logSoftmax(s))), x.rows);
    const masked = (z: T): T => o.logSoftmax(dropClasses(o, z, x.target));
    const nckd = rowMean(o, klRows(o, masked(t), masked(s)), x.rows);
    return times(o, o.add(times(o, tckd, p.alpha), times(o, nckd, p.beta)), T * T);
  },
});
