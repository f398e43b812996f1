/**
 * TF.js LayersModel → ONNX, with the trainer's own OnnxModelBuilder. The ONNX model takes the
 * same flat [N, D] input. TF.js convolutions are NHWC and ONNX's are NCHW: after the Reshape
 * to an image the graph transposes to NCHW once, runs convs/pools/BN/adds there, and transposes
 * back to NHWC right before a Flatten so the dense weights line up.
 */
import type * as tf from '@tensorflow/tfjs';
import { OnnxModelBuilder } from '@distillate/shared';

interface Tensor {
  name: string;
  /** 4-D tensors are kept NCHW inside the graph. */
  nchw: boolean;
}

export class OnnxExportError extends Error {
  override readonly name = 'OnnxExportError';
}

function weightsOf(layer: tf.layers.Layer): Float32Array[] {
  return layer.getWeights().map((w) => w.dataSync() as Float32Array);
}

function activation(b: OnnxModelBuilder, x: string, act: string | undefined, where: string): string {
  if (act === undefined || act === 'linear') return x;
  if (act === 'relu') return b.node('Relu', [x]);
  if (act === 'softmax') return b.node('Softmax', [x], { axis: -1 });
  if (act === 'sigmoid') return b.node('Sigmoid', [x]);
  if (act === 'tanh') return b.node('Tanh', [x]);
  throw new OnnxExportError(`${where}: activation "${act}" has no ONNX mapping yet`);
}

/** Transpose [kh, kw, ci, co] (TF) → [co, ci, kh, kw] (ONNX). */
function convKernel(w: Float32Array, [kh, kw, ci, co]: number[]): Float32Array {
  const out = new Float32Array(w.length);
  for (let h = 0; h < kh!; h++)
    for (let x = 0; x < kw!; x++)
      for (let i = 0; i < ci!; i++) for (let o = 0; o < co!; o++) out[((o * ci! + i) * kh! + h) * kw! + x] = w[((h * kw! + x) * ci! + i) * co! + o]!;
  return out;
}

export function exportOnnx(model: tf.LayersModel, opts: { classes?: readonly string[]; metadata?: Readonly<Record<string, string>> } = {}): Uint8Array {
  const b = new OnnxModelBuilder('distillate-student');
  const inShape = model.inputs[0]!.shape;
  if (inShape.length !== 2) throw new OnnxExportError(`students take a flat [N, D] input; this one takes [${inShape.join(', ')}]`);
  const D = inShape[1] as number;
  const names = new Map<string, Tensor>();
  const inputName = b.input('input', ['N', D]);
  const inputLayer = model.inputs[0]!.sourceLayer.name;
  names.set(inputLayer, { name: inputName, nchw: false });

  for (const layer of model.layers) {
    const cls = layer.getClassName();
    if (cls === 'InputLayer') continue;
    const inbound = (layer.inboundNodes[0] as unknown as { inboundLayers: tf.layers.Layer[] }).inboundLayers;
    const inputs = (inbound.length > 0 ? inbound : [{ name: inputLayer } as tf.layers.Layer]).map((l) => {
      const t = names.get(l.name);
      if (t === undefined) throw new OnnxExportError(`layer ${layer.name}: input ${l.name} not exported`);
      return t;
    });
    const x = inputs[0]!;
    const cfg = layer.getConfig() as Record<string, unknown>;
    const where = `${layer.name} (${cls})`;
    let out: Tensor;
    switch (cls) {
      case 'Reshape': {
        const target = cfg['targetShape'] as number[];
        const shape = b.int64('shape', [-1, ...target]);
        const r = b.node('Reshape', [x.name, shape]);
        out = target.length === 3 ? { name: b.node('Transpose', [r], { perm: [0, 3, 1, 2] }), nchw: true } : { name: r, nchw: false };
        break;
      }
      case 'Dense': {
        const [w, bias] = weightsOf(layer);
        const kernelShape = layer.getWeights()[0]!.shape;
        const args = [x.name, b.weight('W', w!, kernelShape)];
        if (bias !== undefined) args.push(b.weight('B', bias, [bias.length]));
        out = { name: activation(b, b.node('Gemm', args), cfg['activation'] as string, where), nchw: false };
        break;
      }
      case 'Conv2D': {
        const ws = layer.getWeights();
        const kshape = ws[0]!.shape;
        const [kh, kw] = kshape as [number, number];
        const strides = cfg['strides'] as [number, number];
        const dil = cfg['dilationRate'] as number | [number, number];
        if ((Array.isArray(dil) ? dil : [dil, dil]).some((d) => d !== 1)) throw new OnnxExportError(`${where}: dilation is not supported`);
        const args = [x.name, b.weight('W', convKernel(ws[0]!.dataSync() as Float32Array, kshape), [kshape[3]!, kshape[2]!, kh, kw])];
        if (ws[1] !== undefined) args.push(b.weight('B', ws[1].dataSync() as Float32Array, [ws[1].shape[0]!]));
        const pad = cfg['padding'] === 'same' ? { auto_pad: 'SAME_UPPER' } : { pads: [0, 0, 0, 0] };
        const conv = b.node('Conv', args, { kernel_shape: [kh, kw], strides, ...pad });
        out = { name: activation(b, conv, cfg['activation'] as string, where), nchw: true };
        break;
      }
      case 'MaxPooling2D':
      case 'AveragePooling2D': {
        const pool = cfg['poolSize'] as [number, number];
        const strides = (cfg['strides'] as [number, number] | null) ?? pool;
        const pad = cfg['padding'] === 'same' ? { auto_pad: 'SAME_UPPER' } : {};
        out = { name: b.node(cls === 'MaxPooling2D' ? 'MaxPool' : 'AveragePool', [x.name], { kernel_shape: pool, strides, ...pad }), nchw: true };
        break;
      }
      case 'BatchNormalization': {
        const ws = weightsOf(layer);
        const C = ws.at(-1)!.length;
        const center = cfg['center'] !== false;
        const scale = cfg['scale'] !== false;
        let i = 0;
        const gamma = scale ? ws[i++]! : new Float32Array(C).fill(1);
        const beta = center ? ws[i++]! : new Float32Array(C);
        const mean = ws[i++]!;
        const variance = ws[i++]!;
        const eps = cfg['epsilon'] as number;
        out = {
          name: b.node(
            'BatchNormalization',
            [x.name, b.weight('gamma', gamma, [C]), b.weight('beta', beta, [C]), b.weight('mean', mean, [C]), b.weight('var', variance, [C])],
            { epsilon: { float: eps } },
          ),
          nchw: x.nchw,
        };
        break;
      }
      case 'Activation':
        out = { name: activation(b, x.name, cfg['activation'] as string, where), nchw: x.nchw };
        break;
      case 'Dropout':
        out = x;
        break;
      case 'Add':
        out = {
          name: b.node(
            'Add',
            inputs.map((t) => t.name),
          ),
          nchw: x.nchw,
        };
        break;
      case 'Flatten': {
        const nhwc = x.nchw ? b.node('Transpose', [x.name], { perm: [0, 2, 3, 1] }) : x.name;
        out = { name: b.node('Flatten', [nhwc], { axis: 1 }), nchw: false };
        break;
      }
      case 'GlobalAveragePooling2D':
        out = { name: b.node('Flatten', [b.node('GlobalAveragePool', [x.name])], { axis: 1 }), nchw: false };
        break;
      default:
        throw new OnnxExportError(`${where}: no ONNX mapping for this layer type yet`);
    }
    names.set(layer.name, out);
  }
  const last = names.get(model.outputs[0]!.sourceLayer.name)!;
  b.node('Identity', [last.name], {}, 'logits');
  const C = model.outputs[0]!.shape.at(-1) as number;
  b.output('logits', ['N', C]);
  if (opts.classes !== undefined) b.metadata('distillate.classes', JSON.stringify(opts.classes));
  for (const [k, v] of Object.entries(opts.metadata ?? {})) b.metadata(k, v);
  return b.toBytes();
}
