/**
 * student.onnx: the engine's ONNX model, written and then run in a fresh onnxruntime session on
 * real samples against the engine's own logits, to the engine's `exportTolerance`: 1e-5 for the
 * ORT engine, whose graph is the model itself (1e-4 with BatchNorm, which onnxruntime folds
 * into the convolutions of the export); 1e-4 for the TF.js engine's conversion. The tolerance is
 * relative to logits larger than 1 (float32 keeps about 7 digits: a logit of 30 is only known to
 * ~2e-6, and onnxruntime packs constant weights differently from fed ones).
 */
import { writeFile } from 'node:fs/promises';
import { writeFileAtomic, type DatasetBatch, type DatasetReader } from '@distillate/shared';
import { OrtSession, type TeacherSidecar } from '@distillate/shared/onnx';
import { LOGITS, type StudentEngine } from './engine/engine.js';
import type { Predict } from './evaluate.js';
import { TrainingError } from './errors.js';

export interface ExportCheck {
  readonly path: string;
  readonly maxAbsDiff: number;
  /** max |Δ| / max(1, |logit|) over the checked logits: what the tolerance bounds. */
  readonly maxRelDiff: number;
  readonly tolerance: number;
}

/** The sidecar of an exported student: what serving it as a teacher needs, and every input and output with its dims. */
export function studentSidecar(engine: Pick<StudentEngine, 'inputs' | 'outputs'>, classes: readonly string[]): TeacherSidecar {
  return {
    classes: [...classes],
    input: engine.inputs[0]!.name,
    logitsOutput: LOGITS,
    tensors: {
      inputs: engine.inputs.map((t) => ({ name: t.name, dtype: t.dtype, dims: [...t.dims] })),
      outputs: engine.outputs.map((t) => ({ name: t.name, dtype: t.dtype, dims: [...t.dims] })),
    },
  };
}

/** `path.onnx` → `path.json`, the sidecar the teacher registry reads. */
export const sidecarPath = (onnxPath: string): string => onnxPath.replace(/\.onnx$/, '') + '.json';

/**
 * Write the engine's student as `path` (with its inputs, outputs and classes in the model's
 * metadata and in the sidecar next to it), then check it against the engine as exportAndCheck does.
 */
export async function exportStudent(
  engine: StudentEngine,
  classes: readonly string[],
  predict: Predict,
  path: string,
  data: DatasetReader,
): Promise<ExportCheck> {
  const bytes = engine.exportOnnx({ 'distillate.classes': JSON.stringify(classes) });
  await writeFileAtomic(sidecarPath(path), JSON.stringify(studentSidecar(engine, classes), null, 2));
  return exportAndCheck(bytes, predict, path, data, engine.exportTolerance, engine.inputs[0]!.name);
}

export async function exportAndCheck(
  bytes: Uint8Array,
  predict: Predict,
  path: string,
  data: DatasetReader,
  tolerance: number,
  inputName = 'input',
): Promise<ExportCheck> {
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
    const got = (await session.run(inputName, x, [n, D], LOGITS)).data;
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
