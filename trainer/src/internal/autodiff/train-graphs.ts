/**
 * A student graph → the two graphs of one train step in ONNX Runtime:
 *
 *  - forward: the student with its parameters as inputs; outputs the logits and the
 *    activations the backward rules read;
 *  - backward: those activations, the parameters, dL/dlogits, the optimizer state and the
 *    step's hyperparameters in; the updated parameters and optimizer state out (reverse-mode
 *    gradients from the rules, then the optimizer as elementwise ops).
 *
 * The loss sits between the two, on the host, computed by the trainer's loss functions (one
 * source of truth for every method), which hand back dL/dlogits.
 */
import { Graph, type Dim } from '@distillate/shared/onnx';
import { differentiate } from './backward.js';
import { inferShapes, type Shape } from './shapes.js';

export type OptimizerGraphSpec =
  | { readonly kind: 'sgd'; readonly momentum: number; readonly weightDecay: number }
  | { readonly kind: 'adam'; readonly beta1: number; readonly beta2: number; readonly epsilon: number; readonly weightDecay: number };

export interface TensorSpec {
  readonly name: string;
  /** Static dims; −1 is the batch. */
  readonly dims: Shape;
}

export interface TrainGraphs {
  readonly forward: Uint8Array;
  readonly backward: Uint8Array;
  /** Parameters (float32 initializers of the student), in feed order, with their initial values. */
  readonly params: ReadonlyArray<TensorSpec & { readonly init: Float32Array }>;
  /** Forward outputs besides the logits that the backward graph takes. */
  readonly saved: readonly TensorSpec[];
  /** Whether the backward graph reads the input samples. */
  readonly backwardTakesInput: boolean;
  /** Optimizer slots per parameter (sgd: momentum; adam: first and second moments). */
  readonly slots: readonly string[];
  /** Backward input name of parameter i's slot s; backward output names of its next value and slots. */
  slotInput(i: number, s: number): string;
  paramOutput(i: number): string;
  slotOutput(i: number, s: number): string;
  /** Scalar inputs of the backward graph, fed per step. */
  readonly hyper: readonly HyperName[];
}

/**
 * Scalars fed per step. lr: the learning rate (SGD). Adam keeps its moments scaled,
 * m̄ = m/(1−β₁) and ū = v/(1−β₂), which saves four elementwise passes per parameter; with
 * c = (1−β₂)/(1−β₂ᵗ), stepSize = lr·(1−β₁)/(1−β₁ᵗ)/√c and epsilon = ε/√c give exactly
 * tf.train.adam's p − lr·m̂/(√v̂ + ε) = p − stepSize·m̄/(√ū + epsilon). decay: 1 − lr·weightDecay.
 */
export type HyperName = 'lr' | 'stepSize' | 'epsilon' | 'decay';

/** The Adam scalars of step t (1-based) for the scaled-moment form above. */
export function adamScalars(lr: number, t: number, o: { beta1: number; beta2: number; epsilon: number }): { stepSize: number; epsilon: number } {
  const rootC = Math.sqrt((1 - o.beta2) / (1 - o.beta2 ** t));
  return { stepSize: (lr * (1 - o.beta1)) / (1 - o.beta1 ** t) / rootC, epsilon: o.epsilon / rootC };
}

const dimsOf = (s: Shape): Dim[] => s.map((d) => (d === -1 ? 'N' : d));

export function buildTrainGraphs(student: Graph, opts: { input: string; logits: string; sampleShape: Shape; optimizer: OptimizerGraphSpec; dlogits?: string }): TrainGraphs {
  const { input, logits, optimizer } = opts;
  const params = [...student.initializers.values()].filter((i) => i.data instanceof Float32Array && i.dims.length > 0);
  const paramNames = new Set(params.map((p) => p.name));
  const shapes = inferShapes(student, new Map([[input, [-1, ...opts.sampleShape]]]));
  const logitShape = shapes.get(logits);
  if (logitShape === undefined) throw new Error(`the student graph has no tensor ${logits}`);

  // Backward: gradients, then the optimizer.
  const bwd = new Graph('distillate-backward', student.opset);
  const dlogits = opts.dlogits ?? 'dlogits';
  bwd.reserve([dlogits]);
  const grads = differentiate({ forward: student, shapes, wrt: params.map((p) => p.name), output: logits, outputGrad: dlogits, into: bwd });

  const slots = optimizer.kind === 'sgd' ? ['momentum'] : ['m', 'v'];
  const slotInput = (i: number, s: number): string => `${params[i]!.name}::${slots[s]}`;
  const slotOutput = (i: number, s: number): string => `${params[i]!.name}::${slots[s]}::next`;
  const paramOutput = (i: number): string => `${params[i]!.name}::next`;
  bwd.reserve(params.flatMap((_, i) => [paramOutput(i), ...slots.flatMap((__, s) => [slotInput(i, s), slotOutput(i, s)])]));
  const hyper: HyperName[] = optimizer.kind === 'sgd' ? ['lr'] : ['stepSize', 'epsilon'];
  if (optimizer.weightDecay > 0) hyper.push('decay');
  bwd.reserve(hyper);
  const c = (v: number): string => bwd.constant('c', [v], []);
  params.forEach((p, i) => {
    const g = grads.get(p.name);
    if (g === undefined) {
      bwd.node('Identity', [p.name], {}, paramOutput(i));
      slots.forEach((_, s) => bwd.node('Identity', [slotInput(i, s)], {}, slotOutput(i, s)));
      return;
    }
    let next: string;
    if (optimizer.kind === 'sgd') {
      // tf.train.momentum: a ← μ·a + g; p ← p − lr·a
      const acc = bwd.node('Add', [bwd.node('Mul', [slotInput(i, 0), c(optimizer.momentum)]), g], {}, slotOutput(i, 0));
      next = bwd.node('Sub', [p.name, bwd.node('Mul', [acc, 'lr'])]);
    } else {
      // tf.train.adam in the scaled-moment form (HyperName): m̄ ← β₁m̄ + g; ū ← β₂ū + g²; p ← p − stepSize·m̄ / (√ū + epsilon)
      const m = bwd.node('Add', [bwd.node('Mul', [slotInput(i, 0), c(optimizer.beta1)]), g], {}, slotOutput(i, 0));
      const v = bwd.node('Add', [bwd.node('Mul', [slotInput(i, 1), c(optimizer.beta2)]), bwd.node('Mul', [g, g])], {}, slotOutput(i, 1));
      const denom = bwd.node('Add', [bwd.node('Sqrt', [v]), 'epsilon']);
      next = bwd.node('Sub', [p.name, bwd.node('Mul', [bwd.node('Div', [m, denom]), 'stepSize'])]);
    }
    // Decoupled weight decay (Loshchilov & Hutter) on weight matrices, after the step, as the TF.js engine does.
    if (optimizer.weightDecay > 0 && p.dims.length > 1) bwd.node('Mul', [next, 'decay'], {}, paramOutput(i));
    else bwd.node('Identity', [next], {}, paramOutput(i));
  });

  // What the backward nodes read from the forward pass.
  const produced = new Set<string>([dlogits, ...hyper, ...bwd.initializers.keys()]);
  params.forEach((_, i) => slots.forEach((__, s) => produced.add(slotInput(i, s))));
  for (const n of bwd.nodes) for (const o of n.outputs) produced.add(o);
  const external = new Set<string>();
  for (const n of bwd.nodes) for (const name of n.inputs) if (name !== '' && !produced.has(name)) external.add(name);
  const saved: TensorSpec[] = [];
  let backwardTakesInput = false;
  for (const name of external) {
    if (paramNames.has(name)) continue;
    if (name === input) {
      backwardTakesInput = true;
      continue;
    }
    const init = student.initializers.get(name);
    if (init !== undefined) {
      bwd.initializer(name, init.data, init.dims); // a constant of the student (e.g. a shape)
      continue;
    }
    saved.push({ name, dims: shapes.get(name)! });
  }

  for (const s of saved) bwd.input(s.name, dimsOf(s.dims));
  if (backwardTakesInput) bwd.input(input, dimsOf([-1, ...opts.sampleShape]));
  params.forEach((p, i) => {
    bwd.input(p.name, p.dims);
    slots.forEach((_, s) => bwd.input(slotInput(i, s), p.dims));
  });
  bwd.input(dlogits, dimsOf(logitShape));
  for (const h of hyper) bwd.input(h, [1]);
  params.forEach((p, i) => {
    bwd.output(paramOutput(i), p.dims);
    slots.forEach((_, s) => bwd.output(slotOutput(i, s), p.dims));
  });

  // Forward: the student with parameters as inputs, logits and saved activations out.
  const fwd = new Graph('distillate-forward', student.opset);
  fwd.input(input, dimsOf([-1, ...opts.sampleShape]));
  for (const p of params) fwd.input(p.name, p.dims);
  for (const init of student.initializers.values()) if (!paramNames.has(init.name)) fwd.initializer(init.name, init.data, init.dims);
  for (const n of student.nodes) fwd.add(n.op, n.inputs, { ...n.attrs }, n.outputs);
  fwd.output(logits, dimsOf(logitShape));
  for (const s of saved) fwd.output(s.name, dimsOf(s.dims));

  return {
    forward: fwd.toBytes(),
    backward: bwd.toBytes(),
    params: params.map((p) => ({ name: p.name, dims: p.dims, init: p.data as Float32Array })),
    saved,
    backwardTakesInput,
    slots,
    slotInput,
    paramOutput,
    slotOutput,
    hyper,
  };
}
