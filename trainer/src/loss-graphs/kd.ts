/** Hinton et al. 2015 as ../losses/kd.ts: T²·KL(softmax(t/T) ‖ softmax(s/T)), mean over rows. */
import type { Graph } from '@distillate/shared/onnx';
import { divide, klRows, logSoftmax, rowMean, times, type RowMean } from './common.js';

export function kdGraph(g: Graph, student: string, teacher: string, m: RowMean, p: { temperature: number }): string {
  const T = p.temperature;
  const kl = klRows(g, logSoftmax(g, divide(g, teacher, T)), logSoftmax(g, divide(g, student, T)));
  return times(g, rowMean(g, kl, m), T * T);
}
