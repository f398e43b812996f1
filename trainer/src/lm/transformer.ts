/**
 * The built-in language-model student: a decoder-only, pre-norm, causal transformer as one ONNX
 * graph (opset 17) that the ORT engine trains through its gradient rules. `input_ids` int32
 * [N, L] (L = context) → `logits` [N, L, V]. Token and learned position embeddings, `layers`
 * blocks of masked multi-head self-attention and a GELU (tanh form) MLP, each behind a
 * LayerNormalization with a residual connection, a final LayerNormalization, and the output
 * projection tied to the token embedding (one table, both gradients summed).
 *
 * Padding positions come at the end of a block only, so under the causal mask no real position
 * ever attends to one; their logits are computed and masked by the losses.
 */
import { Graph } from '@distillate/shared/onnx';
import { mulberry32 } from '@distillate/shared';
import { LOGITS } from '../engine/engine.js';
import { FROZEN_METADATA } from '../internal/autodiff/train-graphs.js';

export interface TransformerSpec {
  readonly vocab: number;
  readonly context: number;
  readonly layers: number;
  readonly dModel: number;
  readonly heads: number;
  readonly ffn: number;
  readonly seed: number;
}

export const TOKEN_INPUT = 'input_ids';

export function transformerStudent(s: TransformerSpec): Graph {
  if (s.dModel % s.heads !== 0) throw new RangeError(`dModel ${s.dModel} does not split into ${s.heads} heads`);
  const { vocab: V, context: L, dModel: d, heads: h, ffn: F } = s;
  const dh = d / h;
  const rand = mulberry32(s.seed);
  // Box–Muller normals, scaled: GPT-2's initialisation (σ 0.02; residual projections σ 0.02/√(2·layers)).
  const normal = (n: number, sigma: number): Float32Array => {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand()) * sigma;
    return out;
  };
  const g = new Graph('transformer-student', 17);
  g.input(TOKEN_INPUT, ['N', L], 'int32');
  const shape = (dims: readonly number[]): string => g.int64('shape', dims);
  const param = (name: string, dims: number[], init: Float32Array): string => g.initializer(name, init, dims);
  const ones = (n: number): Float32Array => new Float32Array(n).fill(1);
  const zeros = (n: number): Float32Array => new Float32Array(n);
  const layerNorm = (x: string, name: string): string =>
    g.node('LayerNormalization', [x, param(`${name}.scale`, [d], ones(d)), param(`${name}.bias`, [d], zeros(d))], { axis: -1, epsilon: { float: 1e-5 } });
  const linear = (x: string, name: string, inDim: number, outDim: number, sigma = 0.02): string =>
    g.node('Add', [
      g.node('MatMul', [x, param(`${name}.weight`, [inDim, outDim], normal(inDim * outDim, sigma))]),
      param(`${name}.bias`, [outDim], zeros(outDim)),
    ]);

  const table = param('tok.weight', [V, d], normal(V * d, 0.02));
  let x = g.node('Add', [g.node('Gather', [table, TOKEN_INPUT], { axis: 0 }), param('pos.weight', [L, d], normal(L * d, 0.01))]);
  const mask = new Float32Array(L * L);
  for (let i = 0; i < L; i++) for (let j = i + 1; j < L; j++) mask[i * L + j] = -1e9;
  const causal = g.constant('causal_mask', mask, [L, L]);
  g.metadata.set(FROZEN_METADATA, causal); // a constant, not a parameter
  const scale = g.constant('attention_scale', [1 / Math.sqrt(dh)], []);
  const residualSigma = 0.02 / Math.sqrt(2 * s.layers);
  const heads = (t: string): string => g.node('Transpose', [g.node('Reshape', [t, shape([-1, L, h, dh])])], { perm: [0, 2, 1, 3] });
  for (let layer = 0; layer < s.layers; layer++) {
    const p = `block${layer}`;
    const a = layerNorm(x, `${p}.ln1`);
    const q = heads(linear(a, `${p}.q`, d, d));
    const k = heads(linear(a, `${p}.k`, d, d));
    const v = heads(linear(a, `${p}.v`, d, d));
    const scores = g.node('Add', [g.node('Mul', [g.node('MatMul', [q, g.node('Transpose', [k], { perm: [0, 1, 3, 2] })]), scale]), causal]);
    const attended = g.node('MatMul', [g.node('Softmax', [scores], { axis: -1 }), v]);
    const merged = g.node('Reshape', [g.node('Transpose', [attended], { perm: [0, 2, 1, 3] }), shape([-1, L, d])]);
    x = g.node('Add', [x, linear(merged, `${p}.proj`, d, d, residualSigma)]);
    const m = layerNorm(x, `${p}.ln2`);
    x = g.node('Add', [x, linear(gelu(g, linear(m, `${p}.up`, d, F)), `${p}.down`, F, d, residualSigma)]);
  }
  const out = layerNorm(x, 'ln_f');
  g.node('MatMul', [out, g.node('Transpose', [table], { perm: [1, 0] })], {}, LOGITS);
  g.output(LOGITS, ['N', L, V]);
  return g;
}

/** GELU, tanh form: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))). */
function gelu(g: Graph, x: string): string {
  const c = (name: string, v: number): string => g.constant(name, [v], []);
  const cube = g.node('Pow', [x, c('gelu_three', 3)]);
  const inner = g.node('Mul', [g.node('Add', [x, g.node('Mul', [cube, c('gelu_k', 0.044715)])]), c('gelu_s', Math.sqrt(2 / Math.PI))]);
  return g.node('Mul', [g.node('Mul', [x, c('gelu_half', 0.5)]), g.node('Add', [g.node('Tanh', [inner]), c('gelu_one', 1)])]);
}
