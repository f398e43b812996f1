/**
 * student.onnx: the engine's ONNX model, written and then run in a fresh onnxruntime session on
 * real samples against the engine's own logits, to the engine's `exportTolerance`: 1e-5 for the
 * ORT engine, whose graph is the model itself (1e-4 with BatchNorm, which onnxruntime folds
 * into the convolutions of the export); 1e-4 for the TF.js engine's conversion. The tolerance is
 * relative to logits larger than 1 (float32 keeps about 7 digits: a logit of 30 is only known to
 * ~2e-6, and onnxruntime packs constant weights differently from fed ones).
 */
import { writeFile } from 'node:fs/promises';
import type { DatasetBatch, DatasetReader } from '@distillate/shared';
import { OrtSession } from '@distillate/shared/onnx';
import type { Predict } from './evaluate.js';
import { TrainingError } from './errors.js';

export interface ExportCheck {
  readonly path: string;
  readonly maxAbsDiff: number;
  /** max |Δ| / max(1, |logit|) over the checked logits: what the tolerance bounds. */
  readonly maxRelDiff: number;
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
    let maxRelDiff = 0;
    for (let i = 0; i < want.length; i++) {
      const d = Math.abs(got[i]! - want[i]!);
      maxAbsDiff = Math.max(maxAbsDiff, d);
      maxRelDiff = Math.max(maxRelDiff, d / Math.max(1, Math.abs(want[i]!)));
    }
    if (!(maxRelDiff <= tolerance))
      throw new TrainingError(`student.onnx disagrees with the engine that trained it: max |Δ| / max(1, |logit|) = ${maxRelDiff} > ${tolerance}`);
    return { path, maxAbsDiff, maxRelDiff, tolerance };
  } finally {
    await session.release();
  }
}
