/**
 * The ONNX Runtime engine (the default). The student is an ONNX graph from the first step, and
 * a train step is one session run of one graph: forward, the batch loss, reverse-mode
 * gradients and the optimizer update (train-graphs.ts). Batches whose loss has the same shape
 * share a session; a run usually has one or two (e.g. before and after self-distillation
 * starts). Parameters and optimizer state are fed in and come back updated.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { mulberry32 } from '@distillate/shared';
import { Graph, OrtSession, type ExecutionProvider, type OrtSessionOptions } from '@distillate/shared/onnx';
import type { Recipe } from '../recipe.js';
import {
  adamScalars,
  buildPredictGraph,
  buildStepGraph,
  studentBuffers,
  studentParams,
  type HyperName,
  type LossPiece,
  type OptimizerGraphSpec,
  type StepGraph,
} from '../internal/autodiff/train-graphs.js';
import { loopSteps, type Carried, type LoopedStep } from '../internal/autodiff/loop.js';
import { buildOnnxStudent, STUDENT_INPUT, STUDENT_LOGITS, type OnnxStudentSpec } from '../internal/onnx-students.js';
import { addHintHeads, TRAIN_ONLY_METADATA } from '../internal/hint-heads.js';
import type { PlannedHint } from '../teacher-plan.js';
import type { StepInput } from '../internal/autodiff/train-graphs.js';
import {
  type BatchLoss,
  type StepOptions,
  type StepResult,
  type StoredInput,
  type StudentBatch,
  type StudentEngine,
  type TensorArray,
  type TensorDtype,
  type TensorSpec,
} from './engine.js';

interface Looped {
  readonly graph: StepGraph;
  readonly looped: LoopedStep;
  readonly carried: readonly Carried[];
  readonly perStep: ReadonlyArray<{ readonly name: string }>;
  readonly session: OrtSession;
  /**
   * The stacked per-step feeds, kept from run to run and refilled: a run's inputs are read
   * during the run, so the next run may overwrite them. Fresh ones per run were 3.2 MB of
   * external memory per 8 MLP steps, and V8 answers external memory with full collections.
   */
  readonly stacks: Map<string, TensorArray>;
}

const ADAM = { beta1: 0.9, beta2: 0.999, epsilon: 1e-7 }; // tf.train.adam's defaults, so both engines run the same optimizer

/**
 * A loss of every output (log-softmax of the logits, the sum of the rest): builds a step graph
 * at create time, so that ops without gradient rules are refused before training.
 */
function probeLoss(graph: Graph): LossPiece {
  const names = graph.outputs.map((o) => o.name);
  return {
    inputs: {},
    outputs: names,
    compute(o, outputs) {
      const parts = names.map((n) => o.sumAll(n === STUDENT_LOGITS ? o.logSoftmax(outputs[n]!) : outputs[n]!));
      const total = parts.reduce((x, y) => o.add(x, y));
      return { total, terms: { total } };
    },
  };
}

export interface OrtEngineOptions {
  /** Force an execution provider (recipe executionProvider, or DISTILLATE_EP). */
  readonly provider?: ExecutionProvider;
  readonly intraOpThreads?: number;
  readonly onProviderFailure?: (provider: ExecutionProvider, reason: string) => void;
  /** Also take the one input as stored uint8 values, scaled in the graph (StudentEngine.storedInput); ignored for a student with several inputs or a non-float one. */
  readonly storedInput?: StoredInput;
  /** Session settings measured and not used by default (`bench:ort`): inter-op parallelism, spinning. */
  readonly session?: Pick<OrtSessionOptions, 'interOpThreads' | 'spinning'>;
}

/**
 * The student behind a uint8 input: x · scale + offset in the graph (Cast, Mul, Add: passes
 * over the batch inside the session), then the student as it is. Its parameters are the
 * student's, in the same order (the scale and offset are scalars, which are never parameters).
 */
function withStoredInput(student: Graph, stored: StoredInput): { graph: Graph; stepInputs: StepInput[] } {
  const input = student.inputs[0]!;
  const g = new Graph(student.name, student.opset);
  g.reserve([...student.inputs.map((v) => v.name), ...student.initializers.keys(), ...student.nodes.flatMap((n) => n.outputs)]);
  g.input(input.name, input.dims, 'uint8');
  // A scale of 1 or an offset of 0 costs no pass (Fashion-MNIST's scaling is x / 255).
  const values = g.node('Cast', [input.name], { to: 1 });
  const multiplied = stored.scale === 1 ? values : g.node('Mul', [values, g.constant('input_scale', [stored.scale], [])]);
  const scaled = stored.offset === 0 ? multiplied : g.node('Add', [multiplied, g.constant('input_offset', [stored.offset], [])]);
  g.graft(student, new Map([[input.name, scaled]]));
  for (const o of student.outputs) g.output(o.name, o.dims, o.type);
  for (const [k, v] of student.metadata) g.metadata.set(k, v);
  const stepInputs: StepInput[] = [{ name: input.name, dims: input.dims.map((d) => (typeof d === 'number' ? d : -1)), type: 'uint8' }];
  return { graph: g, stepInputs };
}

export class OrtEngine implements StudentEngine {
  readonly name = 'ort';
  readonly device: ExecutionProvider;
  readonly inputs: readonly TensorSpec[];
  readonly outputs: readonly TensorSpec[];
  readonly classes: number;
  readonly parameters: number;
  /**
   * The exported graph is the model itself: 1e-5. With BatchNorm, 1e-4: the export holds the
   * running statistics as constants, which onnxruntime folds into the convolutions, while
   * predict() feeds them; the rounding differs and grows with depth (2.1e-5 seen with the small
   * ResNet), far below what a wrong export gives.
   */
  readonly exportTolerance: number;
  readonly storedInput?: StoredInput;
  readonly #student: Graph;
  /** The student behind its stored-input prefix, when it takes stored values (withStoredInput). */
  readonly #stored: { readonly graph: Graph; readonly stepInputs: readonly StepInput[] } | undefined;
  #predictStored: Promise<OrtSession> | undefined;
  readonly #stepInputs: readonly StepInput[];
  readonly #params: ReadonlyArray<{ readonly name: string; readonly dims: readonly number[] }>;
  /** BatchNorm running statistics: state the step updates without a gradient. */
  readonly #buffers: ReadonlyArray<{ readonly name: string; readonly dims: readonly number[] }>;
  #bufferValues: Float32Array[];
  readonly #seed: number;
  readonly #slots: readonly string[];
  readonly #predict: OrtSession;
  readonly #optimizer: OptimizerGraphSpec;
  readonly #options: OrtEngineOptions;
  /** One train-step session per loss shape (LossGraph.key). */
  readonly #steps = new Map<string, Promise<Looped>>();
  #values: Float32Array[];
  #state: Float32Array[][];
  #step = 0;

  private constructor(
    student: Graph,
    stepInputs: readonly StepInput[],
    predict: OrtSession,
    optimizer: OptimizerGraphSpec,
    classes: number,
    options: OrtEngineOptions,
    seed: number,
  ) {
    this.#seed = seed;
    const only = stepInputs.length === 1 && stepInputs[0]!.type === 'float32';
    this.#stored = options.storedInput !== undefined && only ? withStoredInput(student, options.storedInput) : undefined;
    if (this.#stored !== undefined && options.storedInput !== undefined) this.storedInput = options.storedInput;
    this.#student = student;
    this.#stepInputs = stepInputs;
    this.#predict = predict;
    this.#optimizer = optimizer;
    this.#options = options;
    this.inputs = stepInputs.map((i) => ({ name: i.name, dtype: i.type as TensorDtype, dims: i.dims.map((d) => (d === -1 ? 'N' : d)) }));
    this.outputs = [...student.outputs]
      .sort((a, b) => Number(b.name === STUDENT_LOGITS) - Number(a.name === STUDENT_LOGITS))
      .map((o) => ({ name: o.name, dtype: 'float32', dims: o.dims }));
    this.classes = classes;
    this.device = predict.executionProvider;
    const params = studentParams(student);
    this.#params = params;
    this.#slots = optimizer.kind === 'sgd' ? ['momentum'] : ['m', 'v'];
    // The student's own: hint regressors train with it but are not part of it (nor of student.onnx).
    const own = inferencePart(student).initializers;
    this.parameters = params.filter((p) => own.has(p.name)).reduce((a, p) => a + p.init.length, 0);
    this.#values = params.map((p) => p.init.slice());
    this.#state = params.map((p) => this.#slots.map(() => new Float32Array(p.init.length)));
    const buffers = studentBuffers(student);
    this.#buffers = buffers;
    this.#bufferValues = buffers.map((b) => b.init.slice());
    this.exportTolerance = buffers.length > 0 ? 1e-4 : 1e-5;
  }

  /** The recipe's student (built in, or an ONNX file) over the dataset's samples. */
  static async create(
    recipe: Readonly<Recipe>,
    inputShape: readonly number[],
    classes: number,
    options: OrtEngineOptions = {},
    hints: readonly PlannedHint[] = [],
  ): Promise<OrtEngine> {
    const { graph, inputSize } = await buildOnnxStudent(recipe.student as OnnxStudentSpec, inputShape, classes, recipe.seed);
    addHintHeads(graph, new Map([[STUDENT_INPUT, [-1, inputSize]]]), hints, recipe.seed);
    return OrtEngine.fromGraph(graph, recipe, options);
  }

  /**
   * Any student graph: named inputs (float32, int32 or uint8, of any rank, the batch first) and
   * named float outputs, one of them `logits` (of any rank: [N, C], [N, L, V]); its other
   * outputs are there for losses that read them (feature hints). Every op on a path from a
   * parameter to an output needs a gradient rule; that is checked here, before any step.
   */
  static async fromGraph(graph: Graph, recipe: Pick<Recipe, 'optimizer' | 'seed'>, options: OrtEngineOptions = {}): Promise<OrtEngine> {
    const stepInputs = graph.inputs.map((v): StepInput => {
      if (v.type !== 'float32' && v.type !== 'int32' && v.type !== 'uint8')
        throw new Error(`student input ${v.name} is ${v.type}; inputs are float32, int32 or uint8`);
      return { name: v.name, dims: v.dims.map((d) => (typeof d === 'number' ? d : -1)), type: v.type };
    });
    const logits = graph.outputs.find((o) => o.name === STUDENT_LOGITS);
    if (logits === undefined) throw new Error(`the student has no output named ${STUDENT_LOGITS} (it gives ${graph.outputs.map((o) => o.name).join(', ')})`);
    const classes = logits.dims.at(-1);
    if (typeof classes !== 'number') throw new Error(`the student's ${STUDENT_LOGITS} output has a symbolic last dimension; give its size`);
    const o = recipe.optimizer;
    const optimizer: OptimizerGraphSpec =
      o.kind === 'sgd' ? { kind: 'sgd', momentum: o.momentum, weightDecay: o.weightDecay } : { kind: 'adam', ...ADAM, weightDecay: o.weightDecay };
    // Checks every op against the gradient rules now, before any epoch (a throwaway step graph with a loss of the logits alone).
    buildStepGraph(graph, { inputs: stepInputs, outputs: studentOutputs(graph), optimizer, loss: probeLoss(graph) });
    const predict = await OrtSession.create(buildPredictGraph(graph, stepInputs), {
      ...(options.provider === undefined ? {} : { provider: options.provider }),
      ...sessionSettings(options),
      ...(options.onProviderFailure === undefined ? {} : { onProviderFailure: options.onProviderFailure }),
    });
    return new OrtEngine(graph, stepInputs, predict, optimizer, classes, options, recipe.seed);
  }

  /**
   * The train-step session for this loss shape, built on first use on the provider predict runs
   * on: the step graph as the body of a Loop, so one run trains on K stacked batches.
   */
  #stepFor(loss: BatchLoss, stored: boolean): Promise<Looped> {
    const key = `${stored ? 'stored' : 'scaled'}|${loss.key}`;
    let entry = this.#steps.get(key);
    if (entry === undefined) {
      entry = (async () => {
        const graph = buildStepGraph(stored ? this.#stored!.graph : this.#student, {
          inputs: stored ? this.#stored!.stepInputs : this.#stepInputs,
          outputs: studentOutputs(this.#student),
          optimizer: this.#optimizer,
          loss,
          target: this.device,
        });
        const carried: Carried[] = [
          ...graph.params.flatMap((p, i) => [
            { input: p.name, output: graph.paramOutput(i), dims: p.dims },
            ...graph.slots.map((_, s) => ({ input: graph.slotInput(i, s), output: graph.slotOutput(i, s), dims: p.dims })),
          ]),
          ...graph.buffers.map((b) => ({ input: b.name, output: b.next, dims: b.dims })),
        ];
        const carriedNames = new Set(carried.map((c) => c.input));
        const perStep = graph.graph.inputs.filter((v) => !carriedNames.has(v.name)).map((v) => ({ name: v.name, dims: v.dims, type: v.type }));
        const outputDims = new Map(graph.graph.outputs.map((o) => [o.name, o.dims]));
        const scan = [
          ...Object.values(graph.outputs).map((name) => ({ name, dims: outputDims.get(name)! })),
          ...Object.values(graph.terms).map((name) => ({ name, dims: [] })),
        ];
        const looped = loopSteps(graph.graph, carried, perStep, scan);
        const session = await OrtSession.create(looped.bytes, { provider: this.device, ...sessionSettings(this.#options) });
        return { graph, looped, carried, perStep, session, stacks: new Map() };
      })();
      this.#steps.set(key, entry);
    }
    return entry;
  }

  async step(batch: StudentBatch, loss: BatchLoss, lr: number, options?: StepOptions): Promise<StepResult> {
    return (await this.steps([{ batch, loss }], lr, options))[0]!;
  }

  /**
   * Several train steps in one session run (an ONNX Loop): batches with the same loss shape
   * and row count, trained in order, exactly as one step each would.
   */
  async steps(
    batches: ReadonlyArray<{ readonly batch: StudentBatch; readonly loss: BatchLoss }>,
    lr: number,
    options: StepOptions = {},
  ): Promise<StepResult[]> {
    const K = batches.length;
    const rows = batches[0]!.batch.rows;
    const key = batches[0]!.loss.key;
    const stored = this.#isStored(batches[0]!.batch);
    if (batches.some((b) => b.batch.rows !== rows || b.loss.key !== key || this.#isStored(b.batch) !== stored))
      throw new Error('internal: steps() takes batches of one row count, loss shape and input type');
    const { graph: g, looped, carried, perStep, session, stacks } = await this.#stepFor(batches[0]!.loss, stored);
    // Per-step inputs, stacked: [K, …] each.
    const perStepFeeds = batches.map((b) => {
      this.#step++;
      const adam = this.#optimizer.kind === 'adam' ? adamScalars(lr, this.#step, this.#optimizer) : { stepSize: 0, epsilon: 0 };
      const hyper: Record<HyperName, number> = { lr, ...adam, decay: 1 - lr * this.#optimizer.weightDecay };
      const feeds: Record<string, { data: TensorArray; dims: readonly number[] }> = { ...b.loss.feeds(), ...this.#inputFeeds(b.batch, stored) };
      for (const h of g.hyper) feeds[h] = { data: Float32Array.of(hyper[h]), dims: [1] };
      if (g.needsBatchRows) feeds['batch_rows'] = { data: Float32Array.of(rows), dims: [1] };
      // Inverted dropout masks from a generator seeded by (recipe seed, step): a resumed run draws the same ones.
      const rand = mulberry32((this.#seed * 7919 + this.#step * 104729) | 0);
      for (const d of g.dropout) {
        const dims = d.dims.map((v) => (v === -1 ? rows : v));
        const keep = 1 / (1 - d.ratio);
        feeds[d.mask] = { data: Float32Array.from({ length: dims.reduce((a2, b2) => a2 * b2, 1) }, () => (rand() < d.ratio ? 0 : keep)), dims };
      }
      return feeds;
    });
    const feeds: Record<string, { data: TensorArray; dims: readonly number[] }> = {};
    for (const p of perStep) {
      const parts = perStepFeeds.map((f) => f[p.name]!);
      const size = parts[0]!.data.length;
      let stack = stacks.get(p.name);
      if (stack === undefined || stack.length < K * size || stack.constructor !== parts[0]!.data.constructor) {
        stack = new (parts[0]!.data.constructor as new (n: number) => TensorArray)(K * size);
        stacks.set(p.name, stack);
      }
      const data = stack.length === K * size ? stack : stack.subarray(0, K * size);
      parts.forEach((part, k) => data.set(part.data.subarray(0, size), k * size));
      feeds[looped.stacked(p.name)] = { data, dims: [K, ...parts[0]!.dims] };
    }
    const current = this.#carriedValues(g);
    carried.forEach((c, i) => (feeds[looped.initial(c.input)] = { data: current[i]!, dims: c.dims as number[] }));
    const termNames = Object.entries(g.terms);
    const read = options.outputs === false ? [] : Object.entries(g.outputs);
    const out = await session.runMany(feeds, [
      ...carried.map((c) => looped.final(c.output)),
      ...read.map(([, name]) => looped.scanned(name)),
      ...termNames.map(([, name]) => looped.scanned(name)),
    ]);
    this.#setCarried(
      g,
      carried.map((c) => out[looped.final(c.output)]!),
    );
    return batches.map((_, k) => ({
      terms: Object.fromEntries(termNames.map(([term, name]) => [term, out[looped.scanned(name)]![k]!])),
      outputs: Object.fromEntries(
        read.map(([as, name]) => {
          const all = out[looped.scanned(name)]!;
          const per = all.length / K;
          return [as, all.subarray(k * per, (k + 1) * per)];
        }),
      ),
    }));
  }

  /** Whether a batch holds stored values for a student that takes them (its one input as uint8). */
  #isStored(batch: StudentBatch): boolean {
    return this.#stored !== undefined && batch.inputs[this.#stored.stepInputs[0]!.name]?.data instanceof Uint8Array;
  }

  /** The batch's input tensors, checked against the student's inputs (or the stored-input graph's). */
  #inputFeeds(batch: StudentBatch, stored: boolean): Record<string, { data: TensorArray; dims: readonly number[] }> {
    const feeds: Record<string, { data: TensorArray; dims: readonly number[] }> = {};
    for (const spec of stored ? this.#stored!.stepInputs : this.#stepInputs) {
      const t = batch.inputs[spec.name];
      if (t === undefined) throw new Error(`the batch has no input ${spec.name} (the student takes ${this.#stepInputs.map((i) => i.name).join(', ')})`);
      if (dtypeOf(t.data) !== spec.type) throw new Error(`input ${spec.name}: the student takes ${spec.type}, the batch holds ${dtypeOf(t.data)}`);
      const size = t.dims.reduce((a, b) => a * b, 1);
      feeds[spec.name] = { data: t.data.length === size ? t.data : t.data.subarray(0, size), dims: t.dims };
    }
    return feeds;
  }

  /** Parameters, their optimizer slots, then buffers: the loop-carried order. */
  #carriedValues(g: StepGraph): Float32Array[] {
    return [
      ...g.params.flatMap((_, i) => [this.#values[i]!, ...g.slots.map((__, s) => this.#state[i]![s]!)]),
      ...g.buffers.map((b) => this.#bufferValues[this.#buffers.findIndex((x) => x.name === b.name)]!),
    ];
  }

  #setCarried(g: StepGraph, values: Float32Array[]): void {
    let k = 0;
    g.params.forEach((_, i) => {
      this.#values[i] = values[k++]!;
      g.slots.forEach((__, s) => (this.#state[i]![s] = values[k++]!));
    });
    g.buffers.forEach((b) => (this.#bufferValues[this.#buffers.findIndex((x) => x.name === b.name)] = values[k++]!));
  }

  async predict(batch: StudentBatch): Promise<Float32Array> {
    const stored = this.#isStored(batch);
    const feeds: Record<string, { data: TensorArray; dims: readonly number[] }> = this.#inputFeeds(batch, stored);
    this.#params.forEach((p, i) => (feeds[p.name] = { data: this.#values[i]!, dims: p.dims }));
    this.#buffers.forEach((b, i) => (feeds[b.name] = { data: this.#bufferValues[i]!, dims: b.dims }));
    const session = stored ? await (this.#predictStored ??= this.#storedPredictSession()) : this.#predict;
    return (await session.runMany(feeds, [STUDENT_LOGITS]))[STUDENT_LOGITS]!;
  }

  /** The predict session of the stored-input graph, on the provider predict runs on. */
  #storedPredictSession(): Promise<OrtSession> {
    const { graph, stepInputs } = this.#stored!;
    return OrtSession.create(buildPredictGraph(graph, stepInputs), { provider: this.device, ...sessionSettings(this.#options) });
  }

  /** The node that makes the logits, if it is a Gemm whose weight and bias are parameters. */
  #logitLayer(): { weight: number; bias: number } {
    const node = this.#student.nodes.find((n) => n.outputs.includes(STUDENT_LOGITS));
    const index = (name: string | undefined): number => this.#params.findIndex((p) => p.name === name);
    if (node?.op !== 'Gemm' || index(node.inputs[1]) < 0 || index(node.inputs[2]) < 0) {
      throw new Error(
        `the student's logits come from ${node === undefined ? 'no node' : `a ${node.op} node`}; temperature scaling needs a final Gemm with a weight and a bias`,
      );
    }
    return { weight: index(node.inputs[1]), bias: index(node.inputs[2]) };
  }

  checkLogitScaling(): void {
    this.#logitLayer();
  }

  scaleLogits(factor: number): void {
    if (!(Number.isFinite(factor) && factor > 0)) throw new RangeError(`logit scale must be a finite number > 0, got ${factor}`);
    const { weight, bias } = this.#logitLayer();
    for (const i of [weight, bias]) {
      const p = this.#values[i]!;
      for (let k = 0; k < p.length; k++) p[k]! *= factor;
    }
  }

  async saveCheckpoint(dir: string): Promise<void> {
    await mkdir(dir, { recursive: true });
    const tensors: Array<{ name: string; dims: readonly number[]; offset: number; length: number }> = [];
    const chunks: Buffer[] = [];
    let offset = 0;
    const add = (name: string, dims: readonly number[], data: Float32Array): void => {
      tensors.push({ name, dims, offset, length: data.length });
      chunks.push(Buffer.from(data.buffer, data.byteOffset, data.byteLength));
      offset += data.byteLength;
    };
    this.#params.forEach((p, i) => {
      add(p.name, p.dims, this.#values[i]!);
      this.#slots.forEach((s, k) => add(`${p.name}::${s}`, p.dims, this.#state[i]![k]!));
    });
    this.#buffers.forEach((b, i) => add(b.name, b.dims, this.#bufferValues[i]!));
    await writeFile(join(dir, 'weights.bin'), Buffer.concat(chunks));
    // Adam's slots are the scaled moments m/(1−β₁) and v/(1−β₂) (train-graphs.ts).
    await writeFile(join(dir, 'state.json'), JSON.stringify({ engine: 'ort', step: this.#step, optimizer: this.#optimizer.kind, slots: this.#slots, tensors }));
  }

  async loadCheckpoint(dir: string): Promise<void> {
    let state: { engine: string; step: number; optimizer: string; tensors: Array<{ name: string; offset: number; length: number }> };
    try {
      state = JSON.parse(await readFile(join(dir, 'state.json'), 'utf8'));
    } catch {
      throw new Error(`${dir}: not a checkpoint of the ort engine (no state.json); resume with the engine that wrote it`);
    }
    if (state.optimizer !== this.#optimizer.kind)
      throw new Error(`${dir}: checkpoint has ${state.optimizer} optimizer state, the recipe uses ${this.#optimizer.kind}`);
    const bin = await readFile(join(dir, 'weights.bin'));
    const byName = new Map(state.tensors.map((t) => [t.name, t]));
    const read = (name: string, into: Float32Array): void => {
      const t = byName.get(name);
      if (t === undefined || t.length !== into.length)
        throw new Error(`${dir}: checkpoint has no tensor ${name} of ${into.length} values (a different student?)`);
      into.set(new Float32Array(bin.buffer.slice(bin.byteOffset + t.offset, bin.byteOffset + t.offset + t.length * 4)));
    };
    this.#params.forEach((p, i) => {
      read(p.name, this.#values[i]!);
      this.#slots.forEach((s, k) => read(`${p.name}::${s}`, this.#state[i]![k]!));
    });
    this.#buffers.forEach((b, i) => read(b.name, this.#bufferValues[i]!));
    this.#step = state.step;
  }

  async saveModel(): Promise<void> {
    // The ONNX export is the model.
  }

  exportOnnx(metadata: Readonly<Record<string, string>>): Uint8Array {
    const g = new Graph('distillate-student', this.#student.opset);
    const current = new Map<string, Float32Array>([
      ...this.#params.map((p, i) => [p.name, this.#values[i]!] as const),
      ...this.#buffers.map((b, i) => [b.name, this.#bufferValues[i]!] as const),
    ]);
    const { nodes, outputs, initializers } = inferencePart(this.#student);
    for (const v of this.#student.inputs) g.input(v.name, v.dims, v.type);
    for (const init of this.#student.initializers.values())
      if (initializers.has(init.name)) g.initializer(init.name, current.get(init.name)?.slice() ?? init.data, init.dims);
    for (const n of nodes) g.add(n.op, n.inputs, { ...n.attrs }, n.outputs);
    for (const v of outputs) g.output(v.name, v.dims, v.type);
    for (const [k, v] of Object.entries(metadata)) g.metadata.set(k, v);
    return g.toBytes();
  }

  async latencyMs(runs = 50): Promise<number> {
    const session = await OrtSession.create(this.exportOnnx({}), { provider: 'cpu' });
    try {
      // One sample of zeros per input, of its own type and shape.
      const feeds = Object.fromEntries(
        this.#stepInputs.map((i) => {
          const dims = i.dims.map((d) => (d === -1 ? 1 : d));
          const n = dims.reduce((a, b) => a * b, 1);
          return [i.name, { data: i.type === 'int32' ? new Int32Array(n) : i.type === 'uint8' ? new Uint8Array(n) : new Float32Array(n), dims }];
        }),
      );
      for (let i = 0; i < 5; i++) await session.runMany(feeds, [STUDENT_LOGITS]);
      const t0 = performance.now();
      for (let i = 0; i < runs; i++) await session.runMany(feeds, [STUDENT_LOGITS]);
      return (performance.now() - t0) / runs;
    } finally {
      await session.release();
    }
  }

  async release(): Promise<void> {
    await this.#predict.release();
    await (await this.#predictStored?.catch(() => undefined))?.release();
    for (const entry of this.#steps.values()) await (await entry.catch(() => undefined))?.session.release();
  }
}

/** The session settings an engine's sessions share: threads, and what `session` asks for. */
function sessionSettings(o: OrtEngineOptions): Pick<OrtSessionOptions, 'intraOpThreads' | 'interOpThreads' | 'spinning'> {
  return { ...(o.intraOpThreads === undefined ? {} : { intraOpThreads: o.intraOpThreads }), ...o.session };
}

/** Every output of the student graph, by its own name: what a loss may read (`logits` among them). */
function studentOutputs(student: Graph): Record<string, string> {
  return Object.fromEntries(student.outputs.map((o) => [o.name, o.name]));
}

function dtypeOf(data: TensorArray): TensorDtype {
  return data instanceof Int32Array ? 'int32' : data instanceof Uint8Array ? 'uint8' : 'float32';
}

/**
 * What `student.onnx` holds of the training graph: every output but the train-only ones (hint
 * heads, TRAIN_ONLY_METADATA), the nodes they need and the initializers those nodes read. A
 * graph without train-only outputs is kept whole.
 */
function inferencePart(student: Graph): { nodes: Graph['nodes']; outputs: Graph['outputs']; initializers: Set<string> } {
  const trainOnly = new Set((student.metadata.get(TRAIN_ONLY_METADATA) ?? '').split(',').filter((n) => n !== ''));
  if (trainOnly.size === 0) return { nodes: student.nodes, outputs: student.outputs, initializers: new Set(student.initializers.keys()) };
  const outputs = student.outputs.filter((v) => !trainOnly.has(v.name));
  // Walk back from the outputs kept: a node stays when something kept reads its output.
  const needed = new Set(outputs.map((v) => v.name));
  const kept: Graph['nodes'] = [];
  for (const n of [...student.nodes].reverse()) {
    if (!n.outputs.some((o) => needed.has(o))) continue;
    kept.push(n);
    for (const i of n.inputs) needed.add(i);
  }
  return { nodes: kept.reverse(), outputs, initializers: new Set([...student.initializers.keys()].filter((n) => needed.has(n))) };
}
