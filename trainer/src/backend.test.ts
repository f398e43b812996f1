import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';
import { selectBackend } from './backend.js';

async function filterGrad(
  backend: string,
  x: Float32Array,
  xShape: number[],
  w: Float32Array,
  wShape: number[],
  strides: number,
  pad: 'same' | 'valid',
): Promise<Float32Array> {
  await tf.setBackend(backend);
  expect(tf.getBackend()).toBe(backend);
  const xt = tf.tensor4d(x, xShape as [number, number, number, number]);
  const wt = tf.tensor4d(w, wShape as [number, number, number, number]);
  // A non-constant upstream gradient: dy = sin(0, 1, 2, …) over the output's shape.
  const dy = (f: tf.Tensor4D) => {
    const out = tf.conv2d(xt, f, strides, pad);
    return tf.sum(tf.mul(out, tf.sin(tf.range(0, out.size).reshape(out.shape))));
  };
  const g = tf.grad((f: tf.Tensor) => dy(f as tf.Tensor4D))(wt);
  return (await g.data()) as Float32Array;
}

describe('TF.js backend', () => {
  it('chooses a backend and asserts it is the active one', async () => {
    const choice = await selectBackend();
    expect(tf.getBackend()).toBe(choice.name);
    // Here neither tfjs-node build nor a GPU exists; each skip carries its reason.
    for (const s of choice.skipped) expect(s.reason.length).toBeGreaterThan(0);
  });

  it('the registered wasm Conv2DBackpropFilter matches the cpu backend gradients', async () => {
    await selectBackend('wasm');
    const rand = (n: number, seed: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898 + seed) * 0.5);
    for (const [xShape, wShape, strides, pad] of [
      [[2, 7, 7, 3], [3, 3, 3, 5], 1, 'same'],
      [[2, 8, 8, 2], [3, 3, 2, 4], 2, 'same'],
      [[1, 9, 6, 4], [2, 3, 4, 3], 1, 'valid'],
      [[3, 10, 10, 1], [5, 5, 1, 2], 2, 'valid'],
    ] as const) {
      const x = rand(
        (xShape as readonly number[]).reduce((a, b) => a * b, 1),
        1,
      );
      const w = rand(
        (wShape as readonly number[]).reduce((a, b) => a * b, 1),
        2,
      );
      const onWasm = await filterGrad('wasm', x, [...xShape], w, [...wShape], strides, pad);
      const onCpu = await filterGrad('cpu', x, [...xShape], w, [...wShape], strides, pad);
      expect(onWasm.length).toBe(onCpu.length);
      for (let i = 0; i < onCpu.length; i++) expect(Math.abs(onWasm[i]! - onCpu[i]!)).toBeLessThan(1e-4);
    }
    await tf.setBackend('wasm');
  });
});
