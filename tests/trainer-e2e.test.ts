/**
 * The trainer end to end on generated data: real teacher ONNX → real precompute job → real
 * cache → TF.js (wasm) training → metrics.jsonl, report.html, student.onnx checked in ORT.
 */
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { DatasetReader, LogitCacheReader, writeSyntheticDataset } from '@distillate/shared';
import { Graph, OrtSession } from '@distillate/shared/onnx';
import { createServices, resolveConfig, type JobRequestInput } from '@distillate/server';
import {
  distillLossEager,
  epochBatches,
  formatEpoch,
  METHOD_NAMES,
  parseRecipe,
  predictRunLogits,
  saveLayersModel,
  train,
  TrainingError,
} from '@distillate/trainer';
import { pino } from 'pino';
import * as tf from '@tensorflow/tfjs';
import { convTeacher, linearTeacher } from './helpers/teachers.js';

let root: string;
const caches: Record<string, string> = {};

async function precompute(teacher: string, dataset: string, extra: Partial<JobRequestInput> = {}): Promise<string> {
  const services = await createServices(
    resolveConfig({ models: join(root, 'models'), data: join(root, 'data'), cache: join(root, 'cache'), logLevel: 'silent' }, {}),
    pino({ level: 'silent' }),
  );
  await services.jobs.init();
  const job = await services.jobs.create({ type: 'precompute', teacher, dataset, ...extra });
  await services.jobs.idle();
  const done = services.jobs.get(job.id);
  await services.teachers.releaseAll();
  if (done.state !== 'succeeded') throw new Error(`${done.state}: ${done.error?.message}`);
  return join(root, 'cache', done.cacheKey!);
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'distillate-train-'));
  for (const d of ['models', 'data']) await mkdir(join(root, d));
  await writeFile(join(root, 'models', 'conv.onnx'), convTeacher());
  await writeFile(join(root, 'models', 'linear.onnx'), linearTeacher());
  await writeSyntheticDataset(join(root, 'data', 'train.arrow'), { rows: 1500, inputShape: [8, 8, 1], classes: 10 });
  await writeSyntheticDataset(join(root, 'data', 'test.arrow'), { rows: 300, inputShape: [8, 8, 1], classes: 10, seed: 1, firstId: 100000 });
  caches['dense'] = await precompute('conv', 'train.arrow', { temperature: 2 });
  caches['topk'] = await precompute('conv', 'train.arrow', { temperature: 4, storage: { mode: 'topk', k: 3 } });
  caches['linear'] = await precompute('linear', 'train.arrow');
  // Two teachers with different class lists: A knows class-0..4, B knows class-5..9.
  await writeFile(join(root, 'models', 'half-a.onnx'), linearTeacher(64, 5, 11));
  await writeFile(join(root, 'models', 'half-a.json'), JSON.stringify({ classes: ['class-0', 'class-1', 'class-2', 'class-3', 'class-4'] }));
  await writeFile(join(root, 'models', 'half-b.onnx'), linearTeacher(64, 5, 12));
  await writeFile(join(root, 'models', 'half-b.json'), JSON.stringify({ classes: ['class-5', 'class-6', 'class-7', 'class-8', 'class-9'] }));
  caches['a'] = await precompute('half-a', 'train.arrow');
  caches['b'] = await precompute('half-b', 'train.arrow');
  // A pool without labels, labelled by a label job.
  await writeSyntheticDataset(join(root, 'data', 'pool.arrow'), { rows: 800, inputShape: [8, 8, 1], classes: 10, seed: 9, unlabelledEvery: 1, firstId: 50000 });
  caches['pool'] = await precompute('conv', 'pool.arrow', { type: 'label' });
}, 120_000);

const base = () => ({
  data: { train: join(root, 'data', 'train.arrow'), test: join(root, 'data', 'test.arrow') },
  out: join(root, 'runs'),
  epochs: 2,
  batchSize: 64,
});
/** The TF.js engine on its wasm backend (the one every machine has). */
const tfjs = { engine: 'tfjs', backend: 'wasm' } as const;

describe('trainer', () => {
  it('KD from a dense cache: metrics.jsonl per epoch, report.html, and an ONNX student matching TF.js within 1e-4', async () => {
    const recipe = parseRecipe({
      ...base(),
      name: 'kd-mlp',
      teachers: [{ cache: caches['dense'] }],
      student: { kind: 'mlp', hidden: [32] },
      distill: { method: 'kd', params: { temperature: 4 } },
      warmupEpochs: 2,
    });
    const open = OrtSession.openSessions;
    const r = await train(recipe);
    expect(r.engine.name).toBe('ort');
    expect(r.backend).toBeUndefined(); // the ORT engine's step, loss included, is its graph: no TF.js
    expect(OrtSession.openSessions).toBe(open); // every session the run made (predict, train steps, export check) released
    const lines = (await readFile(join(r.runDir, 'metrics.jsonl'), 'utf8'))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(lines).toHaveLength(2);
    for (const m of lines) {
      expect(Object.keys(m.loss).sort()).toEqual(['ce', 'kd', 'total']);
      // Fractions, each checked against its range (NaN or a count in place of a fraction fails).
      for (const k of ['testAccuracy', 'agreement', 'ece']) {
        expect(m[k], k).toBeGreaterThanOrEqual(0);
        expect(m[k], k).toBeLessThanOrEqual(1);
      }
      expect(m.testAccuracy).toBeGreaterThan(0.15); // learnable generated data: chance is 0.1
    }
    expect(lines[0].kdWeight).toBe(0.5); // linear warm-up over 2 epochs
    expect(lines[1].kdWeight).toBe(1);
    expect(r.onnx!.maxAbsDiff).toBeLessThanOrEqual(1e-4);
    const html = await readFile(join(r.runDir, 'report.html'), 'utf8');
    expect(html).toMatch(/<svg[^>]*aria-label="Training loss by term"/);
    expect(html).toMatch(/Reliability \(ECE/);
    expect(JSON.parse(await readFile(join(r.runDir, 'recipe.json'), 'utf8')).name).toBe('kd-mlp');
    expect(existsSync(join(r.runDir, 'run.json'))).toBe(true);
    expect(r.test!.accuracy).toBeGreaterThan(0.3); // learnable generated data: chance is 0.1
  });

  it('ort engine: no session outlives its run, and RSS stays bounded over repeated runs', async () => {
    const recipe = parseRecipe({
      ...base(),
      epochs: 1,
      name: 'leak-ort',
      teachers: [{ cache: caches['dense'] }],
      student: { kind: 'mlp', hidden: [32] },
      distill: { method: 'kd' },
    });
    const open = OrtSession.openSessions;
    const rss: number[] = [];
    for (let i = 0; i < 8; i++) {
      await train(recipe, { skipExport: i % 2 === 1 });
      expect(OrtSession.openSessions).toBe(open);
      global.gc?.();
      rss.push(process.memoryUsage().rss);
    }
    // After the first runs have warmed up ORT's arenas and the module caches, five more runs
    // grow RSS by far less than the sessions they made would hold if they leaked.
    expect((rss[7]! - rss[2]!) / 2 ** 20).toBeLessThan(48);
  });

  it('tfjs engine: no tensor outlives its batch', async () => {
    const recipe = parseRecipe({
      ...base(),
      ...tfjs,
      name: 'leak-tfjs',
      teachers: [{ cache: caches['dense'] }],
      student: { kind: 'mlp', hidden: [32] },
      distill: { method: 'dkd' },
    });
    const tensors: number[] = [];
    const r = await train(recipe, { skipExport: true, onEpochEnd: () => tensors.push(tf.memory().numTensors) });
    expect(r.backend?.name).toBe('wasm');
    expect(tensors).toHaveLength(2);
    expect(tensors[1]).toBe(tensors[0]);
  });

  for (const method of METHOD_NAMES) {
    it(`${method}: the loss trained on equals the loss function on the same batch`, async () => {
      // One batch holding every row, and a learning rate too small to move the weights: the
      // reported loss must be the TF.js loss function of the final student's logits over all rows.
      const recipe = parseRecipe({
        ...base(),
        epochs: 1,
        batchSize: 1500,
        name: `m-${method}`,
        teachers: [{ cache: caches['dense'] }],
        student: { kind: 'mlp', hidden: [16] },
        distill: { method },
        weights: { ce: 0, kd: 1 },
        optimizer: { kind: 'adam', lr: 1e-9 },
      });
      const r = await train(recipe);
      const dataset = await DatasetReader.open(recipe.data.train);
      const cache = await LogitCacheReader.open(caches['dense']!);
      const batches = epochBatches(
        [{ dataset, caches: [cache], rows: 1500 }],
        { inputSize: 64, slots: [{ kind: 'dense', classes: 10 }] },
        { batchSize: 1500, shuffleBuffer: 1, seed: 0, shuffle: false },
      );
      const { value: b } = await batches.next();
      await batches.return(undefined);
      const z = await predictRunLogits(r.runDir, b!.x, b!.rows);
      const want = tf.tidy(() => {
        const s = tf.tensor2d(z, [b!.rows, 10]);
        const t = tf.tensor2d(b!.slots[0]!.logits, [b!.rows, 10]);
        const y = tf.tensor1d(b!.labels, 'int32');
        return distillLossEager(recipe.distill, s, t, y).dataSync()[0]!;
      });
      expect(Math.abs(r.metrics[0]!.loss['kd']! - want)).toBeLessThanOrEqual(1e-4 * Math.max(1, Math.abs(want)));
    });
  }

  it('top-k cache uses the top-k loss; the wrong temperature is refused', async () => {
    const r = await train(
      parseRecipe({
        ...base(),
        epochs: 1,
        name: 'topk',
        teachers: [{ cache: caches['topk'] }],
        student: { kind: 'mlp', hidden: [16] },
        distill: { method: 'kd', params: { temperature: 4 } },
      }),
      { skipExport: true },
    );
    expect(Number.isFinite(r.metrics[0]!.loss['kd']!)).toBe(true);
    await expect(
      train(
        parseRecipe({
          ...base(),
          epochs: 1,
          name: 'topk-bad',
          teachers: [{ cache: caches['topk'] }],
          student: { kind: 'mlp', hidden: [16] },
          distill: { method: 'kd', params: { temperature: 2 } },
        }),
      ),
    ).rejects.toThrow(/set distill.params.temperature to 4/);
  });

  it('ort engine: a CNN student trains on the CPU EP and its student.onnx is the trained graph (engine logits within 1e-5)', async () => {
    const cnn = await train(
      parseRecipe({
        ...base(),
        epochs: 2,
        name: 'cnn-ort',
        teachers: [{ cache: caches['dense'] }],
        student: { kind: 'cnn', blocks: [{ filters: 4 }, { filters: 8 }], dense: [16] },
        distill: { method: 'kd' },
        executionProvider: 'cpu',
      }),
    );
    expect(cnn.engine).toMatchObject({ name: 'ort', device: 'cpu' });
    expect(cnn.onnx!.maxRelDiff).toBeLessThanOrEqual(1e-5);
    expect(cnn.metrics[1]!.loss['total']!).toBeLessThan(cnn.metrics[0]!.loss['total']!);
    expect(JSON.parse(await readFile(join(cnn.runDir, 'run.json'), 'utf8')).engine).toMatchObject({ name: 'ort', device: 'cpu' });
  });

  it('ort engine: K steps per session run (an ONNX Loop) train exactly as one step per run', async () => {
    const common = {
      ...base(),
      epochs: 2,
      teachers: [{ cache: caches['dense'] }],
      student: { kind: 'mlp', hidden: [16] },
      distill: { method: 'kd' },
      optimizer: { kind: 'adamw', lr: 0.003, weightDecay: 0.01 },
    };
    const one = await train(parseRecipe({ ...common, name: 'k1', stepsPerRun: 1 }), { skipExport: true });
    const eight = await train(parseRecipe({ ...common, name: 'k8', stepsPerRun: 8 }), { skipExport: true });
    for (const e of [0, 1]) {
      for (const k of ['ce', 'kd', 'total']) expect(eight.metrics[e]!.loss[k]!).toBeCloseTo(one.metrics[e]!.loss[k]!, 5);
      expect(eight.metrics[e]!.testAccuracy).toBeCloseTo(one.metrics[e]!.testAccuracy!, 2);
    }
  });

  it('tfjs engine: CNN and ResNet students export to ONNX and match TF.js (wasm conv gradients included)', async () => {
    const cnn = await train(
      parseRecipe({
        ...base(),
        ...tfjs,
        epochs: 1,
        name: 'cnn',
        teachers: [{ cache: caches['dense'] }],
        student: { kind: 'cnn', blocks: [{ filters: 4 }, { filters: 8 }], dense: [16] },
        distill: { method: 'kd' },
      }),
    );
    expect(cnn.engine.name).toBe('tfjs');
    expect(cnn.onnx!.maxAbsDiff).toBeLessThanOrEqual(1e-4);
    const resnet = await train(parseRecipe({ ...base(), ...tfjs, epochs: 1, name: 'resnet', student: { kind: 'resnet', widths: [4, 8] } }));
    expect(resnet.onnx!.maxAbsDiff).toBeLessThanOrEqual(1e-4);
  });

  it('ort engine: a ResNet (BatchNorm with batch statistics in training, running ones in student.onnx) and an MLP with dropout', async () => {
    const resnet = await train(parseRecipe({ ...base(), epochs: 2, name: 'resnet-ort', student: { kind: 'resnet', widths: [4, 8] } }));
    expect(resnet.engine.name).toBe('ort');
    expect(resnet.metrics[1]!.loss['ce']!).toBeLessThan(resnet.metrics[0]!.loss['ce']!);
    expect(resnet.onnx!.maxRelDiff).toBeLessThanOrEqual(1e-5);
    // With BatchNorm the check allows 1e-4: onnxruntime folds the exported statistics into the convolutions (2.1e-5 seen at full size).
    expect(resnet.onnx!.tolerance).toBe(1e-4);
    const exported = Graph.fromBytes(await readFile(join(resnet.runDir, 'student.onnx')));
    const bn = exported.nodes.filter((n) => n.op === 'BatchNormalization');
    expect(bn.length).toBeGreaterThan(0);
    const movingMean = exported.initializers.get(bn[0]!.inputs[3]!)!.data as Float32Array;
    expect(movingMean.some((v) => v !== 0)).toBe(true); // the running statistics were trained
    const dropout = await train(parseRecipe({ ...base(), epochs: 2, name: 'dropout-ort', student: { kind: 'mlp', hidden: [32], dropout: 0.3 } }));
    expect(dropout.metrics[1]!.loss['ce']!).toBeLessThan(dropout.metrics[0]!.loss['ce']!);
    expect(dropout.onnx!.maxRelDiff).toBeLessThanOrEqual(1e-5); // student.onnx: dropout is the identity
    expect(dropout.onnx!.tolerance).toBe(1e-5);
  });

  it('averages two teachers with the same classes', async () => {
    const r = await train(
      parseRecipe({
        ...base(),
        epochs: 1,
        name: 'two',
        teachers: [{ cache: caches['dense'] }, { cache: caches['linear'] }],
        student: { kind: 'mlp', hidden: [16] },
        distill: { method: 'kd' },
      }),
      { skipExport: true },
    );
    expect(Number.isFinite(r.metrics[0]!.loss['kd']!)).toBe(true);
  });

  it('teachers with different class lists: the student learns the union without labels', async () => {
    const r = await train(
      parseRecipe({
        ...base(),
        epochs: 1,
        name: 'union',
        teachers: [{ cache: caches['a'] }, { cache: caches['b'] }],
        student: { kind: 'mlp', hidden: [16] },
        distill: { method: 'kd', params: { temperature: 2 } },
        weights: { ce: 0, kd: 1 },
      }),
    );
    expect(Object.keys(r.metrics[0]!.loss).sort()).toEqual(['kd', 'total']);
    expect(JSON.parse(await readFile(join(r.runDir, 'run.json'), 'utf8')).classes).toEqual(Array.from({ length: 10 }, (_, i) => `class-${i}`));
    // Left out, union is balanced for disjoint class lists distilled with kd; a recipe can still choose.
    expect(JSON.parse(await readFile(join(r.runDir, 'run.json'), 'utf8')).union).toBe('balanced');
    const subsets = await train(
      parseRecipe({
        ...base(),
        epochs: 1,
        name: 'union-subsets',
        teachers: [{ cache: caches['a'] }, { cache: caches['b'] }],
        student: { kind: 'mlp', hidden: [16] },
        distill: { method: 'kd', params: { temperature: 2 } },
        weights: { ce: 0, kd: 1 },
        union: 'subsets',
      }),
      { skipExport: true },
    );
    expect(JSON.parse(await readFile(join(subsets.runDir, 'run.json'), 'utf8')).union).toBe('subsets');
    expect(r.onnx!.maxAbsDiff).toBeLessThanOrEqual(1e-4);
  });

  it('union: merged distils disjoint teachers through their concatenated logits; refuses overlapping lists and non-KD methods', async () => {
    const common = {
      ...base(),
      epochs: 1,
      teachers: [{ cache: caches['a'] }, { cache: caches['b'] }],
      student: { kind: 'mlp', hidden: [16] },
      weights: { ce: 0, kd: 1 },
      union: 'merged',
    };
    const merged = await train(parseRecipe({ ...common, name: 'merged', distill: { method: 'kd', params: { temperature: 2 } } }), { skipExport: true });
    const subsets = await train(parseRecipe({ ...common, name: 'subsets', union: 'subsets', distill: { method: 'kd', params: { temperature: 2 } } }), {
      skipExport: true,
    });
    expect(merged.metrics[0]!.loss['kd']).toBeGreaterThan(0);
    expect(merged.metrics[0]!.loss['kd']).not.toBeCloseTo(subsets.metrics[0]!.loss['kd']!, 3); // a different objective
    await expect(train(parseRecipe({ ...common, name: 'merged-dkd', distill: { method: 'dkd' } }), { skipExport: true })).rejects.toThrow(
      /merged trains with distill.method kd/,
    );
    await expect(
      train(parseRecipe({ ...common, name: 'merged-overlap', teachers: [{ cache: caches['a'] }, { cache: caches['dense'] }], distill: { method: 'kd' } }), {
        skipExport: true,
      }),
    ).rejects.toThrow(/disjoint class lists/);
  });

  it('union: balanced fits per-class offsets over the caches so the merged teacher gives every class its share; validates unionPrior', async () => {
    const common = {
      ...base(),
      epochs: 1,
      teachers: [{ cache: caches['a'] }, { cache: caches['b'] }],
      student: { kind: 'mlp', hidden: [16] },
      weights: { ce: 0, kd: 1 },
      distill: { method: 'kd', params: { temperature: 2 } },
    };
    const r = await train(parseRecipe({ ...common, name: 'balanced', union: 'balanced' }), { skipExport: true });
    const fit = JSON.parse(await readFile(join(r.runDir, 'run.json'), 'utf8')).unionBalance as {
      classes: string[];
      teacherScales: number[];
      offsets: number[];
      sharesMerged: number[];
      sharesAfter: number[];
      rows: number;
    };
    expect(fit.classes).toEqual(Array.from({ length: 10 }, (_, i) => `class-${i}`));
    expect(fit.rows).toBe(1500);
    // Recompute the shares from the caches themselves with the recorded offsets.
    const { LogitCacheReader } = await import('@distillate/shared');
    const cols: Float32Array[] = [];
    for (const dir of [caches['a']!, caches['b']!]) {
      const reader = await LogitCacheReader.open(dir);
      const parts: number[] = [];
      for await (const b of reader.batches({ temperature: 1 })) if (b.kind === 'dense') parts.push(...b.logits);
      cols.push(Float32Array.from(parts));
    }
    const shares = new Array<number>(10).fill(0);
    const raw = new Array<number>(10).fill(0);
    for (let row = 0; row < 1500; row++) {
      const zr = Array.from({ length: 10 }, (_, k) => (k < 5 ? cols[0]![row * 5 + k]! : cols[1]![row * 5 + k - 5]!));
      const mr = Math.max(...zr);
      const er = zr.map((v) => Math.exp(v - mr));
      const sr = er.reduce((a, v) => a + v, 0);
      er.forEach((v, k) => (raw[k]! += v / sr / 1500));
      const z = Array.from(
        { length: 10 },
        (_, k) => (k < 5 ? cols[0]![row * 5 + k]! * fit.teacherScales[0]! : cols[1]![row * 5 + k - 5]! * fit.teacherScales[1]!) + fit.offsets[k]!,
      );
      const m = Math.max(...z);
      const e = z.map((v) => Math.exp(v - m));
      const sum = e.reduce((a, v) => a + v, 0);
      e.forEach((v, k) => (shares[k]! += v / sum / 1500));
    }
    for (const s of shares) expect(s).toBeCloseTo(0.1, 3);
    raw.forEach((s, k) => expect(fit.sharesMerged[k]!).toBeCloseTo(s, 3)); // what union: merged would have used
    // The scales give both teachers' logits the same spread (the recorded factors are rounded to 1e-4).
    const spread = (v: Float32Array, f: number) => {
      const m = v.reduce((a, x) => a + x, 0) / v.length;
      return f * Math.sqrt(v.reduce((a, x) => a + (x - m) ** 2, 0) / v.length);
    };
    expect(spread(cols[0]!, fit.teacherScales[0]!)).toBeCloseTo(spread(cols[1]!, fit.teacherScales[1]!), 2);
    expect(fit.offsets.some((b) => Math.abs(b) > 0.01)).toBe(true); // these generated teachers are not balanced to begin with
    await expect(train(parseRecipe({ ...common, name: 'prior-len', union: 'balanced', unionPrior: [1, 2, 3] }), { skipExport: true })).rejects.toThrow(
      /unionPrior has 3 shares but the teachers' union has 10 classes/,
    );
    await expect(train(parseRecipe({ ...common, name: 'prior-merged', union: 'merged', unionPrior: [1, 1] }), { skipExport: true })).rejects.toThrow(
      /only used with union: balanced/,
    );
    await expect(
      train(parseRecipe({ ...common, name: 'same-classes', union: 'balanced', teachers: [{ cache: caches['dense'] }, { cache: caches['linear'] }] }), {
        skipExport: true,
      }),
    ).rejects.toThrow(/union: balanced is for teachers with different .* class lists; these share one/);
  });

  it('semi-supervised: labelled rows (CE) mixed with a pseudo-labelled pool (soft or hard targets)', async () => {
    for (const targets of ['soft', 'hard'] as const) {
      const r = await train(
        parseRecipe({
          ...base(),
          epochs: 1,
          name: `semi-${targets}`,
          student: { kind: 'mlp', hidden: [16] },
          distill: { method: 'kd', params: { temperature: 1 } },
          semi: { pool: join(root, 'data', 'pool.arrow'), cache: caches['pool'], threshold: 0.0, targets },
        }),
        { skipExport: true },
      );
      expect(r.metrics[0]!.samplesPerSecond).toBeGreaterThan(0);
      expect(Object.values(r.metrics[0]!.loss).every(Number.isFinite)).toBe(true);
      if (targets === 'soft') expect(r.metrics[0]!.loss['kd']).toBeDefined();
    }
  });

  it('an unlabelled transfer set (KD only) reports no train accuracy rather than 0 %', async () => {
    const data = { train: join(root, 'data', 'pool.arrow'), test: join(root, 'data', 'test.arrow') };
    const r = await train(
      parseRecipe({
        ...base(),
        data,
        epochs: 1,
        name: 'unlabelled',
        teachers: [{ cache: caches['pool'] }],
        student: { kind: 'mlp', hidden: [16] },
        distill: { method: 'kd', params: { temperature: 1 } },
        weights: { ce: 0, kd: 1 },
      }),
      { skipExport: true },
    );
    expect(r.metrics[0]!.trainAccuracy).toBeUndefined();
    expect(r.metrics[0]!.testAccuracy).toBeGreaterThan(0);
    expect(formatEpoch(r.metrics[0]!)).not.toMatch(/train/);
    const logged = JSON.parse((await readFile(join(r.runDir, 'metrics.jsonl'), 'utf8')).trim().split('\n')[0]!);
    expect(logged).not.toHaveProperty('trainAccuracy');
    // The same student on the labelled split does report it.
    const labelled = await train(
      parseRecipe({
        ...base(),
        epochs: 1,
        name: 'labelled',
        teachers: [{ cache: caches['dense'] }],
        student: { kind: 'mlp', hidden: [16] },
        distill: { method: 'kd', params: { temperature: 1 } },
      }),
      { skipExport: true },
    );
    expect(labelled.metrics[0]!.trainAccuracy).toBeGreaterThan(0);
  });

  it('calibration: a temperature fitted on held-out rows is folded into the saved model (logits ÷ τ, same predictions)', async () => {
    const recipe = {
      ...base(),
      epochs: 2,
      teachers: [{ cache: caches['dense'] }],
      student: { kind: 'mlp', hidden: [16] },
      distill: { method: 'kd', params: { temperature: 0.5 } },
      weights: { ce: 0, kd: 1 },
    };
    const plain = await train(parseRecipe({ ...recipe, name: 'uncalibrated' }));
    const cal = await train(parseRecipe({ ...recipe, name: 'calibrated', calibration: { data: join(root, 'data', 'test.arrow') } }));
    const c = cal.calibration!;
    expect(c.rows).toBe(300);
    expect(c.temperature).toBeGreaterThan(0);
    expect(c.temperature).not.toBe(1);
    expect(c.nllAfter).toBeLessThanOrEqual(c.nllBefore);
    expect(JSON.parse(await readFile(join(cal.runDir, 'run.json'), 'utf8')).calibration.temperature).toBe(c.temperature);
    // Same seed, same training: the calibrated model's logits are the other's divided by τ.
    const x = Float32Array.from({ length: 20 * 64 }, (_, i) => Math.abs(Math.sin(i)));
    const a = await predictRunLogits(plain.runDir, x, 20);
    const b = await predictRunLogits(cal.runDir, x, 20);
    let diff = 0;
    for (let i = 0; i < a.length; i++) diff = Math.max(diff, Math.abs(a[i]! / c.temperature - b[i]!));
    expect(diff).toBeLessThan(1e-4);
    expect(cal.test!.accuracy).toBe(plain.test!.accuracy);
    expect(cal.onnx!.maxAbsDiff).toBeLessThan(1e-4); // the exported ONNX carries τ too
    // Calibration data must name the student's classes.
    await writeSyntheticDataset(join(root, 'data', 'five.arrow'), { rows: 50, inputShape: [8, 8, 1], classes: 5 });
    await expect(
      train(parseRecipe({ ...recipe, name: 'bad-cal', calibration: { data: join(root, 'data', 'five.arrow') } }), { skipExport: true }),
    ).rejects.toThrow(/calibration data .* has classes/);
    // A student whose last layer is a softmax cannot be rescaled: refused before training, not after.
    const softmaxStudent = tf.sequential({ layers: [tf.layers.dense({ units: 10, activation: 'softmax', inputShape: [64] })] });
    await saveLayersModel(softmaxStudent, join(root, 'softmax-student'));
    softmaxStudent.dispose();
    const epochs: number[] = [];
    await expect(
      train(
        parseRecipe({
          ...recipe,
          ...tfjs,
          name: 'softmax-cal',
          student: { kind: 'layers', path: join(root, 'softmax-student') },
          calibration: { data: join(root, 'data', 'test.arrow') },
        }),
        { skipExport: true, onEpochEnd: (m) => epochs.push(m.epoch) },
      ),
    ).rejects.toThrow(/calibration: the student's last layer is Dense \(softmax\)/);
    expect(epochs).toEqual([]);
  });

  it('teachers named in the recipe resolve to their cache over this dataset (dense preferred); a missing one says how to build it', async () => {
    const named = { ...base(), epochs: 1, caches: join(root, 'cache'), student: { kind: 'mlp', hidden: [16] } };
    const r = await train(
      parseRecipe({
        ...named,
        name: 'by-name',
        teachers: [{ teacher: 'conv' }],
        distill: { method: 'kd', params: { temperature: 4 } },
        semi: { pool: join(root, 'data', 'pool.arrow'), teacher: 'conv' },
      }),
      { skipExport: true },
    );
    expect(JSON.parse(await readFile(join(r.runDir, 'run.json'), 'utf8')).caches).toEqual([caches['dense'], caches['pool']]);
    await expect(
      train(parseRecipe({ ...named, name: 'nobody', teachers: [{ teacher: 'nobody' }], distill: { method: 'kd' } }), { skipExport: true }),
    ).rejects.toThrow(/no cache of teacher nobody over .*train\.arrow .*distillate-server precompute --teacher nobody/);
    expect(() => parseRecipe({ ...named, name: 'both', semi: { pool: 'p.arrow', teacher: 'conv', cache: 'c' } })).toThrow(/exactly one of cache/);
    // A teacher retrained under the same name leaves two caches: the name no longer says which.
    await writeFile(join(root, 'models', 'retrained.onnx'), linearTeacher(64, 10, 21));
    const first = await precompute('retrained', 'train.arrow');
    await writeFile(join(root, 'models', 'retrained.onnx'), linearTeacher(64, 10, 22));
    const second = await precompute('retrained', 'train.arrow');
    expect(second).not.toBe(first);
    await expect(
      train(parseRecipe({ ...named, name: 'retrained', teachers: [{ teacher: 'retrained' }], distill: { method: 'kd' } }), { skipExport: true }),
    ).rejects.toThrow(/2 different versions of teacher retrained .*remove the stale one/);
  });

  it('online teacher ({ onnx }): the same losses as distilling from its cache, batch for batch', async () => {
    const common = { ...base(), epochs: 1, student: { kind: 'mlp', hidden: [16] }, distill: { method: 'kd', params: { temperature: 4 } } };
    const offline = await train(parseRecipe({ ...common, name: 'offline', teachers: [{ cache: caches['dense'] }] }), { skipExport: true });
    const online = await train(parseRecipe({ ...common, name: 'online', teachers: [{ onnx: join(root, 'models', 'conv.onnx') }] }), { skipExport: true });
    expect(online.metrics[0]!.loss['kd']).toBeGreaterThan(0);
    expect(online.metrics[0]!.loss['kd']).toBeCloseTo(offline.metrics[0]!.loss['kd']!, 5);
    expect(online.test!.accuracy).toBeCloseTo(offline.test!.accuracy, 2);
    expect(() => parseRecipe({ ...common, name: 'x', teachers: [{ onnx: 'a.onnx' }, { cache: 'c' }] })).toThrow(/must be the only teacher/);
    await expect(
      train(parseRecipe({ ...common, name: 'half', teachers: [{ onnx: join(root, 'models', 'half-a.onnx') }] }), { skipExport: true }),
    ).rejects.toThrow(/has 5 classes but the dataset and student have 10/);
  });

  it('self-distillation switches to the student snapshot as teacher', async () => {
    const r = await train(
      parseRecipe({ ...base(), epochs: 2, name: 'self', student: { kind: 'mlp', hidden: [16] }, selfDistill: { fromEpoch: 2, temperature: 2 } }),
      { skipExport: true },
    );
    expect(r.metrics[0]!.loss['kd']).toBeUndefined();
    expect(Number.isFinite(r.metrics[1]!.loss['kd']!)).toBe(true);
    expect(existsSync(join(r.runDir, 'self-cache'))).toBe(true);
  });

  it('self-distillation resumed past fromEpoch keeps distilling from the snapshot taken at fromEpoch', async () => {
    const common = { ...base(), student: { kind: 'mlp', hidden: [16] }, selfDistill: { fromEpoch: 2, temperature: 2 }, schedule: { kind: 'constant' } };
    const straight = await train(parseRecipe({ ...common, epochs: 3, name: 'self-straight' }), { skipExport: true });
    await train(parseRecipe({ ...common, epochs: 2, name: 'self-resume' }), { skipExport: true });
    const r = await train(parseRecipe({ ...common, epochs: 3, name: 'self-resume' }), { resume: true, skipExport: true });
    expect(r.metrics.map((m) => m.epoch)).toEqual([1, 2, 3]);
    expect(r.metrics[2]!.kdWeight).toBe(1);
    expect(r.metrics[2]!.loss['kd']).toBeCloseTo(straight.metrics[2]!.loss['kd']!, 6);
    expect(r.metrics[2]!.loss['total']).toBeCloseTo(straight.metrics[2]!.loss['total']!, 6);
  });

  it('--resume continues from the checkpoint, optimizer state included: 1 epoch + resume = 2 epochs straight', async () => {
    const common = {
      ...base(),
      student: { kind: 'mlp', hidden: [16] },
      teachers: [{ cache: caches['dense'] }],
      distill: { method: 'kd' },
      schedule: { kind: 'constant' },
    };
    const straight = await train(parseRecipe({ ...common, epochs: 2, name: 'straight' }), { skipExport: true });
    await train(parseRecipe({ ...common, epochs: 1, name: 'resume' }), { skipExport: true });
    const r = await train(parseRecipe({ ...common, epochs: 2, name: 'resume' }), { resume: true, skipExport: true });
    expect(r.metrics.map((m) => m.epoch)).toEqual([1, 2]);
    // Same data order (seeded per epoch), same weights and Adam moments: the same second epoch.
    expect(r.metrics[1]!.loss['total']).toBeCloseTo(straight.metrics[1]!.loss['total']!, 6);
    expect(r.test!.accuracy).toBe(straight.test!.accuracy);
    const dirs = (await readdir(join(root, 'runs', 'resume'))).filter((d) => d.startsWith('checkpoint'));
    expect(dirs.sort()).toEqual(['checkpoint-2', 'checkpoint.json']);
  });

  it('bad input: a cache from another dataset, a class-count mismatch, a NaN loss — clear errors, no success marker', async () => {
    await writeSyntheticDataset(join(root, 'data', 'other.arrow'), { rows: 1500, inputShape: [8, 8, 1], classes: 10, seed: 42 });
    await expect(
      train(
        parseRecipe({
          ...base(),
          name: 'wrong-data',
          data: { train: join(root, 'data', 'other.arrow') },
          teachers: [{ cache: caches['dense'] }],
          student: { kind: 'mlp' },
          distill: { method: 'kd' },
        }),
      ),
    ).rejects.toThrow(/was built from dataset .*, not .*other\.arrow/);
    await writeSyntheticDataset(join(root, 'data', 'five.arrow'), { rows: 200, inputShape: [8, 8, 1], classes: 5 });
    await expect(
      train(
        parseRecipe({
          ...base(),
          name: 'wrong-classes',
          data: { train: join(root, 'data', 'five.arrow') },
          teachers: [{ cache: caches['dense'] }],
          student: { kind: 'mlp' },
          distill: { method: 'kd' },
        }),
      ),
    ).rejects.toThrow(TrainingError);
    const nan = train(parseRecipe({ ...base(), name: 'nan', student: { kind: 'mlp', hidden: [16] }, optimizer: { kind: 'sgd', lr: 1e30, momentum: 0.9 } }), {
      skipExport: true,
    });
    await expect(nan).rejects.toThrow(/loss term "(ce|total)" became (NaN|Infinity)/);
    expect(existsSync(join(root, 'runs', 'nan', 'run.json'))).toBe(false);
  });
});
