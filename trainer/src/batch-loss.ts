/**
 * One batch's loss: ce·CE on the labelled rows plus kd·(the recipe's distillation term) on the
 * rows with teacher targets, with the teachers' logits laid out by the teacher plan (one cache,
 * averaged teachers, top-k, or the union modes). Two forms of the same formulas: a function of
 * TF.js logits (the TF.js engine differentiates through it) and a graph piece with its feeds
 * (the ORT engine puts it in its train-step graph). loss-graphs.test.ts pins one to the other.
 */
import * as tf from '@tensorflow/tfjs';
import type { Graph } from '@distillate/shared/onnx';
import type { TrainBatch } from './data.js';
import type { BatchLoss, LossFn } from './engine/engine.js';
import { crossEntropyGraph, denseLossGraphs, multiTeacherGraph, topKKdGraph, type Feed, type LossGraph, type RowMean } from './loss-graphs/index.js';
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

/** The loss of batch `b`, in both forms. */
export function batchLoss(b: TrainBatch, s: BatchLossSettings): BatchLoss {
  return { fn: batchLossFn(b, s), graph: batchLossGraph(b, s) };
}

/**
 * The TF.js form. Call inside a tf.tidy/grad scope: the tensors it makes (labels, teacher
 * logits) are intermediate and released with the scope.
 */
export function batchLossFn(b: TrainBatch, s: BatchLossSettings): LossFn {
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
        kd = kdLoss(st, tf.gather(tf.tensor2d(mergedTeacher(b, plan), [b.rows, plan.classes.length]), idx) as tf.Tensor2D, { temperature: T });
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

/** Teachers with disjoint class lists (checked when planning): each one's logits scattered into the union, times its spread factor, plus the class offsets (union: merged / balanced). */
function mergedTeacher(b: TrainBatch, plan: TeacherPlan): Float32Array {
  const U = plan.classes.length;
  const merged = new Float32Array(b.rows * U);
  const offsets = plan.offsets ?? new Float32Array(U);
  b.slots.forEach((slot, i) => {
    const positions = plan.classIndex[i]!;
    const Ci = positions.length;
    const scale = plan.scales?.[i] ?? 1;
    for (let r = 0; r < b.rows; r++) for (let c = 0; c < Ci; c++) merged[r * U + positions[c]!] = slot.logits[r * Ci + c]! * scale + offsets[positions[c]!]!;
  });
  return merged;
}

/** log of the mean of the teachers' softmax(z/T), times T: several same-class teachers averaged (float64). */
function averagedTeacher(slots: readonly Float32Array[], rows: number, C: number, T: number): Float32Array {
  const out = new Float32Array(rows * C);
  const p = new Float64Array(C);
  for (let r = 0; r < rows; r++) {
    p.fill(0);
    for (const z of slots) {
      let m = -Infinity;
      for (let c = 0; c < C; c++) m = Math.max(m, z[r * C + c]! / T);
      let sum = 0;
      for (let c = 0; c < C; c++) sum += Math.exp(z[r * C + c]! / T - m);
      for (let c = 0; c < C; c++) p[c]! += Math.exp(z[r * C + c]! / T - m) / sum / slots.length;
    }
    for (let c = 0; c < C; c++) out[r * C + c] = Math.log(p[c]!) * T;
  }
  return out;
}

/**
 * The graph form. Feeds: `ce_target` [N, C] one-hot labels, `ce_rows`/`kd_rows` [N, 1] the rows
 * in each mean, `ce_norm`/`kd_norm` [1] one over their counts, `ce_weight`/`kd_weight` [1], and
 * the teacher side, laid out on the host: dense logits in the student's classes (`teacher`;
 * averaged or merged teachers are combined here, as batchLossFn does), one input per teacher
 * for union: subsets, or the exact top-k probabilities for a top-k cache. Rows without a
 * teacher get zeros, which the row masks drop. A batch without distillation (no teacher rows,
 * or a zero kd weight) gets a graph without the kd branch: its gradient must not even pass
 * through a masked-out term.
 */
export function batchLossGraph(b: TrainBatch, s: BatchLossSettings): LossGraph {
  const { plan, distill, ceWeight, kdWeight, temperature: T } = s;
  const C = plan.classes.length;
  const N = b.rows;
  let teacherRows = 0;
  for (let r = 0; r < N; r++) teacherRows += b.hasTeacher[r]!;
  const useCe = ceWeight > 0;
  const useKd = kdWeight > 0 && plan.mode !== 'none' && teacherRows > 0;
  const teacherKind = !useKd ? 'none' : plan.mode === 'union' && plan.union === 'subsets' ? 'subsets' : plan.layout.slots[0]!.kind === 'topk' ? 'topk' : 'dense';
  const method = plan.mode === 'union' || teacherKind === 'topk' ? 'kd' : distill.method;
  if (useKd && method === 'scratch') throw new TrainingError('internal: scratch method with a teacher');
  const key = JSON.stringify({ useCe, useKd, teacherKind, method, params: distill.params, T, subsets: teacherKind === 'subsets' ? plan.classIndex : undefined });
  const scalar = (v: number): Feed => ({ data: Float32Array.of(v), dims: [1] });
  const rowsWhere = (keep: (r: number) => boolean): { rows: Feed; count: number } => {
    const data = new Float32Array(N);
    let count = 0;
    for (let r = 0; r < N; r++) {
      if (!keep(r)) continue;
      data[r] = 1;
      count++;
    }
    return { rows: { data, dims: [N, 1] }, count };
  };
  /** Slot logits with zeros on the rows without a teacher. */
  const masked = (z: Float32Array, width: number): Float32Array => {
    const out = new Float32Array(N * width);
    for (let r = 0; r < N; r++) if (b.hasTeacher[r] === 1) out.set(z.subarray(r * width, (r + 1) * width), r * width);
    return out;
  };

  return {
    key,
    build(g: Graph, logits: string) {
      const input = (name: string, dims: Array<number | string>): string => g.input(name, dims);
      const target = input('ce_target', ['N', C]);
      const terms: Record<string, string> = {};
      let total: string | undefined;
      if (useCe) {
        const m: RowMean = { rows: input('ce_rows', ['N', 1]), norm: input('ce_norm', [1]) };
        terms['ce'] = crossEntropyGraph(g, logits, target, m);
        total = g.node('Mul', [terms['ce'], g.node('ReduceSum', [input('ce_weight', [1])], { keepdims: 0 })]);
      }
      if (useKd) {
        const m: RowMean = { rows: input('kd_rows', ['N', 1]), norm: input('kd_norm', [1]) };
        let kd: string;
        if (teacherKind === 'subsets') {
          kd = multiTeacherGraph(g, logits, C, plan.classIndex.map((ci, i) => ({ logits: input(`teacher_${i}`, ['N', ci.length]), classIndex: ci })), m, { temperature: T });
        } else if (teacherKind === 'topk') {
          kd = topKKdGraph(g, logits, { p: input('topk_p', ['N', C]), kept: input('topk_kept', ['N', C]), tail: input('topk_tail', ['N', 1]), entropy: input('topk_entropy', ['N', 1]) }, m, { temperature: T });
        } else {
          kd = denseLossGraphs[method as keyof typeof denseLossGraphs](g, logits, input('teacher', ['N', C]), target, C, m, distill.params as Record<string, number>);
        }
        terms['kd'] = kd;
        const weighted = g.node('Mul', [kd, g.node('ReduceSum', [input('kd_weight', [1])], { keepdims: 0 })]);
        total = total === undefined ? weighted : g.node('Add', [total, weighted]);
      }
      if (total === undefined) total = g.node('Mul', [g.node('ReduceSum', [logits], { keepdims: 0 }), g.constant('zero', [0], [])]);
      terms['total'] = total;
      return { total, terms };
    },
    feeds() {
      const feeds: Record<string, Feed> = {};
      const target = new Float32Array(N * C);
      for (let r = 0; r < N; r++) if (b.labels[r]! >= 0) target[r * C + b.labels[r]!] = 1;
      feeds['ce_target'] = { data: target, dims: [N, C] };
      if (useCe) {
        const labelled = rowsWhere((r) => b.labels[r]! >= 0);
        Object.assign(feeds, { ce_rows: labelled.rows, ce_norm: scalar(1 / Math.max(1, labelled.count)), ce_weight: scalar(ceWeight) });
      }
      if (!useKd) return feeds;
      const withTeacher = rowsWhere((r) => b.hasTeacher[r] === 1);
      Object.assign(feeds, { kd_rows: withTeacher.rows, kd_norm: scalar(1 / Math.max(1, withTeacher.count)), kd_weight: scalar(kdWeight) });
      if (teacherKind === 'subsets') {
        b.slots.forEach((slot, i) => (feeds[`teacher_${i}`] = { data: masked(slot.logits, plan.classIndex[i]!.length), dims: [N, plan.classIndex[i]!.length] }));
      } else if (teacherKind === 'topk') {
        const k = (plan.layout.slots[0] as { kind: 'topk'; k: number }).k;
        const slot = b.slots[0]!;
        const p = new Float32Array(N * C);
        const kept = new Float32Array(N * C);
        const tail = new Float32Array(N);
        const entropy = new Float32Array(N);
        for (let r = 0; r < N; r++) {
          if (b.hasTeacher[r] !== 1) continue;
          let mass = 0;
          let h = 0;
          for (let j = 0; j < k; j++) {
            const logP = slot.logits[r * k + j]! - slot.logsumexp![r]!;
            const c = slot.indices![r * k + j]!;
            p[r * C + c] = Math.exp(logP);
            kept[r * C + c] = 1;
            mass += Math.exp(logP);
            h += Math.exp(logP) * logP;
          }
          // k = C: nothing is dropped; what 1 − Σ p leaves is rounding over a zero student mass (as topKKdLoss).
          const rest = k >= C ? 0 : Math.max(0, 1 - mass);
          tail[r] = rest;
          entropy[r] = h + (rest > 0 ? rest * Math.log(rest) : 0);
        }
        Object.assign(feeds, { topk_p: { data: p, dims: [N, C] }, topk_kept: { data: kept, dims: [N, C] }, topk_tail: { data: tail, dims: [N, 1] }, topk_entropy: { data: entropy, dims: [N, 1] } });
      } else {
        const teacher = plan.mode === 'union' ? mergedTeacher(b, plan) : b.slots.length === 1 ? b.slots[0]!.logits : averagedTeacher(b.slots.map((x) => x.logits), N, C, T);
        feeds['teacher'] = { data: masked(teacher, C), dims: [N, C] };
      }
      return feeds;
    },
  };
}
