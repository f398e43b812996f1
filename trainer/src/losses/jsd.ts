import { z } from 'zod';
import { defineLoss, Temperature } from './method.js';
import { divideBy, klRows, logAddExp, rowMean, times } from './ops.js';

/**
 * Generalized Jensen-Shannon divergence (Agarwal et al., ICLR 2024, "On-Policy Distillation of
 * Language Models: Learning from Self-Generated Mistakes", arXiv:2306.13649, GKD eq. 2), with
 * P = softmax(t/T) the teacher, Q = softmax(s/T) the student and M = β·P + (1 − β)·Q:
 * T² · (β·KL(P‖M) + (1 − β)·KL(Q‖M)), mean over rows. β → 0 behaves like forward KL and β → 1
 * like reverse KL, scaled by β; β = 0.5 is the symmetric JSD. log M is a log-add-exp, so it
 * stays finite where both probabilities underflow.
 */
export const jsd = defineLoss({
  reference: 'Agarwal et al. 2024, arXiv:2306.13649, eq. 2',
  params: z.object({ beta: z.number().gt(0).lt(1).default(0.5), temperature: Temperature.default(1) }).strict(),
  usesLabels: false,
  loss(o, x, p) {
    const T = p.temperature;
    const logP = o.logSoftmax(divideBy(o, x.teacher, T));
    const logQ = o.logSoftmax(divideBy(o, x.student, T));
    const logM = logAddExp(o, o.add(logP, o.scalar(Math.log(p.beta))), o.add(logQ, o.scalar(Math.log(1 - p.beta))));
    const rows = o.add(times(o, klRows(o, logP, logM), p.beta), times(o, klRows(o, logQ, logM), 1 - p.beta));
    return times(o, rowMean(o, rows, x.rows), T * T);
  },
});
