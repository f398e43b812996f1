/**
 * The seam between the training loop and what runs the student. The loop knows this interface,
 * never an engine: it hands over a batch of named input tensors and the batch's loss (written
 * once against the losses' ops, which each engine evaluates its own way, reading the student's
 * outputs by name), and gets the loss terms and those outputs back. The recipe chooses the
 * engine; the run records which one ran and on what (execution provider or TF.js backend).
 *
 * Tensors are named and of any rank: a classifier takes `input` [N, D] and gives `logits`
 * [N, C]; a language model would take int32 token ids [N, L] and give `logits` [N, L, V]; a
 * student with feature hints gives intermediate tensors besides. The ORT engine runs any of
 * these; the TF.js engine keeps classification and refuses the rest in one line.
 */
import type { BatchLoss } from '../losses/index.js';

export type EngineName = 'ort' | 'tfjs';
export type { BatchLoss };

/** Element types a student input may have: float32 values, int32 token ids, uint8 pixels. */
export type TensorDtype = 'float32' | 'int32' | 'uint8';
export type TensorArray = Float32Array | Int32Array | Uint8Array;

/** A named tensor of the student: its element type and dims, the batch as 'N' (others may be symbolic too). */
export interface TensorSpec {
  readonly name: string;
  readonly dtype: TensorDtype;
  readonly dims: ReadonlyArray<number | string>;
}

/** Host data for one tensor: values (row-major) and dims, the batch first. */
export interface TensorData {
  readonly data: TensorArray;
  readonly dims: readonly number[];
}

/** One batch as the student takes it: every input by name. */
export interface StudentBatch {
  readonly rows: number;
  readonly inputs: Readonly<Record<string, TensorData>>;
}

/** The output every student has: what predict() returns and export checks compare. */
export const LOGITS = 'logits';

export interface StepResult {
  readonly terms: Record<string, number>;
  /**
   * The student outputs the loss read, as the step computed them (before its update); `logits`
   * among them. Empty when the caller asked for none (`StepOptions.outputs: false`).
   */
  readonly outputs: Readonly<Record<string, Float32Array>>;
}

export interface StepOptions {
  /**
   * Whether to hand back the student's outputs (default true). A caller that reads only the
   * loss terms says false: a language model's [N, L, V] logits are then not copied out of the
   * session each step.
   */
  readonly outputs?: boolean;
}

/**
 * A dataset's stored uint8 values and how they scale (x · scale + offset, the dataset's
 * `scaling`). An engine that takes them scales them itself, so that the data path moves bytes,
 * not floats: for the MLP on Fashion-MNIST, scaling and copying float rows in JavaScript was
 * a fifth of an epoch.
 */
export interface StoredInput {
  readonly scale: number;
  readonly offset: number;
}

export interface StudentEngine {
  readonly name: EngineName;
  /**
   * Set when the engine also takes its one input as stored uint8 values with this scaling, in
   * step(), steps() and predict() alike (a batch of float32 values is still taken as the scaled input).
   */
  readonly storedInput?: StoredInput;
  /** What actually runs it: an ORT execution provider, or a TF.js backend. */
  readonly device: string;
  /** The student's inputs, and its outputs (`logits` first; then intermediate tensors it exposes). */
  readonly inputs: readonly TensorSpec[];
  readonly outputs: readonly TensorSpec[];
  /** The size of the logits' last axis: classes, or a vocabulary. */
  readonly classes: number;
  readonly parameters: number;
  /** One optimizer step at learning rate `lr`. */
  step(batch: StudentBatch, loss: BatchLoss, lr: number, options?: StepOptions): Promise<StepResult>;
  /**
   * Several steps in order, exactly as that many step() calls (the ORT engine runs them in one
   * session run). The batches share their row count and loss shape (`loss.key`).
   */
  steps(batches: ReadonlyArray<{ readonly batch: StudentBatch; readonly loss: BatchLoss }>, lr: number, options?: StepOptions): Promise<StepResult[]>;
  /** The logits of a batch, in inference mode. */
  predict(batch: StudentBatch): Promise<Float32Array>;
  /** Throws (with the reason) when the logits cannot be rescaled by the last layer. */
  checkLogitScaling(): void;
  /** Multiply the logits by `factor` by rescaling the last layer (post-hoc temperature scaling). */
  scaleLogits(factor: number): void;
  /** Weights and optimizer state, for --resume. */
  saveCheckpoint(dir: string): Promise<void>;
  loadCheckpoint(dir: string): Promise<void>;
  /** Write the engine's own model format, if it has one besides ONNX (TF.js: model/). */
  saveModel(runDir: string): Promise<void>;
  /** The student as an ONNX model with its own inputs and outputs (the names and dims of `inputs` and `outputs`), with this metadata. */
  exportOnnx(metadata: Readonly<Record<string, string>>): Uint8Array;
  /** How closely student.onnx must reproduce predict() (max |Δ| / max(1, |logit|); export-check.ts). */
  readonly exportTolerance: number;
  /** Mean latency (ms) of one single-sample prediction. */
  latencyMs(): Promise<number>;
  release(): Promise<void>;
}

/** Values per sample of a tensor spec (its dims after the batch; all must be static). */
export function sampleSize(spec: TensorSpec): number {
  return spec.dims.slice(1).reduce<number>((n, d) => {
    if (typeof d !== 'number') throw new Error(`input ${spec.name} has a symbolic dimension ${d} after the batch; give its size`);
    return n * d;
  }, 1);
}

/**
 * A batch for a student with one input, from flat rows (`x` holds at least rows × sample
 * values): the classification datasets' shape, [N, D].
 */
export function flatBatch(engine: Pick<StudentEngine, 'inputs'>, x: TensorArray, rows: number): StudentBatch {
  const [input, ...more] = engine.inputs;
  if (input === undefined || more.length > 0)
    throw new Error(`this student takes ${engine.inputs.map((i) => i.name).join(', ')}; a flat batch feeds exactly one input`);
  const D = sampleSize(input);
  const dims = [rows, ...input.dims.slice(1).map(Number)];
  return { rows, inputs: { [input.name]: { data: x.subarray(0, rows * D), dims } } };
}

/** predict() on flat rows, as the classification code paths (evaluation, calibration, self-distillation) call it. */
export function flatPredict(engine: Pick<StudentEngine, 'inputs' | 'predict'>): (x: Float32Array | Uint8Array, rows: number) => Promise<Float32Array> {
  return (x, rows) => engine.predict(flatBatch(engine, x, rows));
}
