/**
 * The TF.js engine: a LayersModel trained with tf.variableGrads and a tf.train optimizer, on
 * whichever backend backend.ts chose (tfjs-node-gpu, tfjs-node, webgpu, wasm, cpu). Kept for
 * users of tfjs-node-gpu; the ORT engine is the default.
 */
import { join } from 'node:path';
import { readFile, writeFile } from 'node:fs/promises';
import * as tf from '@tensorflow/tfjs';
import { exportOnnx } from '../export-onnx.js';
import { loadLayersModel, saveLayersModel } from '../model-io.js';
import type { Recipe } from '../recipe.js';
import { buildStudent, logitLayer, scaleLogits, singleSampleLatencyMs } from '../students.js';
import { tfjsOps } from '../losses/index.js';
import { LOGITS, type BatchLoss, type StepResult, type StudentBatch, type StudentEngine, type TensorSpec } from './engine.js';

/**
 * tf.train.momentum (an SGDOptimizer) multiplies by a scalar −lr made when the rate is set:
 * assigning `.learningRate` alone leaves it at its first value, so a schedule must go through
 * setLearningRate. Adam reads `.learningRate` on every step.
 */
export function setLearningRate(optimizer: tf.Optimizer, lr: number): void {
  const o = optimizer as unknown as { learningRate: number; setLearningRate?: (lr: number) => void };
  if (typeof o.setLearningRate === 'function') o.setLearningRate(lr);
  o.learningRate = lr;
}

export class TfjsEngine implements StudentEngine {
  readonly name = 'tfjs';
  readonly device: string;
  readonly classes: number;
  readonly inputs: readonly TensorSpec[];
  readonly outputs: readonly TensorSpec[];
  readonly #inputSize: number;
  #model: tf.LayersModel;
  readonly #optimizer: tf.Optimizer;
  readonly #weightDecay: number;

  private constructor(model: tf.LayersModel, optimizer: tf.Optimizer, weightDecay: number, device: string, inputSize: number) {
    this.#model = model;
    this.#optimizer = optimizer;
    this.#weightDecay = weightDecay;
    this.device = device;
    this.#inputSize = inputSize;
    this.classes = model.outputs[0]!.shape.at(-1) as number;
    this.inputs = [{ name: 'input', dtype: 'float32', dims: ['N', inputSize] }];
    this.outputs = [{ name: LOGITS, dtype: 'float32', dims: ['N', this.classes] }];
  }

  static async create(recipe: Readonly<Recipe>, inputShape: readonly number[], classes: number, device: string, resumeFrom?: string): Promise<TfjsEngine> {
    if (recipe.student.kind === 'onnx') throw new Error('student: { onnx } trains on the ort engine only; set engine: ort');
    const model = resumeFrom === undefined ? await buildStudent(recipe.student, inputShape, classes, recipe.seed) : await loadLayersModel(resumeFrom);
    const o = recipe.optimizer;
    const optimizer = o.kind === 'sgd' ? tf.train.momentum(o.lr, o.momentum) : tf.train.adam(o.lr);
    const engine = new TfjsEngine(
      model,
      optimizer,
      o.weightDecay,
      device,
      inputShape.reduce((a, b) => a * b, 1),
    );
    if (resumeFrom !== undefined) await engine.#loadOptimizerState(resumeFrom);
    return engine;
  }

  get parameters(): number {
    return this.#model.countParams();
  }

  get model(): tf.LayersModel {
    return this.#model;
  }

  /**
   * The one input this engine takes: flat float32 samples [N, D]. Anything else (token ids,
   * several inputs) is a student only the ORT engine trains.
   */
  #x(batch: StudentBatch): tf.Tensor2D {
    const names = Object.keys(batch.inputs);
    const t = batch.inputs['input'];
    if (names.length !== 1 || t === undefined || !(t.data instanceof Float32Array) || t.dims.length !== 2 || t.dims[1] !== this.#inputSize) {
      const got = names.map((n) => `${n} [${batch.inputs[n]!.dims.join(', ')}] ${batch.inputs[n]!.data.constructor.name}`).join(', ');
      throw new Error(`the tfjs engine trains classifiers on one float32 input [N, ${this.#inputSize}]; this batch has ${got}: set engine: ort`);
    }
    return tf.tensor2d(t.data.subarray(0, batch.rows * this.#inputSize), [batch.rows, this.#inputSize]);
  }

  async step(batch: StudentBatch, loss: BatchLoss, lr: number): Promise<StepResult> {
    const extra = loss.outputs.filter((o) => o !== LOGITS);
    if (extra.length > 0)
      throw new Error(`the loss reads ${extra.join(', ')} besides the logits; feature hints train on the ort engine only (set engine: ort)`);
    setLearningRate(this.#optimizer, lr);
    const xs = this.#x(batch);
    const trainable = this.#model.trainableWeights.map((w) => (w as unknown as { val: tf.Variable }).val);
    const inputs = Object.fromEntries(Object.entries(loss.feeds()).map(([name, f]) => [name, tf.tensor(f.data, [...f.dims])]));
    let terms: Record<string, tf.Tensor> = {};
    let logitsOut: tf.Tensor2D | undefined;
    const { value, grads } = tf.variableGrads(() => {
      const logits = this.#model.apply(xs, { training: true }) as tf.Tensor2D;
      logitsOut = tf.keep(logits.clone());
      const r = loss.compute(tfjsOps, { logits }, inputs);
      terms = Object.fromEntries(Object.entries(r.terms).map(([k, v]) => [k, tf.keep(v.clone())]));
      return r.total as tf.Scalar;
    }, trainable);
    this.#optimizer.applyGradients(grads);
    // Decoupled weight decay (Loshchilov & Hutter, AdamW) on weight matrices, after the step, for every optimizer kind.
    if (this.#weightDecay > 0) {
      tf.tidy(() => {
        for (const v of trainable) if (v.shape.length > 1) v.assign(tf.mul(v, 1 - lr * this.#weightDecay));
      });
    }
    const values = await Promise.all(Object.entries(terms).map(async ([k, v]) => [k, (await v.data())[0]!] as const));
    const logits = (await logitsOut!.data()) as Float32Array;
    tf.dispose([xs, value, logitsOut!, ...Object.values(grads), ...Object.values(terms), ...Object.values(inputs)]);
    return { terms: Object.fromEntries(values), outputs: { [LOGITS]: logits } };
  }

  async steps(batches: ReadonlyArray<{ readonly batch: StudentBatch; readonly loss: BatchLoss }>, lr: number): Promise<StepResult[]> {
    const out: StepResult[] = [];
    for (const b of batches) out.push(await this.step(b.batch, b.loss, lr));
    return out;
  }

  async predict(batch: StudentBatch): Promise<Float32Array> {
    const y = tf.tidy(() => {
      const x = this.#x(batch);
      return this.#model.predict(x) as tf.Tensor2D;
    });
    const out = (await y.data()) as Float32Array;
    y.dispose();
    return out;
  }

  checkLogitScaling(): void {
    logitLayer(this.#model);
  }

  scaleLogits(factor: number): void {
    scaleLogits(this.#model, factor);
  }

  async saveCheckpoint(dir: string): Promise<void> {
    await saveLayersModel(this.#model, dir);
    const weights = await this.#optimizer.getWeights();
    const specs: { name: string; shape: number[]; dtype: string; bytes: number }[] = [];
    const chunks: Uint8Array[] = [];
    for (const w of weights) {
      const data = await w.tensor.data();
      const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength).slice();
      specs.push({ name: w.name, shape: w.tensor.shape, dtype: w.tensor.dtype, bytes: bytes.length });
      chunks.push(bytes);
      if (w.name === 'iter') w.tensor.dispose(); // a fresh scalar; the rest are the optimizer's own variables
    }
    await writeFile(join(dir, 'optimizer.bin'), Buffer.concat(chunks));
    await writeFile(join(dir, 'optimizer.json'), JSON.stringify(specs));
  }

  async loadCheckpoint(dir: string): Promise<void> {
    this.#model.dispose();
    this.#model = await loadLayersModel(dir);
    await this.#loadOptimizerState(dir);
  }

  async #loadOptimizerState(dir: string): Promise<void> {
    let specs: { name: string; shape: number[]; dtype: 'float32' | 'int32'; bytes: number }[];
    let bin: Buffer;
    try {
      specs = JSON.parse(await readFile(join(dir, 'optimizer.json'), 'utf8'));
      bin = await readFile(join(dir, 'optimizer.bin'));
    } catch {
      return; // a checkpoint from before optimizer state was saved: the moments restart
    }
    let off = 0;
    const named = specs.map((s) => {
      const raw = bin.subarray(off, off + s.bytes);
      off += s.bytes;
      const copy = new Uint8Array(raw).buffer;
      return { name: s.name, tensor: tf.tensor(s.dtype === 'int32' ? new Int32Array(copy) : new Float32Array(copy), s.shape, s.dtype) };
    });
    await this.#optimizer.setWeights(named);
    for (const n of named) n.tensor.dispose(); // setWeights copied them into variables
  }

  async saveModel(runDir: string): Promise<void> {
    await saveLayersModel(this.#model, join(runDir, 'model'));
  }

  /** The export is a conversion of the TF.js model: 1e-4. */
  readonly exportTolerance = 1e-4;

  exportOnnx(metadata: Readonly<Record<string, string>>): Uint8Array {
    return exportOnnx(this.#model, { metadata });
  }

  latencyMs(): Promise<number> {
    return singleSampleLatencyMs(this.#model, this.#inputSize);
  }

  async release(): Promise<void> {
    this.#model.dispose();
    this.#optimizer.dispose();
  }
}
