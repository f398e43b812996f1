/** Student networks from a recipe. Every student takes a flat [N, D] float input. */
import * as tf from '@tensorflow/tfjs';
import type { StudentSpec } from './recipe.js';
import { loadLayersModel } from './model-io.js';

export async function buildStudent(spec: StudentSpec, inputShape: readonly number[], classes: number, seed: number): Promise<tf.LayersModel> {
  const D = inputShape.reduce((a, b) => a * b, 1);
  let s = seed;
  const init = () => tf.initializers.glorotUniform({ seed: s++ });
  const he = () => tf.initializers.heNormal({ seed: s++ });
  if (spec.kind === 'onnx') throw new Error('student: { onnx } trains on the ort engine only; set engine: ort');
  if (spec.kind === 'transformer') throw new Error('student: { transformer } trains on token datasets, on the ort engine');
  if (spec.kind === 'layers') {
    const model = await loadLayersModel(spec.path);
    const inD = (model.inputs[0]!.shape.slice(1) as number[]).reduce((a, b) => a * b, 1);
    const out = model.outputs[0]!.shape.at(-1);
    if (inD !== D) throw new Error(`student ${spec.path} takes ${inD} inputs but the dataset has ${D}`);
    if (out !== classes) throw new Error(`student ${spec.path} has ${out} outputs but the task has ${classes} classes`);
    return model;
  }
  if (spec.kind === 'mlp') {
    const m = tf.sequential();
    spec.hidden.forEach((units, i) => {
      m.add(tf.layers.dense({ units, activation: 'relu', kernelInitializer: he(), ...(i === 0 ? { inputShape: [D] } : {}) }));
      if (spec.dropout > 0) m.add(tf.layers.dropout({ rate: spec.dropout, seed: s++ }));
    });
    m.add(tf.layers.dense({ units: classes, kernelInitializer: init(), ...(spec.hidden.length === 0 ? { inputShape: [D] } : {}) }));
    return m;
  }
  const [H, W, C] = inputShape.length === 3 ? (inputShape as [number, number, number]) : [D, 1, 1];
  if (spec.kind === 'cnn') {
    const m = tf.sequential();
    m.add(tf.layers.reshape({ targetShape: [H, W, C], inputShape: [D] }));
    for (const b of spec.blocks) {
      m.add(tf.layers.conv2d({ filters: b.filters, kernelSize: b.kernel, padding: 'same', activation: 'relu', kernelInitializer: he() }));
      if (b.pool) m.add(tf.layers.maxPooling2d({ poolSize: 2, strides: 2 }));
    }
    m.add(tf.layers.flatten());
    for (const units of spec.dense) m.add(tf.layers.dense({ units, activation: 'relu', kernelInitializer: he() }));
    m.add(tf.layers.dense({ units: classes, kernelInitializer: init() }));
    return m;
  }
  // A small ResNet: stem conv, then stages of basic blocks (conv-BN-relu-conv-BN + shortcut).
  const input = tf.input({ shape: [D] });
  let x = tf.layers.reshape({ targetShape: [H, W, C] }).apply(input) as tf.SymbolicTensor;
  x = tf.layers.conv2d({ filters: spec.widths[0]!, kernelSize: 3, padding: 'same', useBias: false, kernelInitializer: he() }).apply(x) as tf.SymbolicTensor;
  x = tf.layers.batchNormalization().apply(x) as tf.SymbolicTensor;
  x = tf.layers.activation({ activation: 'relu' }).apply(x) as tf.SymbolicTensor;
  spec.widths.forEach((width, stage) => {
    for (let b = 0; b < spec.blocksPerStage; b++) {
      const stride = stage > 0 && b === 0 ? 2 : 1;
      let y = tf.layers
        .conv2d({ filters: width, kernelSize: 3, strides: stride, padding: 'same', useBias: false, kernelInitializer: he() })
        .apply(x) as tf.SymbolicTensor;
      y = tf.layers.batchNormalization().apply(y) as tf.SymbolicTensor;
      y = tf.layers.activation({ activation: 'relu' }).apply(y) as tf.SymbolicTensor;
      y = tf.layers.conv2d({ filters: width, kernelSize: 3, padding: 'same', useBias: false, kernelInitializer: he() }).apply(y) as tf.SymbolicTensor;
      y = tf.layers.batchNormalization().apply(y) as tf.SymbolicTensor;
      let shortcut = x;
      if (stride !== 1 || (x.shape.at(-1) as number) !== width) {
        shortcut = tf.layers
          .conv2d({ filters: width, kernelSize: 1, strides: stride, padding: 'same', useBias: false, kernelInitializer: he() })
          .apply(x) as tf.SymbolicTensor;
        shortcut = tf.layers.batchNormalization().apply(shortcut) as tf.SymbolicTensor;
      }
      x = tf.layers.add().apply([y, shortcut]) as tf.SymbolicTensor;
      x = tf.layers.activation({ activation: 'relu' }).apply(x) as tf.SymbolicTensor;
    }
  });
  x = tf.layers.globalAveragePooling2d({}).apply(x) as tf.SymbolicTensor;
  const out = tf.layers.dense({ units: classes, kernelInitializer: init() }).apply(x) as tf.SymbolicTensor;
  return tf.model({ inputs: input, outputs: out });
}

/**
 * Multiply the model's logits by `factor` in place, by scaling its last layer's kernel and bias:
 * the saved and exported model then carries the change. The last layer must be a Dense layer
 * without an activation (every built-in student ends in one).
 */
export function scaleLogits(model: tf.LayersModel, factor: number): void {
  if (!(Number.isFinite(factor) && factor > 0)) throw new RangeError(`logit scale must be a finite number > 0, got ${factor}`);
  const last = logitLayer(model);
  const scaled = last.getWeights().map((w) => tf.mul(w, factor));
  last.setWeights(scaled);
  tf.dispose(scaled);
}

/** The model's last layer if it is a Dense layer without activation (its kernel and bias set the logits' scale); throws otherwise. */
export function logitLayer(model: tf.LayersModel): tf.layers.Layer {
  const last = model.layers.at(-1)!;
  const activation = last.getConfig()['activation'];
  if (last.getClassName() !== 'Dense' || (activation !== undefined && activation !== null && activation !== 'linear')) {
    throw new Error(
      `the student's last layer is ${last.getClassName()}${activation === undefined || activation === null ? '' : ` (${String(activation)})`}; temperature scaling needs a final Dense layer without activation`,
    );
  }
  return last;
}

/** Mean latency (ms) of one single-sample prediction, after a warm-up. */
export async function singleSampleLatencyMs(model: tf.LayersModel, D: number, runs = 50): Promise<number> {
  const x = tf.zeros([1, D]);
  for (let i = 0; i < 5; i++) await (model.predict(x) as tf.Tensor).data();
  const t0 = performance.now();
  for (let i = 0; i < runs; i++) {
    const y = model.predict(x) as tf.Tensor;
    await y.data();
    y.dispose();
  }
  x.dispose();
  return (performance.now() - t0) / runs;
}
