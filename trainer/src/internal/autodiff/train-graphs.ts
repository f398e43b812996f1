/**
 * A student graph → the graphs the ORT engine runs:
 *
 *  - the train step, one graph: the student's forward pass, the batch loss (written against the
 *    losses' ops, here the ONNX backend), reverse-mode gradients of the loss from the rules, and the optimizer
 *    update as elementwise ops. Parameters, optimizer state, the batch, the loss's feeds and the
 *    step's scalars go in; updated parameters and state, the logits and the loss terms come out;
 *  - predict: the student with its parameters as inputs.
 */
import { Graph, type Dim, type GraphValue } from '@distillate/shared/onnx';
import { onnxOps, type BatchLoss } from '../../losses/index.js';
import { differentiate } from './backward.js';
import { inferShapes, UnsupportedGraphError, type Shape } from './shapes.js';
import { appendTrainingNodes, bufferNames, type Buffer, type DropoutSite } from './train-mode.js';

/** What the step graph needs of a batch loss: its inputs and its computation. */
export type LossPiece = Pick<BatchLoss, 'inputs' | 'outputs' | 'compute'>;

export type OptimizerGraphSpec =
  | { readonly kind: 'sgd'; readonly momentum: number; readonly weightDecay: number }
  | { readonly kind: 'adam'; readonly beta1: number; readonly beta2: number; readonly epsilon: number; readonly weightDecay: number };

export interface TensorSpec {
  readonly name: string;
  /** Static dims; −1 is the batch. */
  readonly dims: Shape;
}

/** A student input as the step graph declares it: static dims (−1: the batch) and element type. */
export interface StepInput extends TensorSpec {
  readonly type: GraphValue['type'];
}

export interface StepGraph {
  readonly graph: Graph;
  /** Parameters (float32 initializers of the student), in feed order, with their initial values. */
  readonly params: ReadonlyArray<TensorSpec & { readonly init: Float32Array }>;
  /** Optimizer slots per parameter (sgd: momentum; adam: the scaled first and second moments). */
  readonly slots: readonly string[];
  slotInput(i: number, s: number): string;
  paramOutput(i: number): string;
  slotOutput(i: number, s: number): string;
  /** Scalar inputs fed per step. */
  readonly hyper: readonly HyperName[];
  /** Output names of the loss terms (scalars), and of the student outputs the loss read (by the loss's name for them). */
  readonly terms: Readonly<Record<string, string>>;
  readonly outputs: Readonly<Record<string, string>>;
  /** Train-mode state and inputs (train-mode.ts): BatchNorm running statistics, dropout masks, the batch size. */
  readonly buffers: readonly Buffer[];
  readonly dropout: readonly DropoutSite[];
  readonly needsBatchRows: boolean;
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

/**
 * Initializers the graph's metadata lists under this key (comma-separated) are constants, not
 * parameters: a causal mask, say, which a gradient would otherwise move.
 */
export const FROZEN_METADATA = 'distillate.frozen';

/**
 * The student's parameters: the float32 initializers of rank ≥ 1 that its nodes read, less the
 * BatchNorm running statistics and the initializers frozen by FROZEN_METADATA.
 */
export function studentParams(student: Graph): Array<TensorSpec & { readonly init: Float32Array }> {
  const buffers = bufferNames(student);
  for (const name of (student.metadata.get(FROZEN_METADATA) ?? '').split(',')) if (name !== '') buffers.add(name);
  const read = new Set(student.nodes.flatMap((n) => n.inputs));
  return [...student.initializers.values()]
    .filter((i) => i.data instanceof Float32Array && i.dims.length > 0 && !buffers.has(i.name) && read.has(i.name))
    .map((p) => ({ name: p.name, dims: p.dims, init: p.data as Float32Array }));
}

/** The BatchNorm running statistics, with their initial values. */
export function studentBuffers(student: Graph): Array<TensorSpec & { readonly init: Float32Array }> {
  return [...bufferNames(student)].map((name) => {
    const i = student.initializers.get(name);
    if (i === undefined || !(i.data instanceof Float32Array)) throw new Error(`BatchNormalization statistic ${name} is not a float32 initializer`);
    return { name, dims: i.dims, init: i.data };
  });
}

/**
 * `inputs`: the student's inputs; `outputs`: the student tensors the loss may read, by the
 * names the loss uses for them (`logits`, feature hints).
 */
export function buildStepGraph(
  student: Graph,
  opts: {
    inputs: readonly StepInput[];
    outputs: Readonly<Record<string, string>>;
    optimizer: OptimizerGraphSpec;
    loss: LossPiece;
    target?: 'cpu' | 'webgpu' | 'cuda';
  },
): StepGraph {
  const { optimizer } = opts;
  const params = studentParams(student);
  const buffers = studentBuffers(student);
  const fed = new Set([...params, ...buffers].map((p) => p.name));
  const g = new Graph('distillate-train-step', student.opset);
  g.reserve(student.nodes.flatMap((n) => [...n.inputs, ...n.outputs]));
  for (const i of opts.inputs) g.input(i.name, dimsOf(i.dims), i.type);
  for (const p of [...params, ...buffers]) g.input(p.name, p.dims);
  for (const init of student.initializers.values()) if (!fed.has(init.name)) g.initializer(init.name, init.data, init.dims);
  const trainMode = appendTrainingNodes(
    g,
    student,
    opts.inputs.map((i) => ({ name: i.name, shape: i.dims })),
  );
  const lossInputs = Object.fromEntries(Object.entries(opts.loss.inputs).map(([name, dims]) => [name, g.input(name, dims)]));
  const read: Record<string, string> = {};
  for (const name of opts.loss.outputs) {
    const tensor = opts.outputs[name];
    if (tensor === undefined)
      throw new UnsupportedGraphError(`the loss reads a student output ${name}; this student gives ${Object.keys(opts.outputs).join(', ')}`);
    read[name] = tensor;
  }
  const loss = opts.loss.compute(onnxOps(g), read, lossInputs);

  const known = new Map<string, Shape>(g.inputs.map((v) => [v.name, v.dims.map((d) => (typeof d === 'number' ? d : -1))]));
  const shapes = inferShapes(g, known);
  const seed = g.constant('seed', [1], []);
  const grads = differentiate({
    forward: g,
    shapes,
    wrt: params.map((p) => p.name),
    output: loss.total,
    outputGrad: seed,
    into: g,
    ...(opts.target === undefined ? {} : { target: opts.target }),
  });

  const slots = optimizer.kind === 'sgd' ? ['momentum'] : ['m', 'v'];
  const slotInput = (i: number, s: number): string => `${params[i]!.name}::${slots[s]}`;
  const slotOutput = (i: number, s: number): string => `${params[i]!.name}::${slots[s]}::next`;
  const paramOutput = (i: number): string => `${params[i]!.name}::next`;
  const hyper: HyperName[] = optimizer.kind === 'sgd' ? ['lr'] : ['stepSize', 'epsilon'];
  if (optimizer.weightDecay > 0) hyper.push('decay');
  for (const h of hyper) g.input(h, [1]);
  params.forEach((p, i) => slots.forEach((_, s) => g.input(slotInput(i, s), p.dims)));
  const c = (v: number): string => g.constant('c', [v], []);
  // A parameter the loss does not depend on would never train: refuse it, by name, before any step.
  const untrained = params.filter((p) => !grads.has(p.name)).map((p) => p.name);
  if (untrained.length > 0)
    throw new UnsupportedGraphError(
      `the student's parameter${untrained.length > 1 ? 's' : ''} ${untrained.join(', ')} ${untrained.length > 1 ? 'have' : 'has'} no gradient path to the loss, so ${untrained.length > 1 ? 'they' : 'it'} would never train (an output other than the logits, or an input no op differentiates)`,
    );
  params.forEach((p, i) => {
    const grad = grads.get(p.name)!;
    // Decoupled weight decay (Loshchilov & Hutter) on weight matrices, after the step, as the
    // TF.js engine does. Without it the step's last op writes the output (no Identity after it:
    // `bench:ort` row adam_update_ms_direct).
    const decays = optimizer.weightDecay > 0 && p.dims.length > 1;
    const stepped = decays ? undefined : paramOutput(i);
    let next: string;
    if (optimizer.kind === 'sgd') {
      // tf.train.momentum: a ← μ·a + g; p ← p − lr·a
      const acc = g.node('Add', [g.node('Mul', [slotInput(i, 0), c(optimizer.momentum)]), grad], {}, slotOutput(i, 0));
      next = g.node('Sub', [p.name, g.node('Mul', [acc, 'lr'])], {}, stepped);
    } else {
      // tf.train.adam in the scaled-moment form (HyperName): m̄ ← β₁m̄ + g; ū ← β₂ū + g²; p ← p − stepSize·m̄ / (√ū + epsilon)
      const m = g.node('Add', [g.node('Mul', [slotInput(i, 0), c(optimizer.beta1)]), grad], {}, slotOutput(i, 0));
      const v = g.node('Add', [g.node('Mul', [slotInput(i, 1), c(optimizer.beta2)]), g.node('Mul', [grad, grad])], {}, slotOutput(i, 1));
      const denom = g.node('Add', [g.node('Sqrt', [v]), 'epsilon']);
      next = g.node('Sub', [p.name, g.node('Mul', [g.node('Div', [m, denom]), 'stepSize'])], {}, stepped);
    }
    if (decays) g.node('Mul', [next, 'decay'], {}, paramOutput(i));
  });
  params.forEach((p, i) => {
    g.output(paramOutput(i), p.dims);
    slots.forEach((_, s) => g.output(slotOutput(i, s), p.dims));
  });
  for (const b of trainMode.buffers) g.output(b.next, b.dims);
  for (const tensor of Object.values(read)) g.output(tensor, dimsOf(shapes.get(tensor)!));
  const terms: Record<string, string> = {};
  for (const [k, name] of Object.entries(loss.terms)) {
    // A term may be the same tensor as another (total = ce when ce is the only one): one output each.
    const out = g.node('Identity', [name], {}, `term::${k}`);
    g.output(out, []);
    terms[k] = out;
  }
  // The rules build every input's gradient; those of tensors no parameter needs (the images'
  // through the first convolution, a constant's) are dropped here, not run each step.
  g.prune();
  return { graph: g, params, slots, slotInput, paramOutput, slotOutput, hyper, terms, outputs: read, ...trainMode };
}

/** The student in inference form with its parameters and buffers as inputs: its outputs, fed the current weights. */
export function buildPredictGraph(student: Graph, inputs: readonly StepInput[]): Uint8Array {
  const fed = [...studentParams(student), ...studentBuffers(student)];
  const fedNames = new Set(fed.map((p) => p.name));
  const g = new Graph('distillate-predict', student.opset);
  for (const i of inputs) g.input(i.name, dimsOf(i.dims), i.type);
  for (const p of fed) g.input(p.name, p.dims);
  for (const init of student.initializers.values()) if (!fedNames.has(init.name)) g.initializer(init.name, init.data, init.dims);
  for (const n of student.nodes) g.add(n.op, n.inputs, { ...n.attrs }, n.outputs);
  for (const o of student.outputs) g.output(o.name, o.dims, o.type);
  return g.toBytes();
}
