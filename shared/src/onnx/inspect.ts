/** Read facts off an ONNX model file without running it. */
import onnxProto from 'onnx-proto';

const { onnx } = onnxProto;
const FLOATING = new Set([
  onnx.TensorProto.DataType.FLOAT,
  onnx.TensorProto.DataType.FLOAT16,
  onnx.TensorProto.DataType.DOUBLE,
  onnx.TensorProto.DataType.BFLOAT16,
]);

/**
 * Number of trainable-sized values: the elements of the floating-point initializers (shape
 * constants and other integer tensors are not parameters). Exporters that fold batch norm
 * into the convolutions report the folded count.
 */
export function onnxParameterCount(model: Uint8Array): number {
  const m = onnx.ModelProto.decode(model);
  let n = 0;
  for (const t of m.graph?.initializer ?? []) {
    if (!FLOATING.has(t.dataType ?? 0)) continue;
    n += (t.dims ?? []).reduce<number>((a, d) => a * Number(d), 1);
  }
  return n;
}
