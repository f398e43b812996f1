/** Online inference: validated request → dynamic batcher per teacher → logits / T. */
import { badRequest } from './errors.js';
import { DynamicBatcher } from './batcher.js';
import type { Metrics } from './metrics.js';
import { normalizer } from '@distillate/shared/onnx';
import type { TeacherRegistry } from '@distillate/shared/onnx';

export interface OnlineOptions {
  readonly maxBatch: number;
  readonly maxWaitMs: number;
  readonly maxQueueRows: number;
}

export interface OnlineResult {
  readonly logits: Float32Array;
  readonly rows: number;
  readonly classes: number;
  readonly temperature: number;
  readonly executionProvider: string;
}

export class OnlineInference {
  readonly #teachers: TeacherRegistry;
  readonly #options: OnlineOptions;
  readonly #metrics: Metrics;
  readonly #batchers = new Map<string, Promise<DynamicBatcher>>();

  constructor(teachers: TeacherRegistry, options: OnlineOptions, metrics: Metrics) {
    this.#teachers = teachers;
    this.#options = options;
    this.#metrics = metrics;
  }

  /**
   * `inputs` are samples in the teacher's input layout with the dataset's scaling applied
   * (e.g. pixels in [0, 1]); the server applies the teacher's own normalisation.
   */
  async logits(teacherName: string, inputs: Float32Array, shape: readonly number[], temperature: number): Promise<OnlineResult> {
    const teacher = this.#teachers.get(teacherName);
    const { info } = await teacher.load();
    const want = info.sampleShape;
    if (shape.length !== want.length + 1 || want.some((d, i) => shape[i + 1] !== d)) {
      throw badRequest('bad_shape', `shape [${shape.join(', ')}] does not match teacher ${info.name}'s input [N, ${want.join(', ')}]`);
    }
    const rows = shape[0]!;
    const size = want.reduce((a, b) => a * b, 1);
    if (inputs.length !== rows * size) throw badRequest('bad_shape', `${inputs.length} input values for shape [${shape.join(', ')}] (needs ${rows * size})`);
    for (let i = 0; i < inputs.length; i++) {
      if (!Number.isFinite(inputs[i]!)) throw badRequest('non_finite_input', `input value ${i} is ${inputs[i]}; inputs must be finite`);
    }
    if (!(temperature > 0 && Number.isFinite(temperature))) throw badRequest('bad_temperature', `temperature must be > 0, got ${temperature}`);
    const x = inputs.slice();
    normalizer(info, teacher.sidecar)?.(x, rows);
    const batcher = await this.#batcher(teacherName);
    this.#metrics.queuedRows.inc(rows);
    let z: Float32Array;
    try {
      z = await batcher.submit(x, rows);
    } finally {
      this.#metrics.queuedRows.dec(rows);
    }
    if (temperature !== 1) for (let i = 0; i < z.length; i++) z[i] = z[i]! / temperature;
    return { logits: z, rows, classes: info.classes.length, temperature, executionProvider: info.executionProvider };
  }

  #batcher(name: string): Promise<DynamicBatcher> {
    let b = this.#batchers.get(name);
    if (b === undefined) {
      b = (async () => {
        const teacher = this.#teachers.get(name);
        const { info } = await teacher.load();
        return new DynamicBatcher({
          ...this.#options,
          sampleSize: info.sampleShape.reduce((a, c) => a * c, 1),
          classes: info.classes.length,
          run: (x, n) => teacher.logits(x, n),
          onBatch: (rows, seconds) => {
            this.#metrics.batchSize.observe(rows);
            this.#metrics.inferenceSeconds.observe({ teacher: name }, seconds);
          },
        });
      })();
      b.catch(() => this.#batchers.delete(name));
      this.#batchers.set(name, b);
    }
    return b;
  }
}
