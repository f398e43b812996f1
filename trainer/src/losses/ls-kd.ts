import { z } from 'zod';
import { kd } from './kd.js';
import { defineLoss, Temperature } from './method.js';
import type { Ops } from './ops.js';

/** (z − mean) / (std + 1e-7) over the last axis, with the unbiased (C − 1) standard deviation. */
export function standardize<T>(o: Ops<T>, z: T, classes: number): T {
  const centred = o.sub(z, o.mean(z, -1));
  const std = o.sqrt(o.div(o.sum(o.mul(centred, centred), -1), o.scalar(Math.max(1, classes - 1))));
  return o.div(centred, o.add(std, o.scalar(1e-7)));
}

/**
 * Sun et al., CVPR 2024, "Logit Standardization in Knowledge Distillation" (arXiv:2403.01427):
 * KD on z-scored logits, so the student matches the teacher's logit *relations* rather than
 * their scale.
 */
export const lskd = defineLoss({
  reference: 'Sun et al. 2024, arXiv:2403.01427',
  params: z.object({ temperature: Temperature.default(2) }).strict(),
  usesLabels: false,
  loss(o, x, p) {
    return kd.loss(o, { ...x, student: standardize(o, x.student, x.classes), teacher: standardize(o, x.teacher, x.classes) }, p);
  },
});
