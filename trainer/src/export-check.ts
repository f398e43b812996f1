/**
 * student.onnx: the engine's ONNX model, written and then run in a fresh onnxruntime session on
 * real samples against the engine's own logits. The ORT engine's graph is the model itself, so
 * it must agree to 1e-5; the TF.js engine's is a conversion, checked to 1e-4.
 */
import { writeFile } from 'node:fs/promises';
import type { DatasetBatch, DatasetReader } from '@distillate/shared';
import { OrtSession } from '@distillate/shared/onnx';
import type { Predict } from './evaluate.js';
import { TrainingError } from './errors.js';

export interface ExportCheck {
  readonly path: string;
  readonly maxAbsDiff: number;
  readonly tolerance: number;
}

export async function exportAndCheck(bytes: Uint8Array, predict: Predict, path: string, data: DatasetReader, tolerance: number): Promise<ExportCheck> {
  await writeFile(path, bytes);
  let first: DatasetBatch | undefined;
  for await (const b of data) {
    first = b; // the loop's exit closes the reader's file handle
    break;
  }
  if (first === undefined) throw new TrainingError('cannot check the ONNX export: empty dataset');
  const D = data.inputSize;
  const n = Math.min(64, first.rows);
  const { scale, offset } = data.info.scaling;
  const x = new Float32Array(n * D);
  for (let i = 0; i < x.length; i++) x[i] = first.inputs[i]! * scale + offset;
  const want = await predict(x, n);
  const session = await OrtSession.create(bytes, { provider: 'cpu' });
  try {
    const got = (await session.run('input', x, [n, D], 'logits')).data;
    let maxAbsDiff = 0;
    for (let i = 0; i < want.length; i++) maxAbsDiff = Math.max(maxAbsDiff, Math.abs(got[i]! - want[i]!));
    if (!(maxAbsDiff <= tolerance)) throw new TrainingError(`student.onnx disagrees with the engine that trained it: max |Δ| = ${maxAbsDiff} > ${tolerance}`);
    return { path, maxAbsDiff, tolerance };
  } finally {
    await session.release();
  }
}
