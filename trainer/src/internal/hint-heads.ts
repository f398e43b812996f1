/**
 * The student side of feature hints (recipe `distill.hints`), added to the student graph before
 * training: each hint's student tensor becomes an output `hint_<i>`, through a trainer-made
 * regressor where the hint loss asks for one (losses/hints/: a 1×1 convolution from a
 * [C, H, W] map to the teacher's [C′, H, W], or a linear layer to the teacher's vector, after a
 * global average pool when the student's tensor is a map). The regressors are parameters like
 * any other while training; `student.onnx` leaves them and the hint outputs out (the outputs are
 * listed in the graph's TRAIN_ONLY_METADATA, and export keeps only what the logits need).
 *
 * A spatial size that differs between the student's map and the teacher's is refused, not
 * resized: resizing would compare positions that do not correspond, and the cache's `grid`
 * pooling already lets a job store the teacher's map at the student's size.
 */
import type { Graph } from '@distillate/shared/onnx';
import { closestNames, mulberry32 } from '@distillate/shared';
import { hintLosses, type Hint } from '../losses/index.js';
import { TrainingError } from '../errors.js';
import { inferShapes, type Shape } from './autodiff/shapes.js';

/** Graph metadata: outputs (comma-separated) that exist for training only; export drops them. */
export const TRAIN_ONLY_METADATA = 'distillate.train-only';

export const hintOutput = (i: number): string => `hint_${i}`;

/** Glorot-uniform weights for a [fanOut, fanIn]-sized regressor. */
function glorot(rand: () => number, n: number, fanIn: number, fanOut: number): Float32Array {
  const limit = Math.sqrt(6 / (fanIn + fanOut));
  return Float32Array.from({ length: n }, () => (rand() * 2 - 1) * limit);
}

/**
 * Add the hint heads to `graph` (in place). `inputs`: the student's input shapes (batch −1);
 * `teacherShapes[i]`: hint i's stored teacher feature per row. Refused in one line: an unknown
 * student tensor (with the closest names and their shapes), shapes that cannot be matched
 * (naming both).
 */
export function addHintHeads(
  graph: Graph,
  inputs: ReadonlyMap<string, Shape>,
  hints: readonly { readonly hint: Hint; readonly teacherShape: readonly number[] }[],
  seed: number,
): void {
  if (hints.length === 0) return;
  const shapes = inferShapes(graph, inputs);
  const produced = graph.nodes.flatMap((n) => n.outputs.filter((o) => o !== ''));
  const rand = mulberry32(seed * 7919 + 17);
  const outputs: string[] = [];
  hints.forEach(({ hint, teacherShape: t }, i) => {
    const full = shapes.get(hint.student);
    if (full === undefined || !produced.includes(hint.student)) {
      const close = closestNames(hint.student, produced).map((n) => `${n} [${shapes.get(n)!.slice(1).join(', ')}]`);
      throw new TrainingError(`hint student ${hint.student}: the student has no such tensor; the closest: ${close.join(', ')}`);
    }
    const s = full.slice(1);
    const both = `student ${hint.student} is [${s.join(', ')}] per sample, teacher ${hint.teacher} [${t.join(', ')}]`;
    const map = s.length === 3 && t.length === 3;
    if (map && (s[1] !== t[1] || s[2] !== t[2]))
      throw new TrainingError(
        `hint ${hint.loss}: ${both}: the spatial sizes differ (store the teacher's map at the student's size with grid: [${s[1]}, ${s[2]}])`,
      );
    const out = hintOutput(i);
    if (hintLosses[hint.loss].student === 'none') {
      if (!map) throw new TrainingError(`hint ${hint.loss}: ${both}: attention transfer compares [C, H, W] maps`);
      graph.node('Identity', [hint.student], {}, out);
    } else if (map) {
      const [cs, ct] = [s[0]!, t[0]!];
      const w = graph.initializer(graph.fresh(`hint${i}_kernel`), glorot(rand, ct * cs, cs, ct), [ct, cs, 1, 1]);
      const b = graph.initializer(graph.fresh(`hint${i}_bias`), new Float32Array(ct), [ct]);
      graph.node('Conv', [hint.student, w, b], { kernel_shape: [1, 1] }, out);
    } else if (t.length === 1) {
      // A map meets a vector through a global average pool (its penultimate embedding).
      const x =
        s.length === 1 ? hint.student : s.length === 3 ? graph.node('Flatten', [graph.node('GlobalAveragePool', [hint.student])], { axis: 1 }) : undefined;
      if (x === undefined) throw new TrainingError(`hint ${hint.loss}: ${both}: a vector or a [C, H, W] map is projected to a vector`);
      const din = s[0]!; // a vector's length, or a pooled map's channels
      const w = graph.initializer(graph.fresh(`hint${i}_weight`), glorot(rand, din * t[0]!, din, t[0]!), [din, t[0]!]);
      const b = graph.initializer(graph.fresh(`hint${i}_bias`), new Float32Array(t[0]!), [t[0]!]);
      graph.node('Gemm', [x, w, b], {}, out);
    } else {
      throw new TrainingError(`hint ${hint.loss}: ${both}: a regressor maps a [C, H, W] map to a map of the same H, W, or a tensor to a vector`);
    }
    graph.output(out, ['N', ...t]);
    outputs.push(out);
  });
  graph.metadata.set(TRAIN_ONLY_METADATA, outputs.join(','));
}
