export { startServer, createServices, type RunningServer, type Services } from './server.js';
export { resolveConfig, ServerConfigSchema, type ServerConfig, type ServerConfigInput } from './config.js';
export { createApp, ARROW_STREAM, type AppDeps } from './app.js';
export { JobManager, JobRequestSchema, type JobRecord, type JobRequest, type JobRequestInput, type JobState } from './jobs/index.js';
export { precomputeLogits, type PrecomputeOptions, type PrecomputeResult } from './jobs/index.js';
export { DynamicBatcher, type BatcherOptions } from './batcher.js';
export { AppError } from './errors.js';
export { buildProgram, main } from './cli.js';
export {
  importImageFolder,
  reportPath,
  nameText,
  ImportError,
  type ImageFolderImport,
  type ImportReport,
  type SkippedFile,
  type Fit,
} from './import/image-folder.js';
export { decode as decodeImage, decodeFast, decodeBySharp, decoderOf, type DecodeOptions, type Decoded } from './import/image-decode.js';
export { writeSplits, parseSplit, type SplitRequest } from './import/splits.js';
export { exportLabels, ExportError, type ExportLabelsOptions, type LabelFormat } from './export-labels.js';
export { importTable, type TableImport, type TableImportReport } from './import/table.js';
export { importText, type TextImport, type TextImportPart, type TextImportReport } from './import/text.js';
