import { z } from 'zod';
import { defineLoss, Temperature } from './method.js';
import { divideBy, rowMean, times } from './ops.js';

const EPS = 1e-8;

/**
 * Huang et al., NeurIPS 2022, "Knowledge Distillation from A Stronger Teacher" (DIST,
 * arXiv:2205.10536): τ²·(β·(1 − mean row Pearson) + γ·(1 − mean column Pearson)) of
 * softmax(z/τ). Rows: inter-class relations per sample; columns: intra-class across the rows in
 * the mean (mask-weighted batch sums, so rows without a teacher take no part).
 */
export const dist = defineLoss({
  reference: 'Huang et al. 2022, arXiv:2205.10536',
  params: z.object({ beta: z.number().default(1), gamma: z.number().default(1), temperature: Temperature.default(1) }).strict(),
  usesLabels: false,
  loss(o, x, p) {
    type T = typeof x.student;
    const T = p.temperature;
    const ys = o.softmax(divideBy(o, x.student, T));
    const yt = o.softmax(divideBy(o, x.teacher, T));
    const one = o.scalar(1);
    /** Cosine of two centred tensors along a reduction. */
    const cosine = (a: T, b: T, sum: (v: T) => T): T => {
      const norms = o.mul(o.sqrt(sum(o.mul(a, a))), o.sqrt(sum(o.mul(b, b))));
      return o.div(sum(o.mul(a, b)), o.maximum(norms, o.scalar(EPS)));
    };
    // Within each row, across classes.
    const rowCentre = (v: T): T => o.sub(v, o.mean(v, -1));
    const inter = o.sub(
      one,
      rowMean(
        o,
        cosine(rowCentre(ys), rowCentre(yt), (v) => o.sum(v, -1)),
        x.rows,
      ),
    );
    // Within each class, across the rows in the mean.
    const colSum = (v: T): T => o.sum(o.mul(v, x.rows.mask), 0);
    const colCentre = (v: T): T => o.sub(v, o.mul(colSum(v), o.sumAll(x.rows.norm)));
    const intra = o.sub(one, o.meanAll(cosine(colCentre(ys), colCentre(yt), colSum)));
    return times(o, o.add(times(o, inter, p.beta), times(o, intra, p.gamma)), T * T);
  },
});
