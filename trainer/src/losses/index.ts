export type { Ops, Rows, Feed, Dim, LossTerms, BatchLoss } from './ops.js';
export { tfjsOps } from './ops-tfjs.js';
export { onnxOps } from './ops-onnx.js';
export { defineLoss, type LossMethod, type DistillInputs } from './method.js';
export { distillMethods } from './registry.js';
export {
  DistillSchema,
  HintSchema,
  distillLoss,
  usesLabels,
  temperatureOf,
  METHOD_NAMES,
  type Distill,
  type DistillInput,
  type Hint,
  type MethodName,
} from './distill.js';
export { hintLosses, type HintName } from './hints/registry.js';
export { attentionMap } from './hints/at.js';
export type { HintLoss, HintInputs } from './hints/hint.js';
export { crossEntropy, crossEntropyAt } from './cross-entropy.js';
export { topKBuckets, topKKd, topKTargets, type TopKTargets } from './topk-kd.js';
export { sampledKd, sampledTargets, type SampledFeeds } from './sampled-kd.js';
export { subsetKd, type SubsetTeacher } from './subset-kd.js';
export { standardize } from './ls-kd.js';
export { distillLossEager, kdLoss, dkdLoss, nkdLoss, distLoss, lsKdLoss, crossEntropyLoss, topKKdLoss, multiTeacherLoss, type TopKTeacher } from './eager.js';
