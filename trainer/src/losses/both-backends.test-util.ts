/**
 * Test helper: one loss, written against the ops, evaluated by both backends on the same
 * inputs: TF.js eagerly (tf.grad for the gradient) and as an ONNX graph run in onnxruntime
 * (the gradient from the engine's reverse-mode rules). Returns each backend's value and
 * dL/d(the differentiated input).
 */
import * as tf from '@tensorflow/tfjs';
import { Graph, OrtSession } from '@distillate/shared/onnx';
import { differentiate } from '../internal/autodiff/backward.js';
import { inferShapes, type Shape } from '../internal/autodiff/shapes.js';
import type { Feed, Ops } from './ops.js';
import { onnxOps } from './ops-onnx.js';
import { tfjsOps } from './ops-tfjs.js';

/** A loss of `wrt` and some fixed inputs, returning named scalar terms (the first is differentiated). */
export type LossOf = <T>(o: Ops<T>, wrt: T, inputs: Readonly<Record<string, T>>) => Readonly<Record<string, T>>;

export interface Evaluated {
  readonly terms: Record<string, number>;
  readonly grad: Float32Array;
}

export const BACKENDS = ['tfjs', 'onnx'] as const;
export type BackendName = (typeof BACKENDS)[number];

export function evaluateTfjs(loss: LossOf, wrt: Feed, inputs: Readonly<Record<string, Feed>>): Evaluated {
  const terms: Record<string, number> = {};
  const grad = tf.tidy(() => {
    const x = Object.fromEntries(Object.entries(inputs).map(([k, f]) => [k, tf.tensor(f.data, [...f.dims])]));
    return tf.grad((w: tf.Tensor) => {
      const out = loss(tfjsOps, w, x);
      for (const [k, v] of Object.entries(out)) terms[k] = v.dataSync()[0]!;
      return Object.values(out)[0]!;
    })(tf.tensor(wrt.data, [...wrt.dims]));
  });
  const g = grad.dataSync().slice() as Float32Array;
  grad.dispose();
  return { terms, grad: g };
}

export async function evaluateOnnx(loss: LossOf, wrt: Feed, inputs: Readonly<Record<string, Feed>>): Promise<Evaluated> {
  const g = new Graph('loss');
  const w = g.input('wrt', ['N', ...wrt.dims.slice(1)]);
  const x = Object.fromEntries(
    Object.entries(inputs).map(([k, f]) => [k, g.input(k, f.dims.length === 1 && f.dims[0] === 1 ? [1] : ['N', ...f.dims.slice(1)])]),
  );
  const out = loss(onnxOps(g), w, x);
  const shapes = inferShapes(g, new Map<string, Shape>(g.inputs.map((v) => [v.name, v.dims.map((d) => (typeof d === 'number' ? d : -1))])));
  const first = Object.values(out)[0]!;
  const grad = differentiate({ forward: g, shapes, wrt: [w], output: first, outputGrad: g.constant('seed', [1], []), into: g }).get(w)!;
  const names = Object.entries(out).map(([k, v]) => [k, g.node('Identity', [v], {}, `out_${k}`)] as const);
  for (const [, n] of names) g.output(n, []);
  g.output(grad, ['N', ...wrt.dims.slice(1)]);
  const session = await OrtSession.create(g.toBytes(), { provider: 'cpu' });
  try {
    const got = await session.runMany({ ...inputs, [w]: wrt }, [...names.map(([, n]) => n), grad]);
    return { terms: Object.fromEntries(names.map(([k, n]) => [k, got[n]![0]!])), grad: got[grad]! };
  } finally {
    await session.release();
  }
}

export function evaluate(backend: BackendName, loss: LossOf, wrt: Feed, inputs: Readonly<Record<string, Feed>>): Promise<Evaluated> {
  return backend === 'tfjs' ? Promise.resolve(evaluateTfjs(loss, wrt, inputs)) : evaluateOnnx(loss, wrt, inputs);
}
