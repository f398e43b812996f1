/** Small real ONNX teachers for tests, built with the ONNX protobuf schema. */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { OnnxModelBuilder, mulberry32 } from '@distillate/shared';

function randn(rand: () => number, n: number, scale: number): Float32Array {
  return Float32Array.from({ length: n }, () => (rand() * 2 - 1) * scale);
}

/** Conv teacher: [N,1,8,8] → Conv 3×3 (4 ch, pad 1) → Relu → Flatten → Gemm → [N, classes]. */
export function convTeacher(classes = 10, seed = 7): Uint8Array {
  const rand = mulberry32(seed);
  const b = new OnnxModelBuilder('conv-teacher');
  const x = b.input('image', ['N', 1, 8, 8]);
  const w = b.weight('conv_w', randn(rand, 4 * 1 * 3 * 3, 0.5), [4, 1, 3, 3]);
  const cb = b.weight('conv_b', randn(rand, 4, 0.1), [4]);
  const conv = b.node('Conv', [x, w, cb], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] });
  const relu = b.node('Relu', [conv]);
  const flat = b.node('Flatten', [relu], { axis: 1 });
  const fw = b.weight('fc_w', randn(rand, 256 * classes, 0.2), [256, classes]);
  const fb = b.weight('fc_b', randn(rand, classes, 0.1), [classes]);
  b.node('Gemm', [flat, fw, fb], {}, 'logits');
  b.output('logits', ['N', classes]);
  return b.toBytes();
}

/** Flat teacher: [N, inputs] → Gemm → [N, classes]. */
export function linearTeacher(inputs = 64, classes = 10, seed = 3): Uint8Array {
  const rand = mulberry32(seed);
  const b = new OnnxModelBuilder('linear-teacher');
  const x = b.input('x', ['N', inputs]);
  const w = b.weight('w', randn(rand, inputs * classes, 0.3), [inputs, classes]);
  const bias = b.weight('b', randn(rand, classes, 0.1), [classes]);
  b.node('Gemm', [x, w, bias], {}, 'logits');
  b.output('logits', ['N', classes]);
  return b.toBytes();
}

export async function writeTeachers(dir: string): Promise<void> {
  await writeFile(join(dir, 'conv.onnx'), convTeacher());
  await writeFile(
    join(dir, 'conv.json'),
    JSON.stringify({ classes: Array.from({ length: 10 }, (_, i) => `class-${i}`), normalization: { mean: [0.5], std: [0.25] } }),
  );
  await writeFile(join(dir, 'linear.onnx'), linearTeacher());
  await writeFile(join(dir, 'broken.onnx'), 'this is not an onnx model');
}
