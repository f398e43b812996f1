/**
 * Teachers with different class lists, as ../losses/multi-teacher.ts: for each teacher, the
 * student's softmax renormalised over that teacher's classes (a 0/1 column-picking MatMul)
 * matched to it by KL; the mean over teachers, times T².
 */
import type { Graph } from '@distillate/shared/onnx';
import { divide, klRows, logSoftmax, rowMean, times, type RowMean } from './common.js';

export function multiTeacherGraph(g: Graph, student: string, classes: number, teachers: ReadonlyArray<{ readonly logits: string; readonly classIndex: readonly number[] }>, m: RowMean, p: { temperature: number }): string {
  const T = p.temperature;
  const terms = teachers.map((t) => {
    const pick = new Float32Array(classes * t.classIndex.length);
    t.classIndex.forEach((c, j) => (pick[c * t.classIndex.length + j] = 1));
    const sub = g.node('MatMul', [student, g.constant('pick', pick, [classes, t.classIndex.length])]);
    return rowMean(g, klRows(g, logSoftmax(g, divide(g, t.logits, T)), logSoftmax(g, divide(g, sub, T))), m);
  });
  const sum = terms.length === 1 ? terms[0]! : g.node('Sum', terms);
  return times(g, sum, (T * T) / teachers.length);
}
