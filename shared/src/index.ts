export { float16Bits, float16Value, encodeFloat16, decodeFloat16 } from './float16.js';
export {
  logSumExp,
  logSoftmax,
  softmax,
  rescaleTemperature,
  assertTemperature,
  topK,
  labelStatistics,
  type FloatArray,
  type TopK,
  type LabelStatistics,
} from './numerics.js';
export {
  DatasetWriter,
  DatasetReader,
  DatasetFormatError,
  parseDatasetSchema,
  DatasetInfoSchema,
  datasetSchema,
  inputSize,
  META,
  DATASET_FORMAT,
  type DatasetInfo,
  type DatasetBatch,
  type Ids,
} from './dataset.js';
export { parseIdx, readIdx, readIdxPair, IdxFormatError, type IdxArray, type IdxImageSet } from './idx.js';
export {
  importFashionMnist,
  importIdxPair,
  FASHION_MNIST_CLASSES,
  FASHION_MNIST_DEBIAN_DIR,
  FASHION_MNIST_FILES,
  type ImportedSplit,
} from './fashion-mnist.js';
export {
  cacheKey,
  CacheManifestSchema,
  CacheProgressSchema,
  StorageSchema,
  TeacherRefSchema,
  ShardSchema,
  CACHE_FORMAT,
  CACHE_FORMAT_VERSION,
  MANIFEST_FILE,
  type CacheManifest,
  type CacheKeyInput,
  type Storage,
  type StorageInput,
  type TeacherRef,
  type Shard,
} from './logit-cache/manifest.js';
export { CacheIntegrityError, CacheMismatchError, CacheNotFoundError } from './logit-cache/errors.js';
export { LogitCacheWriter, CacheExistsError, CacheLockedError, type LogitCacheWriterOptions } from './logit-cache/writer.js';
export { CacheAssembler, ShardConflictError, type CacheAssemblerOptions, type AcceptOutcome } from './logit-cache/assembler.js';
export {
  shardLayout,
  planShards,
  encodeCacheShard,
  ShardEncoder,
  inspectCacheShard,
  countTokens,
  featureBytes,
  type ShardLayout,
  type ShardSpec,
  type ShardEncoding,
  type EncodedShard,
} from './logit-cache/shard-codec.js';
export {
  LogitCacheReader,
  listCaches,
  findCache,
  verifyCache,
  type LogitBatch,
  type DenseLogitBatch,
  type TopKLogitBatch,
  type SampledLogitBatch,
  type LogitCacheReaderOptions,
  type CacheEntry,
  type CacheVerification,
} from './logit-cache/reader.js';
export { alignDatasetWithCaches, alignDatasetWithViewCaches, type AlignedBatch, type AlignOptions, type ViewAlignOptions } from './logit-cache/align.js';
export {
  ViewSpecSchema,
  ViewAugmentSchema,
  ViewError,
  drawView,
  pickView,
  applyView,
  expandViews,
  repeatIds,
  imageGeometry,
  IDENTITY_VIEW,
  type ViewSpec,
  type ViewSpecInput,
  type ViewParams,
  type ImageGeometry,
} from './views.js';
export {
  FeatureSpecSchema,
  StoredFeatureSchema,
  FeatureSpecError,
  resolveFeature,
  poolFeature,
  featureSize,
  type FeatureSpec,
  type FeatureSpecInput,
  type StoredFeature,
} from './features.js';
export { sha256File, writeFileAtomic, removeStaleTempFiles } from './internal/arrow-io.js';
export { PRODUCER } from './version.js';
export { OnnxModelBuilder, type Dim, type AttributeValue } from './onnx/builder.js';
export { onnxParameterCount } from './onnx/inspect.js';
export { writeSyntheticDataset, mulberry32, type SyntheticDatasetOptions } from './synthetic.js';
export { closestNames, runCli, type CliProgram } from './cli.js';
export { headDataset, pickRows, splitLabelled, splitStratified, withoutClass, type WrittenDataset } from './subset.js';
export {
  decodeInputStream,
  encodeLogitsStream,
  encodeDatasetRows,
  decodeDatasetRows,
  encodeTokenRows,
  decodeTokenRows,
  ArrowBodyError,
} from './http-bodies.js';
export {
  acquireFashionMnist,
  verifyFashionMnist,
  fashionMnistCacheDir,
  DatasetUnavailableError,
  DatasetIntegrityError,
  FASHION_MNIST_URL,
  FASHION_MNIST_SHA256,
  type AcquireOptions,
  type AcquiredDataset,
} from './fashion-mnist-source.js';
export { ipcSchemaMetadata } from './internal/arrow-io.js';
export { splitDocuments, type SplitDocument } from './text/documents.js';
export { byteTokenizer, loadHfTokenizer, loadTokenizer, TokenizerError, TokenizerRefSchema, type TextTokenizer, type TokenizerRef } from './text/tokenizer.js';
export {
  TokenDatasetWriter,
  TokenDatasetReader,
  cutBlocks,
  isTokenDataset,
  isTokenSchema,
  parseTokenSchema,
  PAD_TOKEN,
  TOKEN_META,
  type TokenDatasetInfo,
  type TokenBatch,
} from './text/token-dataset.js';
