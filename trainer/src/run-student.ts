/**
 * A finished run's student, for prediction outside training: the TF.js model of a tfjs-engine
 * run (model/), else its student.onnx in onnxruntime.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { OrtSession } from '@distillate/shared/onnx';
import { selectBackend, type BackendName } from './backend.js';
import type { Predict } from './evaluate.js';
import { loadLayersModel } from './model-io.js';

export async function runPredictor(run: string, backend?: BackendName): Promise<{ predict: Predict; release: () => Promise<void>; kind: 'tfjs' | 'onnx' }> {
  if (existsSync(join(run, 'model', 'model.json'))) {
    await selectBackend(backend);
    const model = await loadLayersModel(join(run, 'model'));
    const D = (model.inputs[0]!.shape[1] as number) ?? 0;
    const predict: Predict = async (x, rows) => {
      const y = tf.tidy(() => model.predict(tf.tensor2d(x.subarray(0, rows * D), [rows, D])) as tf.Tensor);
      const out = (await y.data()) as Float32Array;
      y.dispose();
      return out;
    };
    return { predict, release: async () => void model.dispose(), kind: 'tfjs' };
  }
  const onnx = join(run, 'student.onnx');
  if (!existsSync(onnx)) throw new Error(`${run}: neither model/model.json nor student.onnx (is it a run directory?)`);
  const session = await OrtSession.create(onnx, { provider: 'cpu' });
  const D = Number(session.inputs[0]!.shape[1]);
  return {
    predict: async (x, rows) => {
      if (!(x instanceof Float32Array)) throw new Error("internal: a finished run's student takes scaled inputs");
      return (await session.run('input', x.subarray(0, rows * D), [rows, D], 'logits')).data;
    },
    release: () => session.release(),
    kind: 'onnx',
  };
}

/** Logits of a run's student for `rows` flat rows (scaled as the dataset says). */
export async function predictRunLogits(run: string, x: Float32Array, rows: number): Promise<Float32Array> {
  const student = await runPredictor(run);
  try {
    return (await student.predict(x, rows)).slice();
  } finally {
    await student.release();
  }
}
