import { DatasetWriter, type DatasetInfo } from './dataset.js';

/** Small deterministic PRNG (mulberry32) so generated data is identical across runs. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface SyntheticDatasetOptions {
  readonly rows: number;
  /** Sample shape (default [8, 8, 1]). */
  readonly inputShape?: readonly number[];
  readonly classes?: number;
  /** Draws the samples. Datasets with different seeds are different samples of one task. */
  readonly seed?: number;
  /** Draws the class prototypes, i.e. the task (default 1): keep it to make a test split of the same task. */
  readonly taskSeed?: number;
  /** Every n-th row is unlabelled (label null). 0 (default): all labelled. */
  readonly unlabelledEvery?: number;
  /** First id (default 0); ids are consecutive. */
  readonly firstId?: number;
  readonly inputType?: 'uint8' | 'float32';
  readonly batchRows?: number;
}

/**
 * A learnable generated dataset: each class has a random prototype image (drawn by `taskSeed`),
 * and a sample is its class prototype plus noise (drawn by `seed`). Used by tests and by the
 * demo's --synthetic mode.
 */
export async function writeSyntheticDataset(path: string, opts: SyntheticDatasetOptions): Promise<{ fingerprint: string; rows: number }> {
  const shape = [...(opts.inputShape ?? [8, 8, 1])];
  const C = opts.classes ?? 10;
  const D = shape.reduce((a, b) => a * b, 1);
  const rand = mulberry32(opts.seed ?? 1);
  const taskRand = mulberry32((opts.taskSeed ?? 1) + 0x9e3779b9);
  const protos = Array.from({ length: C }, () => Float32Array.from({ length: D }, () => taskRand()));
  const inputType = opts.inputType ?? 'uint8';
  const info: DatasetInfo = {
    inputShape: shape,
    layout: shape.length === 3 ? 'HWC' : 'flat',
    scaling: inputType === 'uint8' ? { scale: 1 / 255, offset: 0 } : { scale: 1, offset: 0 },
    classes: Array.from({ length: C }, (_, c) => `class-${c}`),
    inputType,
  };
  const writer = DatasetWriter.create(path, info);
  const batchRows = opts.batchRows ?? 1000;
  for (let start = 0; start < opts.rows; start += batchRows) {
    const n = Math.min(batchRows, opts.rows - start);
    const ids = new Int32Array(n);
    const labels = new Int32Array(n);
    const inputs = inputType === 'uint8' ? new Uint8Array(n * D) : new Float32Array(n * D);
    for (let i = 0; i < n; i++) {
      const row = start + i;
      ids[i] = (opts.firstId ?? 0) + row;
      const y = Math.floor(rand() * C);
      labels[i] = opts.unlabelledEvery !== undefined && opts.unlabelledEvery > 0 && row % opts.unlabelledEvery === 0 ? -1 : y;
      const p = protos[y]!;
      for (let d = 0; d < D; d++) {
        const v = Math.min(1, Math.max(0, 0.7 * p[d]! + 0.3 * rand()));
        inputs[i * D + d] = inputType === 'uint8' ? Math.round(v * 255) : v;
      }
    }
    await writer.append({ ids, inputs, labels });
  }
  const done = await writer.close();
  return { fingerprint: done.fingerprint, rows: done.rows };
}
