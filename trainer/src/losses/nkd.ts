import { z } from 'zod';
import { defineLoss, Temperature } from './method.js';
import { divideBy, dropClasses, rowMean, times } from './ops.js';

/**
 * Yang et al., ICCV 2023, "From Knowledge Distillation to Self-Knowledge Distillation: A
 * Unified Approach with Normalized Loss and Customized Soft Labels" (arXiv:2303.13005):
 * −mean(t_y · log s_y) at T = 1, minus γ·T²·mean Σ_{c≠y} softmax(t∖y/T)_c · log softmax(s∖y/T)_c.
 */
export const nkd = defineLoss({
  reference: 'Yang et al. 2023, arXiv:2303.13005',
  params: z.object({ temperature: Temperature.default(1), gamma: z.number().default(1.5) }).strict(),
  usesLabels: true,
  loss(o, x, p) {
    const T = p.temperature;
    const logSy = o.sum(o.mul(o.logSoftmax(x.student), x.target), -1);
    const ty = o.sum(o.mul(o.softmax(x.teacher), x.target), -1);
    const targetTerm = o.neg(rowMean(o, o.mul(ty, logSy), x.rows));
    const logQs = o.logSoftmax(dropClasses(o, divideBy(o, x.student, T), x.target));
    // The target column of qt is exactly 0, so it drops out of the sum.
    const qt = o.softmax(dropClasses(o, divideBy(o, x.teacher, T), x.target));
    const nonTarget = rowMean(o, o.sum(o.mul(qt, logQs), -1), x.rows);
    return o.sub(targetTerm, times(o, nonTarget, p.gamma * T * T));
  },
});
