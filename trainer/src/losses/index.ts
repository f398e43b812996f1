export { kdLoss } from './kd.js';
export { dkdLoss } from './dkd.js';
export { nkdLoss } from './nkd.js';
export { distLoss } from './dist.js';
export { lsKdLoss, standardizeLogits } from './ls-kd.js';
export { topKKdLoss, type TopKTeacher } from './topk-kd.js';
export { multiTeacherLoss, type SubsetTeacher } from './multi-teacher.js';
export { crossEntropyLoss } from './cross-entropy.js';
