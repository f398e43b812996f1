import { z } from 'zod';
import { rowMean } from '../ops.js';
import { defineHint } from './hint.js';

/**
 * A pooled-embedding loss: the student's vector (its penultimate features, or a pooled map)
 * projected by a learned linear layer to the teacher's stored embedding, compared by mean squared
 * error or by cosine distance 1 − cos(s, t) (the representation-matching term of CRD-style and
 * "feature KD" baselines without their contrastive part), then averaged over the rows.
 */
export const embed = defineHint({
  reference: 'pooled-feature matching; cf. Tian et al. 2020 (CRD), arXiv:1910.10699, its embedding heads',
  params: z.object({ distance: z.enum(['mse', 'cosine']).default('mse') }).strict(),
  student: 'regressor',
  loss(o, x, p) {
    const s = o.flatten(x.student);
    const t = o.flatten(x.teacher);
    if (p.distance === 'mse') {
      const d = o.sub(s, t);
      return rowMean(o, o.mean(o.mul(d, d), -1), x.rows);
    }
    const norm = (v: typeof s) => o.sqrt(o.add(o.sum(o.mul(v, v), -1), o.scalar(1e-12)));
    const cos = o.div(o.sum(o.mul(s, t), -1), o.mul(norm(s), norm(t)));
    return rowMean(o, o.sub(o.scalar(1), cos), x.rows);
  },
});
