/**
 * A bare teacher loop for bench-distributed's ceiling row: `rows` rows of a dataset through one
 * ORT session on 1 thread, batch 256, no cache. Prints `{"rowsPerSecond": …}`.
 */
import { DatasetReader } from '@distillate/shared';
import { TeacherRegistry, datasetPreprocessor } from '@distillate/shared/onnx';

const [models, teacherName, datasetPath, rowsArg] = process.argv.slice(2) as [string, string, string, string];
const registry = await TeacherRegistry.open(models, { provider: 'cpu', intraOpThreads: 1 });
const teacher = registry.get(teacherName);
const { info } = await teacher.load();
const dataset = await DatasetReader.open(datasetPath);
const pre = datasetPreprocessor(dataset.info, info, teacher.sidecar);
const rows = Math.min(Number(rowsArg), await dataset.countRows());
const batch = await dataset.readRows(0, rows);
const D = pre.sampleSize;
const pass = async () => {
  for (let r = 0; r < rows; r += 256) {
    const n = Math.min(256, rows - r);
    await teacher.logits(pre.apply(batch.inputs.subarray(r * D, (r + n) * D), n), n);
  }
};
await pass(); // warm-up
// Start together: wait for the go byte on stdin.
process.stdout.write('ready\n');
await new Promise((r) => process.stdin.once('data', r));
const t0 = performance.now();
await pass();
console.log(JSON.stringify({ rowsPerSecond: rows / ((performance.now() - t0) / 1000) }));
await registry.releaseAll();
process.exit(0);
