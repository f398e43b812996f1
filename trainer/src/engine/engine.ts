/**
 * The seam between the training loop and what runs the student. The loop knows this interface,
 * never an engine: it hands over a batch and its loss (written once against the losses' ops,
 * which each engine evaluates its own way), and gets the loss terms and logits back. The recipe chooses the engine; the run records which one ran and on
 * what (execution provider or TF.js backend).
 */
import type { BatchLoss } from '../losses/index.js';

export type EngineName = 'ort' | 'tfjs';
export type { BatchLoss };

export interface StepResult {
  readonly terms: Record<string, number>;
  /** The logits the step computed (before its update), [rows, classes]. */
  readonly logits: Float32Array;
}

export interface StudentEngine {
  readonly name: EngineName;
  /** What actually runs it: an ORT execution provider, or a TF.js backend. */
  readonly device: string;
  readonly classes: number;
  readonly inputSize: number;
  readonly parameters: number;
  /** One optimizer step on `rows` flat samples at learning rate `lr`. */
  step(x: Float32Array, rows: number, loss: BatchLoss, lr: number): Promise<StepResult>;
  /**
   * Several steps in order, exactly as that many step() calls (the ORT engine runs them in one
   * session run). The batches share their row count and loss shape (`loss.key`).
   */
  steps(batches: ReadonlyArray<{ readonly x: Float32Array; readonly rows: number; readonly loss: BatchLoss }>, lr: number): Promise<StepResult[]>;
  /** Logits [rows, classes] of flat samples. */
  predict(x: Float32Array, rows: number): Promise<Float32Array>;
  /** Throws (with the reason) when the logits cannot be rescaled by the last layer. */
  checkLogitScaling(): void;
  /** Multiply the logits by `factor` by rescaling the last layer (post-hoc temperature scaling). */
  scaleLogits(factor: number): void;
  /** Weights and optimizer state, for --resume. */
  saveCheckpoint(dir: string): Promise<void>;
  loadCheckpoint(dir: string): Promise<void>;
  /** Write the engine's own model format, if it has one besides ONNX (TF.js: model/). */
  saveModel(runDir: string): Promise<void>;
  /** The student as an ONNX model taking [N, D] on `input` and giving `logits`. */
  exportOnnx(classes: readonly string[]): Uint8Array;
  /** How closely student.onnx must reproduce predict() (max |Δ| / max(1, |logit|); export-check.ts). */
  readonly exportTolerance: number;
  /** Mean latency (ms) of one single-sample prediction. */
  latencyMs(): Promise<number>;
  release(): Promise<void>;
}
