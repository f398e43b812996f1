import { z } from 'zod';
import { defineLoss, Temperature } from './method.js';
import { divideBy, klRows, rowMean, times } from './ops.js';

/**
 * Reverse KL, T² · KL(softmax(s/T) ‖ softmax(t/T)), mean over rows: mode-seeking where forward
 * KD is mass-covering, the divergence MiniLLM (Gu et al. 2024, arXiv:2306.08543) and GKD
 * (Agarwal et al. 2024, arXiv:2306.13649) use for language models.
 */
export const rkl = defineLoss({
  reference: 'Gu et al. 2024, arXiv:2306.08543',
  params: z.object({ temperature: Temperature.default(1) }).strict(),
  usesLabels: false,
  loss(o, x, p) {
    const T = p.temperature;
    const kl = klRows(o, o.logSoftmax(divideBy(o, x.student, T)), o.logSoftmax(divideBy(o, x.teacher, T)));
    return times(o, rowMean(o, kl, x.rows), T * T);
  },
});
