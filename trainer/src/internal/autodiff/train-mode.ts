/**
 * The two ops that behave differently in training, rewritten into plain ops for the train-step
 * graph (the predict graph and student.onnx keep the inference ops):
 *
 *  - Dropout(x, ratio): x·mask, with the mask (0 or 1/(1−ratio), inverted dropout as Keras
 *    draws it) fed per step by the engine from a seeded generator;
 *  - BatchNormalization(x, γ, β, mean, var): normalised with the batch's own mean and (biased)
 *    variance over N, H, W, and the running statistics updated as Keras does,
 *    r ← momentum·r + (1 − momentum)·batch statistic. The running statistics are buffers: state
 *    the step carries, not parameters. The batch size comes in as `batch_rows`.
 */
import type { Graph, GraphNode } from '@distillate/shared/onnx';
import { float, inferShapes, UnsupportedGraphError, type Shape } from './shapes.js';

export interface DropoutSite {
  /** The step graph's input that takes this site's mask. */
  readonly mask: string;
  /** The mask's shape (−1: the batch). */
  readonly dims: Shape;
  readonly ratio: number;
}

export interface Buffer {
  readonly name: string;
  readonly dims: readonly number[];
  /** The step graph's output with its next value. */
  readonly next: string;
}

export interface TrainModeRewrite {
  readonly dropout: readonly DropoutSite[];
  readonly buffers: readonly Buffer[];
  /** Whether the step takes `batch_rows` ([1], the batch size as a float). */
  readonly needsBatchRows: boolean;
}

/** Inputs 3 and 4 of every BatchNormalization: the running statistics, which no gradient trains. */
export function bufferNames(student: Graph): Set<string> {
  const names = new Set<string>();
  for (const n of student.nodes) if (n.op === 'BatchNormalization') for (const i of [3, 4]) names.add(n.inputs[i]!);
  return names;
}

function ratioOf(student: Graph, n: GraphNode): number {
  const r = n.inputs[1];
  if (r === undefined || r === '') return 0.5; // ONNX's default ratio
  const init = student.initializers.get(r);
  if (init === undefined || !(init.data instanceof Float32Array) || init.data.length !== 1)
    throw new UnsupportedGraphError(`Dropout node ${n.name}: the ratio must be a constant`);
  return init.data[0]!;
}

/**
 * Append the student's nodes to `g` in their training form. `shapesOf` gives the student's
 * static shapes (for the masks and the per-channel counts).
 */
export function appendTrainingNodes(g: Graph, student: Graph, inputs: ReadonlyArray<{ readonly name: string; readonly shape: Shape }>): TrainModeRewrite {
  const shapes = inferShapes(student, new Map(inputs.map((i) => [i.name, i.shape])));
  const dropout: DropoutSite[] = [];
  const buffers: Buffer[] = [];
  let batchRows: string | undefined;
  for (const n of student.nodes) {
    if (n.op === 'Dropout') {
      if ((n.outputs[1] ?? '') !== '') throw new UnsupportedGraphError(`Dropout node ${n.name}: its mask output is not supported`);
      const mask = g.fresh('dropout_mask');
      const dims = shapes.get(n.inputs[0]!)!;
      g.input(
        mask,
        dims.map((d) => (d === -1 ? 'N' : d)),
      );
      g.node('Mul', [n.inputs[0]!, mask], {}, n.outputs[0]!);
      dropout.push({ mask, dims, ratio: ratioOf(student, n) });
      continue;
    }
    if (n.op === 'BatchNormalization') {
      const [x, scale, bias, mean, variance] = n.inputs as [string, string, string, string, string];
      const xs = shapes.get(x)!;
      if (xs.length !== 4) throw new UnsupportedGraphError(`BatchNormalization node ${n.name}: only [N, C, H, W] inputs are supported`);
      if ((n.outputs[1] ?? '') !== '') throw new UnsupportedGraphError(`BatchNormalization node ${n.name}: training-mode outputs are not supported`);
      batchRows ??= g.input('batch_rows', [1]);
      const C = xs[1]!;
      const eps = float(n, 'epsilon', 1e-5);
      const momentum = float(n, 'momentum', 0.9);
      const c = (v: number): string => g.constant('c', [v], []);
      const axes = g.int64('axes', [0, 2, 3]);
      const perChannel = g.int64('shape', [1, C, 1, 1]);
      // 1 / (N·H·W): the batch's share of each channel's values.
      const inv = g.node('Div', [c(1), g.node('Mul', [batchRows, c(xs[2]! * xs[3]!)])]);
      const mu = g.node('Mul', [g.node('ReduceSum', [x, axes], { keepdims: 1 }), inv]);
      const centred = g.node('Sub', [x, mu]);
      const sigma2 = g.node('Mul', [g.node('ReduceSum', [g.node('Mul', [centred, centred]), axes], { keepdims: 1 }), inv]);
      const xhat = g.node('Div', [centred, g.node('Sqrt', [g.node('Add', [sigma2, c(eps)])])]);
      g.node('Add', [g.node('Mul', [xhat, g.node('Reshape', [scale, perChannel])]), g.node('Reshape', [bias, perChannel])], {}, n.outputs[0]!);
      const flat = g.int64('shape', [C]);
      for (const [name, batchStat] of [
        [mean, mu],
        [variance, sigma2],
      ] as const) {
        const next = `${name}::next`;
        g.node('Add', [g.node('Mul', [name, c(momentum)]), g.node('Mul', [g.node('Reshape', [batchStat, flat]), c(1 - momentum)])], {}, next);
        buffers.push({ name, dims: [C], next });
      }
      continue;
    }
    g.add(n.op, n.inputs, { ...n.attrs }, n.outputs);
  }
  return { dropout, buffers, needsBatchRows: batchRows !== undefined };
}
