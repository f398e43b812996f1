/**
 * One batch's loss: ce·CE on the labelled rows plus kd·(the recipe's distillation term) on the
 * rows with teacher targets, with the teachers' logits laid out on the host by the teacher plan
 * (one cache, averaged teachers, top-k, or the union modes). It is written once, against the
 * losses' ops: the TF.js engine evaluates it eagerly and the ORT engine puts it in its
 * train-step graph.
 *
 * Its inputs: `target` [N, C] one-hot labels (a zero row: none), `ce_rows`/`kd_rows` [N, 1] the
 * rows in each mean, `ce_norm`/`kd_norm` [1] one over their counts, `ce_weight`/`kd_weight` [1],
 * and the teacher side: dense logits in the student's classes (`teacher`; averaged or merged
 * teachers are combined on the host, in float64), one input per teacher for union: subsets, or
 * the exact top-k probabilities for a top-k cache. Rows without a teacher get zeros, which the
 * row masks drop. A batch without distillation (no teacher rows, or a zero kd weight) has no kd
 * branch: its gradient must not even pass through a masked-out term.
 */
import type { TrainBatch } from './data.js';
import { TrainingError } from './errors.js';
import {
  crossEntropy,
  distillLoss,
  subsetKd,
  topKKd,
  topKTargets,
  usesLabels,
  type BatchLoss,
  type Dim,
  type Distill,
  type Feed,
  type Ops,
  type Rows,
  hintLosses,
  type HintLoss,
} from './losses/index.js';
import { hintOutput } from './internal/hint-heads.js';
import type { TeacherPlan } from './teacher-plan.js';

export interface BatchLossSettings {
  readonly plan: TeacherPlan;
  readonly distill: Distill;
  readonly ceWeight: number;
  /** After warm-up; 0 turns the distillation term off for this batch. */
  readonly kdWeight: number;
  readonly temperature: number;
}

/** The student output the batch loss reads. */
export const LOGITS = 'logits';

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

/** The loss of batch `b` (ops.ts BatchLoss). */
export function batchLoss(b: TrainBatch, s: BatchLossSettings): BatchLoss {
  const { plan, distill, ceWeight, kdWeight, temperature: T } = s;
  const C = plan.classes.length;
  const N = b.rows;
  let teacherRows = 0;
  for (let r = 0; r < N; r++) teacherRows += b.hasTeacher[r]!;
  const useCe = ceWeight > 0;
  const useKd = kdWeight > 0 && plan.mode !== 'none' && teacherRows > 0 && distill.method !== 'scratch';
  // Feature hints: the student's hint outputs against the stored teacher features, on the rows with a teacher.
  const hints = teacherRows > 0 ? (plan.hints ?? []) : [];
  const hintParams = hints.map(({ hint }) => (hintLosses[hint.loss] as HintLoss<unknown>).params.parse(hint.params));
  const teacherKind = !useKd
    ? 'none'
    : plan.mode === 'union' && plan.union === 'subsets'
      ? 'subsets'
      : plan.layout.slots[0]!.kind === 'topk'
        ? 'topk'
        : 'dense';
  // Union and top-k teachers are matched by KL (planTeachers refuses other methods for them).
  const method: Distill = plan.mode === 'union' || teacherKind === 'topk' ? { method: 'kd', params: { temperature: T } } : distill;
  if (useKd && method.method === 'scratch') throw new TrainingError('internal: scratch method with a teacher');
  const term = useKd && method.method !== 'scratch' ? distillLoss(method) : undefined;
  const useTarget = useCe || (useKd && usesLabels(method));

  const inputs: Record<string, readonly Dim[]> = {};
  if (useTarget) inputs['target'] = ['N', C];
  if (useCe) Object.assign(inputs, { ce_rows: ['N', 1], ce_norm: [1], ce_weight: [1] });
  if (useKd) Object.assign(inputs, { kd_rows: ['N', 1], kd_norm: [1], kd_weight: [1] });
  if (teacherKind === 'subsets') plan.classIndex.forEach((ci, i) => (inputs[`teacher_${i}`] = ['N', ci.length]));
  else if (teacherKind === 'topk') Object.assign(inputs, { topk_p: ['N', C], topk_kept: ['N', C], topk_tail: ['N', 1], topk_entropy: ['N', 1] });
  else if (teacherKind === 'dense') inputs['teacher'] = ['N', C];
  if (hints.length > 0) Object.assign(inputs, { hint_rows: ['N', 1], hint_norm: [1] });
  hints.forEach(({ teacherShape }, i) => (inputs[`hint_teacher_${i}`] = ['N', ...teacherShape]));
  const key = JSON.stringify({ useCe, useKd, teacherKind, method, T, subsets: teacherKind === 'subsets' ? plan.classIndex : undefined, hints });

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
    inputs,
    outputs: [LOGITS, ...hints.map((_, i) => hintOutput(i))],
    feeds() {
      const feeds: Record<string, Feed> = {};
      if (useTarget) {
        const target = new Float32Array(N * C);
        for (let r = 0; r < N; r++) if (b.labels[r]! >= 0) target[r * C + b.labels[r]!] = 1;
        feeds['target'] = { data: target, dims: [N, C] };
      }
      if (useCe) {
        const labelled = rowsWhere((r) => b.labels[r]! >= 0);
        Object.assign(feeds, { ce_rows: labelled.rows, ce_norm: scalar(1 / Math.max(1, labelled.count)), ce_weight: scalar(ceWeight) });
      }
      if (hints.length > 0) {
        const withTeacher = rowsWhere((r) => b.hasTeacher[r] === 1);
        Object.assign(feeds, { hint_rows: withTeacher.rows, hint_norm: scalar(1 / Math.max(1, withTeacher.count)) });
        hints.forEach(({ teacherShape }, i) => {
          const values = b.slots[0]?.features?.[i];
          if (values === undefined) throw new TrainingError(`internal: the batch has no teacher feature for hint ${i}`);
          const size = teacherShape.reduce((a, c) => a * c, 1);
          feeds[`hint_teacher_${i}`] = { data: masked(values, size), dims: [N, ...teacherShape] };
        });
      }
      if (!useKd) return feeds;
      const withTeacher = rowsWhere((r) => b.hasTeacher[r] === 1);
      Object.assign(feeds, { kd_rows: withTeacher.rows, kd_norm: scalar(1 / Math.max(1, withTeacher.count)), kd_weight: scalar(kdWeight) });
      if (teacherKind === 'subsets') {
        b.slots.forEach(
          (slot, i) => (feeds[`teacher_${i}`] = { data: masked(slot.logits, plan.classIndex[i]!.length), dims: [N, plan.classIndex[i]!.length] }),
        );
      } else if (teacherKind === 'topk') {
        const spec = plan.layout.slots[0]!;
        const slot = b.slots[0]!;
        if (spec.kind !== 'topk' || slot.indices === undefined || slot.logsumexp === undefined)
          throw new TrainingError('internal: a top-k plan without top-k columns');
        const t = topKTargets({ indices: slot.indices, logits: slot.logits, logsumexp: slot.logsumexp }, N, spec.k, C, b.hasTeacher);
        Object.assign(feeds, { topk_p: t.p, topk_kept: t.kept, topk_tail: t.tail, topk_entropy: t.entropy });
      } else {
        const teacher =
          plan.mode === 'union'
            ? mergedTeacher(b, plan)
            : b.slots.length === 1
              ? b.slots[0]!.logits
              : averagedTeacher(
                  b.slots.map((x) => x.logits),
                  N,
                  C,
                  T,
                );
        feeds['teacher'] = { data: masked(teacher, C), dims: [N, C] };
      }
      return feeds;
    },
    compute<X>(o: Ops<X>, outputs: Readonly<Record<string, X>>, x: Readonly<Record<string, X>>) {
      const logits = outputs[LOGITS];
      if (logits === undefined) throw new TrainingError(`internal: the batch loss reads the student output ${LOGITS}`);
      const input = (name: string): X => {
        const v = x[name];
        if (v === undefined) throw new TrainingError(`internal: the batch loss has no input ${name}`);
        return v;
      };
      const rows = (prefix: string): Rows<X> => ({ mask: input(`${prefix}_rows`), norm: input(`${prefix}_norm`) });
      const terms: Record<string, X> = {};
      let total: X | undefined;
      if (useCe) {
        terms['ce'] = crossEntropy(o, logits, input('target'), rows('ce'));
        total = o.mul(terms['ce'], o.sumAll(input('ce_weight')));
      }
      if (useKd) {
        const m = rows('kd');
        let kd: X;
        if (teacherKind === 'subsets') {
          kd = subsetKd(
            o,
            logits,
            C,
            plan.classIndex.map((classIndex, i) => ({ logits: input(`teacher_${i}`), classIndex })),
            m,
            T,
          );
        } else if (teacherKind === 'topk') {
          kd = topKKd(o, logits, { p: input('topk_p'), kept: input('topk_kept'), tail: input('topk_tail'), entropy: input('topk_entropy') }, m, T);
        } else {
          const target = useTarget ? input('target') : o.scalar(0);
          kd = term!(o, { student: logits, teacher: input('teacher'), target, classes: C, rows: m });
        }
        terms['kd'] = kd;
        const weighted = o.mul(kd, o.sumAll(input('kd_weight')));
        total = total === undefined ? weighted : o.add(total, weighted);
      }
      hints.forEach(({ hint }, i) => {
        const out = outputs[hintOutput(i)];
        if (out === undefined) throw new TrainingError(`internal: the student has no output ${hintOutput(i)}`);
        const h = hintLosses[hint.loss] as HintLoss<unknown>;
        const value = h.loss(o, { student: out, teacher: input(`hint_teacher_${i}`), rows: rows('hint') }, hintParams[i]);
        terms[`hint_${i}`] = value;
        const weighted = o.mul(value, o.scalar(hint.weight));
        total = total === undefined ? weighted : o.add(total, weighted);
      });
      // Nothing to learn from (no labels, no teacher): a zero that still depends on the logits.
      if (total === undefined) total = o.mul(o.sumAll(logits), o.scalar(0));
      terms['total'] = total;
      return { total, terms };
    },
  };
}
