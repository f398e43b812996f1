/**
 * The ORT engine beyond the CPU EP and the built-in students: the same train steps on the WebGPU
 * EP (a real GPU, or Mesa's lavapipe on a CPU-only machine) as on the CPU EP; a student from an
 * ONNX file exported by PyTorch; and the refusal of an op without a gradient rule.
 */
import { LAVAPIPE_PACKAGE } from './helpers/system.js';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { mulberry32, writeSyntheticDataset } from '@distillate/shared';
import { Graph, ProviderUnavailableError } from '@distillate/shared/onnx';
import { batchLoss, flatBatch, OrtEngine, parseRecipe, selectBackend, train, type BatchLoss, type TeacherPlan } from '@distillate/trainer';

const ROOT = new URL('..', import.meta.url).pathname;
let root: string;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'distillate-ort-'));
  process.env['XDG_RUNTIME_DIR'] ??= tmpdir(); // Vulkan's loader (and lavapipe) want one
  await selectBackend('cpu');
  await writeSyntheticDataset(join(root, 'train.arrow'), { rows: 600, inputShape: [28, 28, 1], classes: 10 });
});

const recipeFor = (student: Record<string, unknown>, optimizer: Record<string, unknown> = { kind: 'adam', lr: 0.01 }) =>
  parseRecipe({ name: 'x', data: { train: 'unused.arrow' }, student, optimizer });

/** A fixed batch and its CE + KD loss (the trainer's own batchLoss), so dL/dlogits is not trivial. */
function batch(rows: number, D: number, C: number): { x: Float32Array; loss: BatchLoss } {
  const rand = mulberry32(5);
  const x = Float32Array.from({ length: rows * D }, () => rand());
  const b = {
    rows,
    x,
    labels: Int32Array.from({ length: rows }, (_, i) => i % C),
    hasTeacher: new Uint8Array(rows).fill(1),
    slots: [{ logits: Float32Array.from({ length: rows * C }, () => rand() * 4 - 2) }],
  };
  const plan: TeacherPlan = {
    caches: [],
    layout: { inputSize: D, slots: [{ kind: 'dense', classes: C }] },
    mode: 'single',
    classes: Array.from({ length: C }, (_, i) => `c${i}`),
    classIndex: [],
    union: 'subsets',
  };
  return { x, loss: batchLoss(b, { plan, distill: { method: 'kd', params: { temperature: 2 } }, ceWeight: 1, kdWeight: 1, temperature: 2 }) };
}

async function weightsAfter(engine: OrtEngine, steps: number, x: Float32Array, rows: number, loss: BatchLoss): Promise<Map<string, Float32Array>> {
  for (let i = 0; i < steps; i++) await engine.step(flatBatch(engine, x, rows), loss, 0.01);
  const g = Graph.fromBytes(engine.exportOnnx({}));
  return new Map([...g.initializers].filter(([, v]) => v.data instanceof Float32Array).map(([k, v]) => [k, v.data as Float32Array]));
}

describe('ort engine', () => {
  for (const student of [
    { kind: 'mlp', hidden: [64, 32] },
    { kind: 'cnn', blocks: [{ filters: 4 }, { filters: 8 }], dense: [16] },
  ]) {
    it(`WebGPU EP and CPU EP agree to 1e-4 on the weights after 3 train steps (${student.kind})`, async (ctx) => {
      const recipe = recipeFor(student);
      let gpu: OrtEngine;
      try {
        gpu = await OrtEngine.create(recipe, [28, 28, 1], 10, { provider: 'webgpu' });
      } catch (err) {
        // CI installs Mesa's lavapipe (.ci/run), so it must find an adapter; elsewhere a machine may have none.
        if (err instanceof ProviderUnavailableError && process.env['CI'] !== 'true')
          return ctx.skip(`no WebGPU adapter: needs ${LAVAPIPE_PACKAGE} on a machine without a GPU (npm run setup installs it)`);
        throw err;
      }
      const cpu = await OrtEngine.create(recipe, [28, 28, 1], 10, { provider: 'cpu' });
      try {
        expect(gpu.device).toBe('webgpu');
        const { x, loss } = batch(32, 784, 10);
        const a = await weightsAfter(cpu, 3, x, 32, loss);
        const b = await weightsAfter(gpu, 3, x, 32, loss);
        let worst = 0;
        let moved = 0;
        const init = Graph.fromBytes((await OrtEngine.create(recipe, [28, 28, 1], 10, { provider: 'cpu' })).exportOnnx({}));
        for (const [name, w] of a) {
          const v = b.get(name)!;
          const w0 = init.initializers.get(name)!.data as Float32Array;
          for (let i = 0; i < w.length; i++) {
            worst = Math.max(worst, Math.abs(w[i]! - v[i]!));
            moved = Math.max(moved, Math.abs(w[i]! - w0[i]!));
          }
        }
        expect(moved).toBeGreaterThan(1e-3); // the steps did change the weights
        expect(worst).toBeLessThanOrEqual(1e-4);
      } finally {
        await gpu.release();
        await cpu.release();
      }
    });
  }

  it('WebGPU EP and CPU EP agree to 1e-4 after 3 train steps on stored uint8 inputs (scaled in the graph)', async (ctx) => {
    const recipe = recipeFor({ kind: 'mlp', hidden: [64, 32] });
    const storedInput = { scale: 1 / 255, offset: 0 };
    let gpu: OrtEngine;
    try {
      gpu = await OrtEngine.create(recipe, [28, 28, 1], 10, { provider: 'webgpu', storedInput });
    } catch (err) {
      if (err instanceof ProviderUnavailableError && process.env['CI'] !== 'true')
        return ctx.skip(`no WebGPU adapter: needs ${LAVAPIPE_PACKAGE} on a machine without a GPU (npm run setup installs it)`);
      throw err;
    }
    const cpu = await OrtEngine.create(recipe, [28, 28, 1], 10, { provider: 'cpu', storedInput });
    try {
      expect(gpu.storedInput).toEqual(storedInput);
      const { x, loss } = batch(32, 784, 10);
      const bytes = Uint8Array.from(x, (v) => Math.round(v * 255));
      for (let i = 0; i < 3; i++) {
        await cpu.step(flatBatch(cpu, bytes, 32), loss, 0.01);
        await gpu.step(flatBatch(gpu, bytes, 32), loss, 0.01);
      }
      const a = Graph.fromBytes(cpu.exportOnnx({})).initializers;
      const b = Graph.fromBytes(gpu.exportOnnx({})).initializers;
      let worst = 0;
      for (const [name, w] of a) {
        if (!(w.data instanceof Float32Array)) continue;
        const v = b.get(name)!.data as Float32Array;
        for (let i = 0; i < v.length; i++) worst = Math.max(worst, Math.abs(w.data[i]! - v[i]!));
      }
      expect(worst).toBeLessThanOrEqual(1e-4);
      const pa = await cpu.predict(flatBatch(cpu, bytes, 32));
      const pb = await gpu.predict(flatBatch(gpu, bytes, 32));
      for (let i = 0; i < pa.length; i++) expect(Math.abs(pa[i]! - pb[i]!)).toBeLessThanOrEqual(1e-3);
    } finally {
      await gpu.release();
      await cpu.release();
    }
  });

  it('trains a student from an ONNX file exported by torch.onnx.export (NCHW input, Flatten, Gemm)', async () => {
    const r = await train(
      parseRecipe({
        name: 'torch-student',
        data: { train: join(root, 'train.arrow') },
        out: join(root, 'runs'),
        student: { kind: 'onnx', path: join(ROOT, 'tests/fixtures/torch-cnn.onnx') },
        epochs: 2,
        batchSize: 64,
      }),
    );
    expect(r.engine.name).toBe('ort');
    expect(r.metrics[1]!.loss['ce']!).toBeLessThan(r.metrics[0]!.loss['ce']!);
    expect(r.onnx!.maxRelDiff).toBeLessThanOrEqual(1e-5);
    expect(r.parameters).toBe(3 * 1 * 3 * 3 + 3 + 3 * 14 * 14 * 10 + 10); // conv3 + pool + linear, as in export_torch_student.py
  });

  it('refuses an op without a gradient rule before training, naming the op and the node', async () => {
    const g = new Graph('bad');
    g.input('x', ['N', 784]);
    const w = g.constant('w', new Float32Array(784 * 10), [784, 10]);
    const z = g.node('MatMul', ['x', w]);
    g.node('LpNormalization', [z], { axis: 1 }, 'y');
    g.output('y', ['N', 10]);
    await writeFile(join(root, 'bad.onnx'), g.toBytes());
    const epochs: number[] = [];
    await expect(
      train(
        parseRecipe({
          name: 'bad-op',
          data: { train: join(root, 'train.arrow') },
          out: join(root, 'runs'),
          student: { kind: 'onnx', path: join(root, 'bad.onnx') },
          epochs: 1,
        }),
        { onEpochEnd: (m) => epochs.push(m.epoch) },
      ),
    ).rejects.toThrow(/^unsupported op LpNormalization \(node LpNormalization_node_\d+\)/);
    expect(epochs).toEqual([]);
  });
});
