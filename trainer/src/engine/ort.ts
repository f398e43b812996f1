/**
 * The ONNX Runtime engine (the default). The student is an ONNX graph from the first step; a
 * train step is two session runs — the forward graph (logits and the activations the gradient
 * rules read), then the backward graph (gradients and the optimizer update) — with the loss and
 * dL/dlogits computed in between by the trainer's own loss functions on a [rows, classes]
 * tensor. Weights and optimizer state live in two sets of buffers that the backward run fills
 * in turn, so nothing the size of the model is allocated per step.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { Graph, OrtSession, type ExecutionProvider } from '@distillate/shared/onnx';
import type { Recipe } from '../recipe.js';
import { adamScalars, buildTrainGraphs, type HyperName, type OptimizerGraphSpec, type TrainGraphs } from '../internal/autodiff/train-graphs.js';
import { buildOnnxStudent, STUDENT_INPUT, STUDENT_LOGITS, type OnnxStudentSpec } from '../internal/onnx-students.js';
import type { LossFn, StepResult, StudentEngine } from './engine.js';

const ADAM = { beta1: 0.9, beta2: 0.999, epsilon: 1e-7 }; // tf.train.adam's defaults, so both engines run the same optimizer

interface State {
  params: Float32Array[];
  slots: Float32Array[][];
}

export interface OrtEngineOptions {
  /** Force an execution provider (recipe executionProvider, or DISTILLATE_EP). */
  readonly provider?: ExecutionProvider;
  readonly intraOpThreads?: number;
  readonly onProviderFailure?: (provider: ExecutionProvider, reason: string) => void;
}

export class OrtEngine implements StudentEngine {
  readonly name = 'ort';
  readonly device: string;
  readonly classes: number;
  readonly inputSize: number;
  readonly parameters: number;
  readonly #student: Graph;
  readonly #graphs: TrainGraphs;
  readonly #forward: OrtSession;
  readonly #backward: OrtSession;
  readonly #optimizer: OptimizerGraphSpec;
  #cur: State;
  #next: State;
  #step = 0;

  private constructor(student: Graph, graphs: TrainGraphs, forward: OrtSession, backward: OrtSession, optimizer: OptimizerGraphSpec, inputSize: number, classes: number) {
    this.#student = student;
    this.#graphs = graphs;
    this.#forward = forward;
    this.#backward = backward;
    this.#optimizer = optimizer;
    this.inputSize = inputSize;
    this.classes = classes;
    this.device = forward.executionProvider;
    this.parameters = graphs.params.reduce((a, p) => a + p.init.length, 0);
    const fresh = (copy: boolean): State => ({
      params: graphs.params.map((p) => (copy ? p.init.slice() : new Float32Array(p.init.length))),
      slots: graphs.params.map((p) => graphs.slots.map(() => new Float32Array(p.init.length))),
    });
    this.#cur = fresh(true);
    this.#next = fresh(false);
  }

  static async create(recipe: Readonly<Recipe>, inputShape: readonly number[], classes: number, options: OrtEngineOptions = {}): Promise<OrtEngine> {
    const { graph, inputSize } = await buildOnnxStudent(recipe.student as OnnxStudentSpec, inputShape, classes, recipe.seed);
    const o = recipe.optimizer;
    const optimizer: OptimizerGraphSpec = o.kind === 'sgd' ? { kind: 'sgd', momentum: o.momentum, weightDecay: o.weightDecay } : { kind: 'adam', ...ADAM, weightDecay: o.weightDecay };
    const graphs = buildTrainGraphs(graph, { input: STUDENT_INPUT, logits: STUDENT_LOGITS, sampleShape: [inputSize], optimizer });
    const forward = await OrtSession.create(graphs.forward, {
      spinning: false,
      ...(options.provider === undefined ? {} : { provider: options.provider }),
      ...(options.intraOpThreads === undefined ? {} : { intraOpThreads: options.intraOpThreads }),
      ...(options.onProviderFailure === undefined ? {} : { onProviderFailure: options.onProviderFailure }),
    });
    let backward: OrtSession;
    try {
      backward = await OrtSession.create(graphs.backward, { provider: forward.executionProvider, spinning: false, ...(options.intraOpThreads === undefined ? {} : { intraOpThreads: options.intraOpThreads }) });
    } catch (err) {
      await forward.release();
      throw err;
    }
    return new OrtEngine(graph, graphs, forward, backward, optimizer, inputSize, classes);
  }

  #paramFeeds(feeds: Record<string, { data: Float32Array; dims: readonly number[] }>): void {
    this.#graphs.params.forEach((p, i) => (feeds[p.name] = { data: this.#cur.params[i]!, dims: p.dims }));
  }

  async step(x: Float32Array, rows: number, loss: LossFn, lr: number): Promise<StepResult> {
    const g = this.#graphs;
    const input = { data: x.subarray(0, rows * this.inputSize), dims: [rows, this.inputSize] };
    const fwdFeeds: Record<string, { data: Float32Array; dims: readonly number[] }> = { [STUDENT_INPUT]: input };
    this.#paramFeeds(fwdFeeds);
    const fwd = await this.#forward.runMany(fwdFeeds, [STUDENT_LOGITS, ...g.saved.map((s) => s.name)]);
    const logits = fwd[STUDENT_LOGITS]!;

    // The loss and dL/dlogits, from the trainer's loss functions.
    let terms: Record<string, number> = {};
    const dlogits = tf.tidy(() => {
      const z = tf.tensor2d(logits, [rows, this.classes]);
      const grad = tf.grad((t: tf.Tensor) => {
        const r = loss(t as tf.Tensor2D);
        terms = Object.fromEntries(Object.entries(r.terms).map(([k, v]) => [k, v.dataSync()[0]!]));
        return r.total;
      });
      return grad(z);
    });
    const dz = (await dlogits.data()) as Float32Array;
    dlogits.dispose();

    this.#step++;
    const adam = this.#optimizer.kind === 'adam' ? adamScalars(lr, this.#step, this.#optimizer) : { stepSize: 0, epsilon: 0 };
    const hyper: Record<HyperName, number> = { lr, ...adam, decay: 1 - lr * this.#optimizer.weightDecay };
    const feeds: Record<string, { data: Float32Array; dims: readonly number[] }> = { dlogits: { data: dz, dims: [rows, this.classes] } };
    for (const s of g.saved) feeds[s.name] = { data: fwd[s.name]!, dims: s.dims.map((d) => (d === -1 ? rows : d)) };
    if (g.backwardTakesInput) feeds[STUDENT_INPUT] = input;
    this.#paramFeeds(feeds);
    const into: Record<string, { data: Float32Array; dims: readonly number[] }> = {};
    const outputs: string[] = [];
    g.params.forEach((p, i) => {
      g.slots.forEach((_, s) => (feeds[g.slotInput(i, s)] = { data: this.#cur.slots[i]![s]!, dims: p.dims }));
      outputs.push(g.paramOutput(i));
      into[g.paramOutput(i)] = { data: this.#next.params[i]!, dims: p.dims };
      g.slots.forEach((_, s) => {
        outputs.push(g.slotOutput(i, s));
        into[g.slotOutput(i, s)] = { data: this.#next.slots[i]![s]!, dims: p.dims };
      });
    });
    for (const h of g.hyper) feeds[h] = { data: Float32Array.of(hyper[h]), dims: [1] };
    const out = await this.#backward.runMany(feeds, outputs, into);
    // The run filled #next (or returned fresh buffers, which then become the state).
    const done: State = { params: g.params.map((_, i) => out[g.paramOutput(i)]!), slots: g.params.map((_, i) => g.slots.map((__, s) => out[g.slotOutput(i, s)]!)) };
    this.#next = this.#cur;
    this.#cur = done;
    return { terms, logits };
  }

  async predict(x: Float32Array, rows: number): Promise<Float32Array> {
    const feeds: Record<string, { data: Float32Array; dims: readonly number[] }> = { [STUDENT_INPUT]: { data: x.subarray(0, rows * this.inputSize), dims: [rows, this.inputSize] } };
    this.#paramFeeds(feeds);
    return (await this.#forward.runMany(feeds, [STUDENT_LOGITS]))[STUDENT_LOGITS]!;
  }

  /** The node that makes the logits, if it is a Gemm whose weight and bias are parameters. */
  #logitLayer(): { weight: number; bias: number } {
    const node = this.#student.nodes.find((n) => n.outputs.includes(STUDENT_LOGITS));
    const index = (name: string | undefined): number => this.#graphs.params.findIndex((p) => p.name === name);
    if (node?.op !== 'Gemm' || index(node.inputs[1]) < 0 || index(node.inputs[2]) < 0) {
      throw new Error(`the student's logits come from ${node === undefined ? 'no node' : `a ${node.op} node`}; temperature scaling needs a final Gemm with a weight and a bias`);
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
      const p = this.#cur.params[i]!;
      for (let k = 0; k < p.length; k++) p[k]! *= factor;
    }
  }

  async saveCheckpoint(dir: string): Promise<void> {
    await mkdir(dir, { recursive: true });
    const g = this.#graphs;
    const tensors: Array<{ name: string; dims: readonly number[]; offset: number; length: number }> = [];
    const chunks: Buffer[] = [];
    let offset = 0;
    const add = (name: string, dims: readonly number[], data: Float32Array): void => {
      tensors.push({ name, dims, offset, length: data.length });
      chunks.push(Buffer.from(data.buffer, data.byteOffset, data.byteLength));
      offset += data.byteLength;
    };
    g.params.forEach((p, i) => {
      add(p.name, p.dims, this.#cur.params[i]!);
      g.slots.forEach((s, k) => add(`${p.name}::${s}`, p.dims, this.#cur.slots[i]![k]!));
    });
    await writeFile(join(dir, 'weights.bin'), Buffer.concat(chunks));
    // Adam's slots are the scaled moments m/(1−β₁) and v/(1−β₂) (train-graphs.ts).
    await writeFile(join(dir, 'state.json'), JSON.stringify({ engine: 'ort', step: this.#step, optimizer: this.#optimizer.kind, slots: this.#graphs.slots, tensors }));
  }

  async loadCheckpoint(dir: string): Promise<void> {
    let state: { engine: string; step: number; optimizer: string; tensors: Array<{ name: string; offset: number; length: number }> };
    try {
      state = JSON.parse(await readFile(join(dir, 'state.json'), 'utf8'));
    } catch {
      throw new Error(`${dir}: not a checkpoint of the ort engine (no state.json); resume with the engine that wrote it`);
    }
    if (state.optimizer !== this.#optimizer.kind) throw new Error(`${dir}: checkpoint has ${state.optimizer} optimizer state, the recipe uses ${this.#optimizer.kind}`);
    const bin = await readFile(join(dir, 'weights.bin'));
    const byName = new Map(state.tensors.map((t) => [t.name, t]));
    const read = (name: string, into: Float32Array): void => {
      const t = byName.get(name);
      if (t === undefined || t.length !== into.length) throw new Error(`${dir}: checkpoint has no tensor ${name} of ${into.length} values (a different student?)`);
      into.set(new Float32Array(bin.buffer.slice(bin.byteOffset + t.offset, bin.byteOffset + t.offset + t.length * 4)));
    };
    this.#graphs.params.forEach((p, i) => {
      read(p.name, this.#cur.params[i]!);
      this.#graphs.slots.forEach((s, k) => read(`${p.name}::${s}`, this.#cur.slots[i]![k]!));
    });
    this.#step = state.step;
  }

  async saveModel(): Promise<void> {
    // The ONNX export is the model.
  }

  exportOnnx(classes: readonly string[]): Uint8Array {
    const g = new Graph('distillate-student', this.#student.opset);
    const index = new Map(this.#graphs.params.map((p, i) => [p.name, i]));
    for (const v of this.#student.inputs) g.input(v.name, v.dims, v.type);
    for (const init of this.#student.initializers.values()) {
      const i = index.get(init.name);
      g.initializer(init.name, i === undefined ? init.data : this.#cur.params[i]!.slice(), init.dims);
    }
    for (const n of this.#student.nodes) g.add(n.op, n.inputs, { ...n.attrs }, n.outputs);
    for (const v of this.#student.outputs) g.output(v.name, v.dims, v.type);
    g.metadata.set('distillate.classes', JSON.stringify(classes));
    return g.toBytes();
  }

  async latencyMs(runs = 50): Promise<number> {
    const session = await OrtSession.create(this.exportOnnx([]), { provider: 'cpu' });
    try {
      const x = new Float32Array(this.inputSize);
      for (let i = 0; i < 5; i++) await session.run(STUDENT_INPUT, x, [1, this.inputSize], STUDENT_LOGITS);
      const t0 = performance.now();
      for (let i = 0; i < runs; i++) await session.run(STUDENT_INPUT, x, [1, this.inputSize], STUDENT_LOGITS);
      return (performance.now() - t0) / runs;
    } finally {
      await session.release();
    }
  }

  async release(): Promise<void> {
    await this.#forward.release();
    await this.#backward.release();
  }
}
