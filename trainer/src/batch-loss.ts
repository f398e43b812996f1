/**
 * One batch's loss as a function of the student's logits: ce·CE on the labelled rows plus
 * kd·(the recipe's distillation term) on the rows with teacher targets, with the teachers'
 * logits laid out by the teacher plan (one cache, averaged teachers, top-k, or the union modes).
 * Both engines train with this function: TF.js differentiates through it with the model, the
 * ORT engine asks it for dL/dlogits only.
 */
import * as tf from '@tensorflow/tfjs';
import type { TrainBatch } from './data.js';
import type { LossFn } from './engine/engine.js';
import { TrainingError } from './errors.js';
import { crossEntropyLoss, distLoss, dkdLoss, kdLoss, lsKdLoss, multiTeacherLoss, nkdLoss, topKKdLoss } from './losses/index.js';
import type { Distill } from './recipe.js';
import type { TeacherPlan } from './teacher-plan.js';

/** Registered methods, keyed by name (no import side effects). */
const dense = {
  kd: (s: tf.Tensor2D, t: tf.Tensor2D, _y: tf.Tensor1D, p: Distill['params']) => kdLoss(s, t, p as { temperature: number }),
  dkd: (s: tf.Tensor2D, t: tf.Tensor2D, y: tf.Tensor1D, p: Distill['params']) => dkdLoss(s, t, y, p as { alpha: number; beta: number; temperature: number }),
  nkd: (s: tf.Tensor2D, t: tf.Tensor2D, y: tf.Tensor1D, p: Distill['params']) => nkdLoss(s, t, y, p as { temperature: number; gamma: number }),
  dist: (s: tf.Tensor2D, t: tf.Tensor2D, _y: tf.Tensor1D, p: Distill['params']) => distLoss(s, t, p as { beta: number; gamma: number; temperature: number }),
  lskd: (s: tf.Tensor2D, t: tf.Tensor2D, _y: tf.Tensor1D, p: Distill['params']) => lsKdLoss(s, t, p as { temperature: number }),
} satisfies Record<Exclude<Distill['method'], 'scratch'>, (s: tf.Tensor2D, t: tf.Tensor2D, y: tf.Tensor1D, p: Distill['params']) => tf.Scalar>;

export interface BatchLossSettings {
  readonly plan: TeacherPlan;
  readonly distill: Distill;
  readonly ceWeight: number;
  /** After warm-up; 0 turns the distillation term off for this batch. */
  readonly kdWeight: number;
  readonly temperature: number;
}

/**
 * The loss of batch `b`. Call inside a tf.tidy/grad scope: the tensors it makes (labels,
 * teacher logits) are intermediate and released with the scope.
 */
export function batchLoss(b: TrainBatch, s: BatchLossSettings): LossFn {
  const { plan, distill, ceWeight, kdWeight, temperature: T } = s;
  const C = plan.classes.length;
  const teacherRows = Array.from(b.hasTeacher.keys()).filter((r) => b.hasTeacher[r] === 1);
  return (logits) => {
    const terms: Record<string, tf.Scalar> = {};
    const y = tf.tensor1d(b.labels.subarray(0, b.rows), 'int32');
    let total = tf.scalar(0);
    if (ceWeight > 0) {
      const ce = crossEntropyLoss(logits, y);
      terms['ce'] = ce;
      total = tf.add(total, tf.mul(ce, ceWeight));
    }
    if (kdWeight > 0 && plan.mode !== 'none' && teacherRows.length > 0) {
      const all = teacherRows.length === b.rows;
      const idx = tf.tensor1d(teacherRows, 'int32');
      // Rows with a teacher, selected by a one-hot matrix product when only some have one
      // (gather's gradient needs UnsortedSegmentSum, which the wasm backend lacks).
      const rowsOf = (t: tf.Tensor2D): tf.Tensor2D => (all ? t : (tf.matMul(tf.oneHot(idx, b.rows).toFloat(), t) as tf.Tensor2D));
      const st = rowsOf(logits);
      const ys = all ? y : (tf.gather(y, idx) as tf.Tensor1D);
      let kd: tf.Scalar;
      if (plan.mode === 'union' && plan.union !== 'subsets') {
        // Disjoint class lists (checked when planning): scatter each teacher's logits into the union, plus the balancing offsets.
        const U = plan.classes.length;
        const merged = new Float32Array(b.rows * U);
        const offsets = plan.offsets ?? new Float32Array(U);
        b.slots.forEach((slot, i) => {
          const positions = plan.classIndex[i]!;
          const Ci = positions.length;
          const scale = plan.scales?.[i] ?? 1;
          for (let r = 0; r < b.rows; r++) for (let c = 0; c < Ci; c++) merged[r * U + positions[c]!] = slot.logits[r * Ci + c]! * scale + offsets[positions[c]!]!;
        });
        kd = kdLoss(st, tf.gather(tf.tensor2d(merged, [b.rows, U]), idx) as tf.Tensor2D, { temperature: T });
      } else if (plan.mode === 'union') {
        kd = multiTeacherLoss(st, b.slots.map((slot, i) => ({ logits: tf.gather(tf.tensor2d(slot.logits.subarray(0, b.rows * plan.classIndex[i]!.length), [b.rows, plan.classIndex[i]!.length]), idx), classIndex: plan.classIndex[i]! }) as { logits: tf.Tensor2D; classIndex: number[] }), { temperature: T });
      } else if (plan.layout.slots[0]!.kind === 'topk') {
        const spec = plan.layout.slots[0] as { kind: 'topk'; k: number };
        const slot = b.slots[0]!;
        kd = topKKdLoss(st, {
          indices: tf.gather(tf.tensor2d(slot.indices!.subarray(0, b.rows * spec.k), [b.rows, spec.k], 'int32'), idx) as tf.Tensor2D,
          logits: tf.gather(tf.tensor2d(slot.logits.subarray(0, b.rows * spec.k), [b.rows, spec.k]), idx) as tf.Tensor2D,
          logsumexp: tf.gather(tf.tensor1d(slot.logsumexp!.subarray(0, b.rows)), idx) as tf.Tensor1D,
        }, { temperature: T });
      } else {
        // Several teachers over the same classes: average their probabilities, i.e. use the log of the mean softmax as logits.
        const teachers = b.slots.map((slot) => tf.gather(tf.tensor2d(slot.logits.subarray(0, b.rows * C), [b.rows, C]), idx) as tf.Tensor2D);
        const t = teachers.length === 1 ? teachers[0]! : (tf.log(tf.div(tf.addN(teachers.map((z) => tf.softmax(tf.div(z, T)))), teachers.length)).mul(T) as tf.Tensor2D);
        if (distill.method === 'scratch') throw new TrainingError('internal: scratch method with a teacher');
        kd = dense[distill.method](st, t, ys, distill.params);
      }
      terms['kd'] = kd;
      total = tf.add(total, tf.mul(kd, kdWeight));
    }
    terms['total'] = total as tf.Scalar;
    return { total: total as tf.Scalar, terms };
  };
}
