import type { Ops, Rows } from './ops.js';
import { divideBy, klRows, rowMean, times } from './ops.js';

/** A teacher over some of the student's classes. */
export interface SubsetTeacher<T> {
  /** [N, C_t] this teacher's logits z over its own classes (the loss divides by T). */
  readonly logits: T;
  /** Position of each of the teacher's classes in the student's (union) class list. */
  readonly classIndex: readonly number[];
}

/**
 * Teachers with *different* class lists (UHC-style; Vongkulbhisal et al., CVPR 2019,
 * "Unifying Heterogeneous Classifiers with Distillation"). The student predicts over the union;
 * for each teacher, the student's softmax renormalised over that teacher's classes (columns
 * picked by a constant 0/1 matrix product) is matched to the teacher's softmax:
 * T² · KL(p_t ‖ softmax(s[classes_t]/T)), averaged over teachers and rows.
 */
export function subsetKd<T>(o: Ops<T>, student: T, classes: number, teachers: ReadonlyArray<SubsetTeacher<T>>, rows: Rows<T>, temperature: number): T {
  if (teachers.length === 0) throw new Error('subsetKd needs at least one teacher');
  const T = temperature;
  const terms = teachers.map((t, i) => {
    if (t.classIndex.some((c) => c < 0 || c >= classes)) throw new Error(`teacher ${i}: class index outside the student's ${classes} classes`);
    const pick = new Float32Array(classes * t.classIndex.length);
    t.classIndex.forEach((c, j) => (pick[c * t.classIndex.length + j] = 1));
    const sub = o.matMul(student, o.matrix(pick, [classes, t.classIndex.length]));
    return rowMean(o, klRows(o, o.logSoftmax(divideBy(o, t.logits, T)), o.logSoftmax(divideBy(o, sub, T))), rows);
  });
  return times(
    o,
    terms.reduce((a, b) => o.add(a, b)),
    (T * T) / teachers.length,
  );
}
