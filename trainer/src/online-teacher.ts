/**
 * Online distillation: the teacher ONNX runs inside the training loop, on every batch, through
 * the server's own teacher code (sidecar, preprocessing, onnxruntime session). It is the
 * baseline the logit cache is measured against (npm run bench), and the way to distill when a
 * cache would not be reused.
 */
import { basename, dirname } from 'node:path';
import type { DatasetInfo } from '@distillate/shared';
import { TeacherRegistry, datasetPreprocessor, type Preprocessor, type Teacher } from '@distillate/shared/onnx';
import type { TrainBatch } from './data.js';

export class OnlineTeacher {
  readonly classes: readonly string[];
  readonly #registry: TeacherRegistry;
  readonly #teacher: Teacher;
  readonly #pre: Preprocessor;
  #buffer: Float32Array | undefined;

  private constructor(registry: TeacherRegistry, teacher: Teacher, pre: Preprocessor, classes: readonly string[]) {
    this.#registry = registry;
    this.#teacher = teacher;
    this.#pre = pre;
    this.classes = classes;
  }

  /** `model` is a .onnx file; its sidecar `<name>.json`, if any, sits next to it. */
  static async open(model: string, dataset: DatasetInfo, options: { readonly intraOpThreads?: number | undefined } = {}): Promise<OnlineTeacher> {
    if (!model.endsWith('.onnx')) throw new Error(`online teacher ${model}: expected a .onnx file`);
    const registry = await TeacherRegistry.open(dirname(model), options.intraOpThreads === undefined ? {} : { intraOpThreads: options.intraOpThreads });
    try {
      const teacher = registry.get(basename(model, '.onnx'));
      const info = await teacher.info();
      // Batches reach the loop already scaled (stored × scale + offset), as float32.
      const pre = datasetPreprocessor({ ...dataset, scaling: { scale: 1, offset: 0 }, inputType: 'float32' }, info, teacher.sidecar);
      return new OnlineTeacher(registry, teacher, pre, info.classes);
    } catch (err) {
      await registry.releaseAll();
      throw err;
    }
  }

  /** The batch with the teacher's raw logits in slot 0 for every row. */
  async fill(b: TrainBatch): Promise<TrainBatch> {
    if (b.x instanceof Uint8Array) throw new Error('internal: an online teacher reads scaled inputs, not stored ones');
    const x = this.#pre.apply(b.x, b.rows, this.#buffer);
    if (x.buffer !== this.#buffer?.buffer) this.#buffer = x; // keep the largest buffer for reuse
    const logits = await this.#teacher.logits(x, b.rows);
    return { ...b, slots: [{ logits }], hasTeacher: new Uint8Array(b.rows).fill(1) };
  }

  release(): Promise<void> {
    return this.#registry.releaseAll();
  }
}
