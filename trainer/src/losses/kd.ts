import { z } from 'zod';
import { defineLoss, Temperature } from './method.js';
import { divideBy, klRows, rowMean, times } from './ops.js';

/**
 * Hinton et al. 2015, "Distilling the Knowledge in a Neural Network" (arXiv:1503.02531):
 * T² · KL(softmax(t/T) ‖ softmax(s/T)), mean over rows. The T² keeps gradient magnitudes
 * comparable across temperatures.
 */
export const kd = defineLoss({
  reference: 'Hinton et al. 2015, arXiv:1503.02531',
  params: z.object({ temperature: Temperature.default(4) }).strict(),
  usesLabels: false,
  loss(o, x, p) {
    const T = p.temperature;
    const kl = klRows(o, o.logSoftmax(divideBy(o, x.teacher, T)), o.logSoftmax(divideBy(o, x.student, T)));
    return times(o, rowMean(o, kl, x.rows), T * T);
  },
});
