/**
 * Dataset rows → teacher input: the dataset's scaling, a layout change when the dataset is HWC
 * and the model NCHW (or the reverse), then the teacher's own normalisation. The description
 * is part of the cache key, so changing any step gives a new cache.
 */
import type { DatasetInfo } from '../dataset.js';
import { TeacherError } from './errors.js';
import type { TeacherInfo, TeacherSidecar } from './teachers.js';

export interface Preprocessor {
  /** Canonical description, hashed into the cache key. */
  readonly description: string;
  /** Floats per sample. */
  readonly sampleSize: number;
  /** `out`, when given and large enough, is reused (the caller owns it between calls). */
  apply(inputs: Uint8Array | Float32Array, rows: number, out?: Float32Array): Float32Array;
}

/** out[i] = in[i]·scale + offset, kept monomorphic per input type (uint8 is the common case). */
function scaleU8(src: Uint8Array, dst: Float32Array, n: number, scale: number, offset: number): void {
  for (let i = 0; i < n; i++) dst[i] = src[i]! * scale + offset;
}
function scaleF32(src: Float32Array, dst: Float32Array, n: number, scale: number, offset: number): void {
  for (let i = 0; i < n; i++) dst[i] = src[i]! * scale + offset;
}

type Transpose = 'none' | 'HWC->CHW' | 'CHW->HWC';

function channelCount(info: TeacherInfo): number {
  const s = info.sampleShape;
  if (info.layout === 'NCHW') return s[0] ?? 1;
  if (info.layout === 'NHWC') return s.at(-1) ?? 1;
  return 1;
}

/** Normalisation of model-layout samples, in place. Channel = position within the layout. */
export function normalizer(info: TeacherInfo, sidecar: TeacherSidecar): ((data: Float32Array, rows: number) => void) | undefined {
  const n = sidecar.normalization;
  if (n === undefined) return undefined;
  const size = info.sampleShape.reduce((a, b) => a * b, 1);
  if ('scale' in n) {
    return (data) => {
      for (let i = 0; i < data.length; i++) data[i] = data[i]! * n.scale + n.offset;
    };
  }
  const C = channelCount(info);
  if (n.mean.length !== C || n.std.length !== C) {
    throw new TeacherError(
      'bad_request',
      'bad_sidecar',
      `teacher ${info.name}: normalization has ${n.mean.length} means and ${n.std.length} stds for ${C} channels`,
    );
  }
  const spatial = size / C;
  return (data, rows) => {
    for (let r = 0; r < rows; r++) {
      const o = r * size;
      for (let i = 0; i < size; i++) {
        const c = info.layout === 'NCHW' ? Math.floor(i / spatial) : i % C;
        data[o + i] = (data[o + i]! - n.mean[c]!) / n.std[c]!;
      }
    }
  };
}

export function datasetPreprocessor(dataset: DatasetInfo, info: TeacherInfo, sidecar: TeacherSidecar): Preprocessor {
  const D = dataset.inputShape.reduce((a, b) => a * b, 1);
  const size = info.sampleShape.reduce((a, b) => a * b, 1);
  if (D !== size) {
    throw new TeacherError(
      'bad_request',
      'dataset_mismatch',
      `dataset samples have shape [${dataset.inputShape.join(', ')}] (${D} values) but teacher ${info.name} takes [${info.sampleShape.join(', ')}] (${size})`,
    );
  }
  // Images on both sides: the same height, width and channels, never just the same count of values.
  if (dataset.inputShape.length === 3 && info.sampleShape.length === 3 && dataset.layout !== 'flat' && info.layout !== 'flat') {
    const [dh, dw, dc] = dataset.layout === 'HWC' ? dataset.inputShape : [dataset.inputShape[1]!, dataset.inputShape[2]!, dataset.inputShape[0]!];
    const [th, tw, tc] = info.layout === 'NHWC' ? info.sampleShape : [info.sampleShape[1]!, info.sampleShape[2]!, info.sampleShape[0]!];
    if (dh !== th || dw !== tw || dc !== tc) {
      throw new TeacherError(
        'bad_request',
        'dataset_mismatch',
        `dataset images are ${dh}×${dw} with ${dc} channel${dc === 1 ? '' : 's'} but teacher ${info.name} takes ${th}×${tw} with ${tc} (import the images with --size ${th}x${tw} --channels ${tc}; nothing is resized at inference)`,
      );
    }
  }
  let transpose: Transpose = 'none';
  let H = 0;
  let W = 0;
  let C = 0;
  if (dataset.inputShape.length === 3 && info.sampleShape.length === 3) {
    if (dataset.layout === 'HWC' && info.layout === 'NCHW') {
      [H, W, C] = dataset.inputShape as [number, number, number];
      transpose = C === 1 ? 'none' : 'HWC->CHW';
    } else if (dataset.layout === 'CHW' && info.layout === 'NHWC') {
      [C, H, W] = dataset.inputShape as [number, number, number];
      transpose = C === 1 ? 'none' : 'CHW->HWC';
    }
  }
  const { scale, offset } = dataset.scaling;
  const normalize = normalizer(info, sidecar);
  const description = JSON.stringify({ scaling: dataset.scaling, transpose, normalization: sidecar.normalization ?? null, layout: info.layout });
  return {
    description,
    sampleSize: size,
    apply(inputs, rows, reuse) {
      const out = reuse !== undefined && reuse.length >= rows * size ? reuse.subarray(0, rows * size) : new Float32Array(rows * size);
      if (transpose === 'none') {
        if (inputs instanceof Uint8Array) scaleU8(inputs, out, rows * size, scale, offset);
        else scaleF32(inputs, out, rows * size, scale, offset);
      } else {
        const HW = H * W;
        for (let r = 0; r < rows; r++) {
          const o = r * size;
          for (let p = 0; p < HW; p++) {
            for (let c = 0; c < C; c++) {
              // HWC index p*C+c  ↔  CHW index c*HW+p
              if (transpose === 'HWC->CHW') out[o + c * HW + p] = inputs[o + p * C + c]! * scale + offset;
              else out[o + p * C + c] = inputs[o + c * HW + p]! * scale + offset;
            }
          }
        }
      }
      normalize?.(out, rows);
      return out;
    },
  };
}
