/**
 * What a student distilled with `union: balanced` is copying: the merged teacher itself (the
 * two half teachers' logits, each rescaled by its fitted factor, concatenated and shifted by the
 * fitted class offsets, as recorded in a run's run.json), scored by its argmax on the test split.
 * A student trained only on its targets is bounded by it in practice; the transfer rows are read
 * against it.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DatasetReader } from '@distillate/shared';
import { TeacherRegistry, datasetPreprocessor } from '@distillate/shared/onnx';
import { ROOT } from './runner.js';

interface UnionBalance {
  readonly classes: readonly string[];
  readonly teacherScales: readonly number[];
  readonly offsets: readonly number[];
}

/** Test accuracy of the balanced union of `teachers` (in the run's order), with the run's fitted factors and offsets. */
export async function unionTeacherAccuracy(runDir: string, teachers: readonly string[]): Promise<number> {
  const balance = (JSON.parse(await readFile(join(runDir, 'run.json'), 'utf8')) as { unionBalance?: UnionBalance }).unionBalance;
  if (balance === undefined) throw new Error(`${runDir}/run.json has no unionBalance (not a union: balanced run)`);
  const test = await DatasetReader.open(join(ROOT, 'data', 'fashion-mnist', 'test.arrow'));
  const registry = await TeacherRegistry.open(join(ROOT, 'models'));
  try {
    const C = balance.classes.length;
    const rows = await test.countRows();
    const merged = new Float32Array(rows * C);
    const labels = new Int32Array(rows);
    const halves = await Promise.all(
      teachers.map(async (name) => {
        const teacher = registry.get(name);
        const info = await teacher.info();
        return { teacher, classes: info.classes, pre: datasetPreprocessor(test.info, info, teacher.sidecar) };
      }),
    );
    const order = halves.flatMap((h) => h.classes);
    if (order.join('\u0000') !== balance.classes.join('\u0000'))
      throw new Error(`the teachers' classes in order [${order.join(', ')}] are not the run's union [${balance.classes.join(', ')}]`);
    let at = 0;
    for await (const b of test) {
      labels.set(b.labels, at);
      let col = 0;
      for (const [t, { teacher, classes, pre }] of halves.entries()) {
        const z = await teacher.logits(pre.apply(b.inputs, b.rows), b.rows);
        const k = classes.length;
        for (let r = 0; r < b.rows; r++)
          for (let c = 0; c < k; c++) merged[(at + r) * C + col + c] = z[r * k + c]! * balance.teacherScales[t]! + balance.offsets[col + c]!;
        col += k;
      }
      at += b.rows;
    }
    let correct = 0;
    for (let r = 0; r < rows; r++) {
      let best = 0;
      for (let c = 1; c < C; c++) if (merged[r * C + c]! > merged[r * C + best]!) best = c;
      if (best === labels[r]) correct++;
    }
    return correct / rows;
  } finally {
    await registry.releaseAll();
  }
}
