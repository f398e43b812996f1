/**
 * Save and load TF.js LayersModels as model.json + weights.bin with plain fs, so that the
 * wasm and cpu backends (which have no file:// handler without tfjs-node) can do it too.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';

export async function saveLayersModel(model: tf.LayersModel, dir: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  await model.save(
    tf.io.withSaveHandler(async (artifacts) => {
      const weightData = tf.io.CompositeArrayBuffer.join(artifacts.weightData as ArrayBuffer | ArrayBuffer[]);
      const modelJson = {
        modelTopology: artifacts.modelTopology,
        format: 'layers-model',
        generatedBy: 'distillate',
        convertedBy: null,
        weightsManifest: [{ paths: ['weights.bin'], weights: artifacts.weightSpecs }],
      };
      await writeFile(join(dir, 'weights.bin'), new Uint8Array(weightData));
      await writeFile(join(dir, 'model.json'), JSON.stringify(modelJson));
      return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
    }),
  );
}

export async function loadLayersModel(dir: string): Promise<tf.LayersModel> {
  const path = dir.endsWith('model.json') ? dir : join(dir, 'model.json');
  const base = path.slice(0, -'model.json'.length);
  let json: { modelTopology: object; weightsManifest: Array<{ paths: string[]; weights: tf.io.WeightsManifestEntry[] }> };
  try {
    json = JSON.parse(await readFile(path, 'utf8'));
  } catch (err) {
    throw new Error(`${path}: cannot read a TF.js model (${(err as Error).message.split('\n')[0]})`);
  }
  const buffers: Uint8Array[] = [];
  const specs: tf.io.WeightsManifestEntry[] = [];
  for (const group of json.weightsManifest) {
    for (const p of group.paths) buffers.push(await readFile(join(base, p)));
    specs.push(...group.weights);
  }
  const total = buffers.reduce((a, b) => a + b.length, 0);
  const weightData = new Uint8Array(total);
  let off = 0;
  for (const b of buffers) {
    weightData.set(b, off);
    off += b.length;
  }
  return tf.loadLayersModel(tf.io.fromMemory({ modelTopology: json.modelTopology, weightSpecs: specs, weightData: weightData.buffer }));
}

/** Logits of a saved model for `rows` flat input rows (already scaled as the model expects). */
export async function predictLogits(dir: string, inputs: Float32Array, rows: number): Promise<{ logits: Float32Array; classes: number }> {
  const model = await loadLayersModel(dir);
  try {
    const shape = model.inputs[0]!.shape.slice(1).map((d) => d ?? 1);
    const x = tf.tensor(inputs, [rows, ...shape]);
    const y = model.predict(x) as tf.Tensor2D;
    const logits = (await y.data()) as Float32Array;
    const classes = y.shape[1];
    tf.dispose([x, y]);
    return { logits, classes };
  } finally {
    model.dispose();
  }
}
