import { z } from 'zod';
import { rowMean } from '../ops.js';
import { defineHint } from './hint.js';

/**
 * FitNets (Romero et al., ICLR 2015, "FitNets: Hints for Thin Deep Nets", arXiv:1412.6550): the
 * student's tensor through a learned regressor, mean squared error to the teacher's feature,
 * averaged over its values and then over the rows.
 */
export const fitnets = defineHint({
  reference: 'Romero et al. 2015, arXiv:1412.6550',
  params: z.object({}).strict(),
  student: 'regressor',
  loss(o, x) {
    const d = o.sub(o.flatten(x.student), o.flatten(x.teacher));
    return rowMean(o, o.mean(o.mul(d, d), -1), x.rows);
  },
});
