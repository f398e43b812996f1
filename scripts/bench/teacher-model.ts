/** The CNN used by the server benchmark (Fashion-MNIST shaped), built as a real ONNX model. */
import { OnnxModelBuilder, mulberry32 } from '@distillate/shared';

export const BENCH_CNN = {
  /** conv3×3(1→32) relu maxpool2, conv3×3(32→64) relu maxpool2, dense 3136→128 relu, dense 128→10. */
  description: 'conv3x3x32-pool-conv3x3x64-pool-fc128-fc10 on 1×28×28',
};

function he(rand: () => number, n: number, fanIn: number): Float32Array {
  const s = Math.sqrt(2 / fanIn);
  return Float32Array.from({ length: n }, () => (rand() * 2 - 1) * s * Math.sqrt(3));
}

/** Returns the ONNX bytes and the raw weights (so that other frameworks can run the same net). */
export function benchCnn(seed = 1): { onnx: Uint8Array; weights: Record<string, { data: Float32Array; dims: number[] }> } {
  const rand = mulberry32(seed);
  const weights = {
    c1w: { data: he(rand, 32 * 9, 9), dims: [32, 1, 3, 3] },
    c1b: { data: new Float32Array(32), dims: [32] },
    c2w: { data: he(rand, 64 * 32 * 9, 288), dims: [64, 32, 3, 3] },
    c2b: { data: new Float32Array(64), dims: [64] },
    f1w: { data: he(rand, 3136 * 128, 3136), dims: [3136, 128] },
    f1b: { data: new Float32Array(128), dims: [128] },
    f2w: { data: he(rand, 128 * 10, 128), dims: [128, 10] },
    f2b: { data: new Float32Array(10), dims: [10] },
  };
  const b = new OnnxModelBuilder('bench-cnn');
  const w = (k: keyof typeof weights) => b.weight(k, weights[k].data, weights[k].dims);
  let x = b.input('image', ['N', 1, 28, 28]);
  x = b.node('Conv', [x, w('c1w'), w('c1b')], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] });
  x = b.node('Relu', [x]);
  x = b.node('MaxPool', [x], { kernel_shape: [2, 2], strides: [2, 2] });
  x = b.node('Conv', [x, w('c2w'), w('c2b')], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] });
  x = b.node('Relu', [x]);
  x = b.node('MaxPool', [x], { kernel_shape: [2, 2], strides: [2, 2] });
  x = b.node('Flatten', [x], { axis: 1 });
  x = b.node('Gemm', [x, w('f1w'), w('f1b')]);
  x = b.node('Relu', [x]);
  b.node('Gemm', [x, w('f2w'), w('f2b')], {}, 'logits');
  b.output('logits', ['N', 10]);
  return { onnx: b.toBytes(), weights };
}
