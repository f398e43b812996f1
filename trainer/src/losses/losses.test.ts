/**
 * Golden tests: each loss against float64 values computed independently from the papers'
 * formulas (trainer/golden/losses.py, numpy), on the cpu backend.
 */
import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { logSumExp, topK } from '@distillate/shared';
import golden from './golden.json' with { type: 'json' };
import { crossEntropyLoss, distLoss, dkdLoss, kdLoss, lsKdLoss, multiTeacherLoss, nkdLoss, topKKdLoss } from './index.js';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

const s = () => tf.tensor2d(golden.student);
const t = () => tf.tensor2d(golden.teacher);
const y = () => tf.tensor1d(golden.labels, 'int32');
const value = (x: tf.Scalar) => x.dataSync()[0]!;
// float32 arithmetic against float64 references: relative tolerance ~1e-5.
const close = (got: number, want: number) => expect(Math.abs(got - want)).toBeLessThan(2e-5 * Math.max(1, Math.abs(want)));

describe('loss functions match float64 references', () => {
  it('kdLoss (T = 1 and T = 4)', () => {
    close(value(kdLoss(s(), t(), { temperature: 1 })), golden.kd_T1);
    close(value(kdLoss(s(), t(), { temperature: 4 })), golden.kd_T4);
  });
  it('dkdLoss', () => close(value(dkdLoss(s(), t(), y(), { alpha: 1, beta: 8, temperature: 4 })), golden.dkd));
  it('nkdLoss', () => close(value(nkdLoss(s(), t(), y(), { temperature: 4, gamma: 1.5 })), golden.nkd));
  it('distLoss', () => close(value(distLoss(s(), t(), { beta: 1, gamma: 2, temperature: 4 })), golden.dist));
  it('lsKdLoss', () => close(value(lsKdLoss(s(), t(), { temperature: 2 })), golden.lskd));
  it('crossEntropyLoss, skipping unlabelled rows', () => {
    close(value(crossEntropyLoss(s(), y())), golden.ce);
    const partial = tf.tensor1d([golden.labels[0]!, -1, -1, -1, -1], 'int32');
    const only = value(crossEntropyLoss(tf.tensor2d([golden.student[0]!]), tf.tensor1d([golden.labels[0]!], 'int32')));
    close(value(crossEntropyLoss(s(), partial)), only);
  });

  const topKTeacher = (k: number, T: number) => {
    const scaled = golden.teacher.flat().map((v) => v / T);
    const top = topK(scaled, 7, k);
    return {
      indices: tf.tensor2d(Array.from(top.indices), [5, k], 'int32'),
      logits: tf.tensor2d(Array.from(top.values), [5, k]),
      logsumexp: tf.tensor1d(Array.from(logSumExp(scaled, 7))),
    };
  };
  it('topKKdLoss with k < C, and k = C equals kdLoss', () => {
    close(value(topKKdLoss(s(), topKTeacher(3, 4), { temperature: 4 })), golden.topk3);
    close(value(topKKdLoss(s(), topKTeacher(7, 4), { temperature: 4 })), golden.topk7);
    close(value(topKKdLoss(s(), topKTeacher(7, 4), { temperature: 4 })), value(kdLoss(s(), t(), { temperature: 4 }))); // the code, not two fixtures
  });
  it('multiTeacherLoss over two teachers with disjoint class subsets', () => {
    const got = multiTeacherLoss(
      s(),
      [
        { logits: tf.tensor2d(golden.multi.a), classIndex: golden.multi.a_idx },
        { logits: tf.tensor2d(golden.multi.b), classIndex: golden.multi.b_idx },
      ],
      { temperature: 4 },
    );
    close(value(got), golden.multi.value);
  });
});

describe('loss behaviour', () => {
  it('every loss is zero-ish when the student equals the teacher (except NKD/DKD target terms)', () => {
    expect(value(kdLoss(t(), t(), { temperature: 3 }))).toBeLessThan(1e-5);
    expect(value(lsKdLoss(t(), t(), { temperature: 3 }))).toBeLessThan(1e-5);
    expect(value(dkdLoss(t(), t(), y(), { alpha: 1, beta: 8, temperature: 3 }))).toBeLessThan(1e-4);
    expect(value(distLoss(t(), t(), { beta: 1, gamma: 1, temperature: 3 }))).toBeLessThan(1e-4);
  });
  it('gradients are finite for extreme logits', () => {
    const big = tf.tensor2d([[500, -500, 0, 1, 2, 3, 4]]);
    const g = tf.grad((x: tf.Tensor) => dkdLoss(x as tf.Tensor2D, big, tf.tensor1d([0], 'int32'), { alpha: 1, beta: 8, temperature: 1 }))(tf.tensor2d([[0, 0, 0, 0, 0, 0, 0]]));
    expect(Array.from(g.dataSync()).every(Number.isFinite)).toBe(true);
  });
  it('rejects mismatched shapes with a clear error', () => {
    expect(() => kdLoss(tf.zeros([2, 3]) as tf.Tensor2D, tf.zeros([2, 4]) as tf.Tensor2D, { temperature: 1 })).toThrow(/must both be \[N, C\]/);
  });
});
