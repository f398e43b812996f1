export {
  kdLoss,
  dkdLoss,
  nkdLoss,
  distLoss,
  lsKdLoss,
  topKKdLoss,
  multiTeacherLoss,
  crossEntropyLoss,
  distillLossEager,
  distillLoss,
  distillMethods,
  defineLoss,
  tfjsOps,
  onnxOps,
  METHOD_NAMES,
  type TopKTeacher,
  type Ops,
  type Rows,
  type Feed,
  type Dim,
  type LossTerms,
  type LossMethod,
  type DistillInputs,
  type MethodName,
} from './losses/index.js';
export { selectBackend, readFloats, BackendUnavailableError, BACKEND_PREFERENCE, type BackendName, type BackendChoice } from './backend.js';
export { train, TrainingError, type TrainOptions, type RunResult } from './train.js';
export { exportAndCheck, exportStudent, studentSidecar, sidecarPath, type ExportCheck } from './export-check.js';
export {
  openEngine,
  forcedProvider,
  flatBatch,
  flatPredict,
  LOGITS,
  type StudentEngine,
  type EngineName,
  type BatchLoss,
  type StepResult,
  type StudentBatch,
  type TensorSpec,
  type TensorData,
} from './engine/index.js';
export type { TeacherPlan } from './teacher-plan.js';
export { OrtEngine } from './engine/ort.js';
export { TfjsEngine } from './engine/tfjs.js';
export { batchLoss, type BatchLossSettings } from './batch-loss.js';
export {
  RecipeSchema,
  DistillSchema,
  StudentSchema,
  parseRecipe,
  loadRecipe,
  applyOverrides,
  RecipeError,
  type Recipe,
  type RecipeInput,
  type Distill,
  type StudentSpec,
} from './recipe.js';
export { buildStudent, singleSampleLatencyMs } from './students.js';
export { exportOnnx, OnnxExportError } from './export-onnx.js';
export { evaluate, collectLogits, type Evaluation, type ReliabilityBin, type Predict } from './evaluate.js';
export { BatchPool, epochBatches, prefetch, type TrainBatch, type SourceSpec, type BatchLayout } from './data.js';
export { saveLayersModel, loadLayersModel, predictLogits } from './model-io.js';
export { runPredictor, predictRunLogits } from './run-student.js';
export { fitTemperature, scaledNll, type TemperatureFit } from './calibration.js';
export { renderReport, type EpochMetrics } from './report.js';
export { readRun, recipeDiff, renderComparison, summarize, type RunRecord } from './compare.js';
export { buildProgram, main } from './cli.js';
export { progressCallbacks, formatEpoch } from './progress.js';
export { resolveCacheDir, CacheResolutionError, type CacheRef } from './cache-ref.js';
export { trainLanguageModel, evaluateLm, type LmRunResult, type LmEpochMetrics, type LmEvaluation } from './lm/train-lm.js';
export { transformerStudent, TOKEN_INPUT, type TransformerSpec } from './lm/transformer.js';
export { loadLmStudent } from './lm/onnx-lm.js';
export { generate, pickToken, type GenerateOptions } from './lm/generate.js';
