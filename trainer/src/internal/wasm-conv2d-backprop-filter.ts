/**
 * The stock TF.js wasm backend has no Conv2DBackpropFilter kernel, so training any conv net on
 * it fails with "Kernel 'Conv2DBackpropFilter' not registered". This registers one: the filter
 * gradient dW[fh, fw, ci, co] = Σ_{b, oh, ow} x[b, oh·sh + fh − top, ow·sw + fw − left, ci] ·
 * dy[b, oh, ow, co] (NHWC, dilation 1), computed on the wasm heap's typed arrays. The inner
 * loop runs over output channels, which are contiguous in both dy and dW.
 */
import * as tf from '@tensorflow/tfjs';

interface WasmBackendLike {
  readSync(dataId: unknown): tf.backend_util.BackendValues;
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  typedArrayFromHeap(info: tf.TensorInfo): tf.backend_util.TypedArray;
}

interface Attrs {
  strides: [number, number] | number;
  pad: 'valid' | 'same' | number | tf.backend_util.ExplicitPadding;
  dataFormat: 'NHWC' | 'NCHW';
  dimRoundingMode?: 'floor' | 'round' | 'ceil';
  filterShape: [number, number, number, number];
}

/** dW for NHWC x [B, H, W, C] and dy [B, OH, OW, OC]; exported for tests. */
export function conv2dBackpropFilterNHWC(
  x: Float32Array,
  dy: Float32Array,
  info: {
    batchSize: number;
    inHeight: number;
    inWidth: number;
    inChannels: number;
    outHeight: number;
    outWidth: number;
    outChannels: number;
    filterHeight: number;
    filterWidth: number;
    strideHeight: number;
    strideWidth: number;
    padTop: number;
    padLeft: number;
  },
  dW: Float32Array,
): void {
  const {
    batchSize: B,
    inHeight: H,
    inWidth: W,
    inChannels: C,
    outHeight: OH,
    outWidth: OW,
    outChannels: OC,
    filterHeight: FH,
    filterWidth: FW,
    strideHeight: SH,
    strideWidth: SW,
    padTop,
    padLeft,
  } = info;
  dW.fill(0);
  for (let b = 0; b < B; b++) {
    for (let oh = 0; oh < OH; oh++) {
      for (let ow = 0; ow < OW; ow++) {
        const dyOff = ((b * OH + oh) * OW + ow) * OC;
        for (let fh = 0; fh < FH; fh++) {
          const ih = oh * SH + fh - padTop;
          if (ih < 0 || ih >= H) continue;
          for (let fw = 0; fw < FW; fw++) {
            const iw = ow * SW + fw - padLeft;
            if (iw < 0 || iw >= W) continue;
            const xOff = ((b * H + ih) * W + iw) * C;
            const wBase = (fh * FW + fw) * C;
            for (let ci = 0; ci < C; ci++) {
              const xv = x[xOff + ci]!;
              if (xv === 0) continue; // common after ReLU
              const wOff = (wBase + ci) * OC;
              for (let co = 0; co < OC; co++) dW[wOff + co]! += xv * dy[dyOff + co]!;
            }
          }
        }
      }
    }
  }
}

let registered = false;

export function registerWasmConv2DBackpropFilter(): void {
  if (registered || tf.getKernel('Conv2DBackpropFilter', 'wasm') !== undefined) return;
  registered = true;
  tf.registerKernel({
    kernelName: 'Conv2DBackpropFilter',
    backendName: 'wasm',
    kernelFunc: ({ inputs, backend, attrs }) => {
      const { x, dy } = inputs as { x: tf.TensorInfo; dy: tf.TensorInfo };
      const a = attrs as unknown as Attrs;
      if (a.dataFormat === 'NCHW') throw new Error('Conv2DBackpropFilter (wasm): only NHWC is supported');
      const wasm = backend as unknown as WasmBackendLike;
      const conv = tf.backend_util.computeConv2DInfo(
        x.shape as [number, number, number, number],
        a.filterShape,
        a.strides,
        1,
        a.pad,
        a.dimRoundingMode,
        false,
        'channelsLast',
      );
      const out = wasm.makeOutput([...a.filterShape], 'float32');
      conv2dBackpropFilterNHWC(
        wasm.readSync(x.dataId) as Float32Array,
        wasm.readSync(dy.dataId) as Float32Array,
        {
          batchSize: conv.batchSize,
          inHeight: conv.inHeight,
          inWidth: conv.inWidth,
          inChannels: conv.inChannels,
          outHeight: conv.outHeight,
          outWidth: conv.outWidth,
          outChannels: conv.outChannels,
          filterHeight: conv.filterHeight,
          filterWidth: conv.filterWidth,
          strideHeight: conv.strideHeight,
          strideWidth: conv.strideWidth,
          padTop: conv.padInfo.top,
          padLeft: conv.padInfo.left,
        },
        wasm.typedArrayFromHeap(out) as Float32Array,
      );
      return out;
    },
  });
}
