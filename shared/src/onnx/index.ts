/**
 * `@distillate/shared/onnx`: what both the server and the trainer need to run ONNX — the graph
 * builder, the one onnxruntime-node session wrapper, and teacher loading/preprocessing. The main
 * `@distillate/shared` entry stays free of any engine.
 */
export {
  OrtSession,
  softwareOnlyWebGpu,
  defaultIntraOpThreads,
  ProviderUnavailableError,
  ModelLoadError,
  PROVIDER_PREFERENCE,
  type ExecutionProvider,
  type TensorInfo,
  type OrtSessionOptions,
  type FeedArray,
} from './ort-session.js';
export { Teacher, TeacherRegistry, TeacherSidecarSchema, type TeacherSidecar, type TeacherInfo, type TeacherOptions } from './teachers.js';
export { datasetPreprocessor, normalizer, type Preprocessor } from './preprocess.js';
export { TeacherError, type TeacherErrorKind } from './errors.js';
export { OnnxModelBuilder, type Dim, type AttributeValue } from './builder.js';
export { onnxParameterCount } from './inspect.js';
export { listTensors, withOutputs, type TeacherTensor } from './tensors.js';
export { Graph, GraphFormatError, type GraphNode, type GraphValue, type Initializer, type InitializerData } from './graph.js';
