export { JobManager, type JobEvent, type JobManagerOptions } from './manager.js';
export { JobRequestSchema, type JobRequest, type JobRequestInput } from './request.js';
export { JobRecordSchema, JobStore, type JobRecord, type JobState } from './store.js';
export { precomputeLogits, PrecomputeInterrupted, type PrecomputeOptions, type PrecomputeResult } from './precompute.js';
export { selectPseudoLabelled, type Selection } from './label-selection.js';
