/**
 * Feature capture through the cache (issue #23): a torch.onnx.export'ed CNN as the teacher,
 * the Fashion-MNIST test split, intermediate tensors stored next to the logits. The stored
 * values must equal the tensors PyTorch computes from the same ONNX weights on the same images
 * (tests/fixtures/torch-cnn.features.json, scripts/teachers/feature_reference.py) within the
 * stored precision; the key changes with the feature spec; bad names and shapes are refused in
 * one line before any row runs.
 */
import { spawnSync } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  FASHION_MNIST_CLASSES,
  FASHION_MNIST_DEBIAN_DIR,
  FASHION_MNIST_FILES,
  LogitCacheReader,
  importIdxPair,
  listCaches,
  splitLabelled,
  verifyCache,
  type CacheManifest,
} from '@distillate/shared';
import { TeacherRegistry, type Teacher } from '@distillate/shared/onnx';
import { precomputeLogits, type PrecomputeOptions } from '@distillate/server';
import { parseRecipe, train } from '@distillate/trainer';
import { Graph } from '@distillate/shared/onnx';
import { REPO, runTs } from './helpers/cli.js';
import { FASHION_MNIST_PACKAGE, skipUnless, titled } from './helpers/system.js';

const skip = skipUnless(FASHION_MNIST_PACKAGE);
const reference = JSON.parse(await readFile(join(REPO, 'tests/fixtures/torch-cnn.features.json'), 'utf8')) as Record<string, number[][]> & { rows: number };

let root: string;
let teacher: Teacher;

async function precompute(
  features: PrecomputeOptions['request']['features'],
  storage: PrecomputeOptions['request']['storage'] = { mode: 'dense', dtype: 'float32' },
) {
  const r = await precomputeLogits({
    teacher,
    datasetPath: join(root, 'data', 'test.arrow'),
    cacheRoot: join(root, 'cache'),
    request: { type: 'precompute', temperature: 1, storage, batchSize: 256, ...(features === undefined ? {} : { features }) },
  });
  return { key: r.key, dir: join(root, 'cache', r.key) };
}

/** The first `reference.rows` rows of each stored feature, and of the logits. */
async function firstRows(dir: string): Promise<{ manifest: CacheManifest; logits: Float32Array; features: Float32Array[] }> {
  const reader = await LogitCacheReader.open(dir);
  for await (const b of reader.batches()) {
    if (b.kind !== 'dense') throw new Error('dense expected');
    const C = b.logits.length / b.rows;
    return {
      manifest: reader.manifest,
      logits: b.logits.subarray(0, reference.rows * C),
      features: (b.features ?? []).map((f) => f.subarray(0, (reference.rows * f.length) / b.rows)),
    };
  }
  throw new Error('empty cache');
}

/** Largest |got − want| / max(1, |want|). */
function worst(got: Float32Array, want: number[][]): number {
  const flat = want.flat();
  expect(got.length).toBe(flat.length);
  return flat.reduce((m, v, i) => Math.max(m, Math.abs(got[i]! - v) / Math.max(1, Math.abs(v))), 0);
}

beforeAll(async () => {
  if (skip !== undefined) return;
  root = await mkdtemp(join(tmpdir(), 'distillate-features-'));
  for (const d of ['models', 'data']) await mkdir(join(root, d));
  for (const ext of ['onnx', 'json']) await copyFile(join(REPO, `tests/fixtures/torch-cnn.${ext}`), join(root, 'models', `torch-cnn.${ext}`));
  const { images, labels } = FASHION_MNIST_FILES.test;
  await importIdxPair({
    images: join(FASHION_MNIST_DEBIAN_DIR, images),
    labels: join(FASHION_MNIST_DEBIAN_DIR, labels),
    out: join(root, 'data', 'test.arrow'),
    classes: FASHION_MNIST_CLASSES,
  });
  teacher = (await TeacherRegistry.open(join(root, 'models'))).get('torch-cnn');
}, 120_000);

describe.skipIf(skip !== undefined)(titled('feature capture', skip), () => {
  it('stores the tensors PyTorch computes from the same weights: float32 to 1e-5, float16 to its rounding; pooled as adaptive pooling does', async () => {
    const { dir } = await precompute([
      { tensor: '/Relu_output_0', pool: 'avg', dtype: 'float32' },
      { tensor: '/Relu_output_0', pool: 'max', grid: [3, 3], dtype: 'float16' },
      { tensor: '/Relu_output_0', pool: 'avg', grid: [3, 3], dtype: 'float32' },
      { tensor: '/MaxPool_output_0', dtype: 'float16' },
    ]);
    const { manifest, logits, features } = await firstRows(dir);
    expect(manifest.features).toEqual([
      { tensor: '/Relu_output_0', pool: 'avg', dtype: 'float32', source: [3, 28, 28], shape: [3] },
      { tensor: '/Relu_output_0', pool: 'max', grid: [3, 3], dtype: 'float16', source: [3, 28, 28], shape: [3, 3, 3] },
      { tensor: '/Relu_output_0', pool: 'avg', grid: [3, 3], dtype: 'float32', source: [3, 28, 28], shape: [3, 3, 3] },
      { tensor: '/MaxPool_output_0', pool: 'none', dtype: 'float16', source: [3, 14, 14], shape: [3, 14, 14] },
    ]);
    expect(worst(logits, reference['logits']!)).toBeLessThan(1e-5);
    expect(worst(features[0]!, reference['relu_avg']!)).toBeLessThan(1e-5);
    expect(worst(features[1]!, reference['relu_max_grid_3x3']!)).toBeLessThan(1e-3);
    expect(worst(features[2]!, reference['relu_avg_grid_3x3']!)).toBeLessThan(1e-5);
    expect(worst(features[3]!, reference['maxpool']!)).toBeLessThan(1e-3);
    // Not a tolerance that hides a wrong layout: another image's values are far off.
    expect(worst(features[3]!.subarray(3 * 14 * 14), reference['maxpool']!.slice(0, reference.rows - 1))).toBeGreaterThan(0.05);
    expect((await verifyCache(dir)).ok).toBe(true);
    // avg-pooled penultimate features: 3 channels × 4 B here; the bytes per image are in BENCHMARKS.md.
  }, 120_000);

  it('the key covers the feature spec: each variant its own cache, a logit-only one without features', async () => {
    const plain = await precompute(undefined);
    const keys = new Set<string>([plain.key]);
    for (const f of [
      [{ tensor: '/Relu_output_0', pool: 'avg' as const }],
      [{ tensor: '/Relu_output_0', pool: 'max' as const }],
      [{ tensor: '/Relu_output_0', pool: 'avg' as const, dtype: 'float32' as const }],
      [{ tensor: '/Relu_output_0', pool: 'avg' as const, grid: [2, 2] as [number, number] }],
      [{ tensor: '/MaxPool_output_0', pool: 'avg' as const }],
    ])
      keys.add((await precompute(f)).key);
    expect(keys.size).toBe(6);
    const manifest = JSON.parse(await readFile(join(plain.dir, 'manifest.json'), 'utf8')) as CacheManifest;
    expect(manifest.features).toBeUndefined();
  }, 180_000);

  it('refuses in one line, before any row runs: an unknown name (with the closest names), a pooling its shape cannot take (naming the shape)', () => {
    const cli = (feature: string) =>
      spawnSync(
        process.execPath,
        [
          '--conditions=source',
          '--import',
          'tsx',
          join(REPO, 'server/src/bin.ts'),
          'precompute',
          '--models',
          join(root, 'models'),
          '--data',
          join(root, 'data'),
          '--cache',
          join(root, 'cache-cli'),
          '--teacher',
          'torch-cnn',
          '--dataset',
          'test.arrow',
          '--feature',
          feature,
        ],
        { cwd: REPO, encoding: 'utf8' },
      );
    const typo = cli('/Relu_outptu_0,pool=avg');
    expect(typo.status).not.toBe(0);
    expect(typo.stderr.trim().split('\n')).toHaveLength(1);
    expect(typo.stderr).toMatch(/has no tensor "\/Relu_outptu_0"; the closest: \/Relu_output_0 \[3, 28, 28\]/);
    const flat = cli('/Flatten_output_0,pool=avg,grid=2x2');
    expect(flat.status).not.toBe(0);
    expect(flat.stderr.trim().split('\n')).toHaveLength(1);
    expect(flat.stderr).toMatch(/pool avg needs a \[C, H, W\] map .*the tensor is \[588\] per sample/);
    const fine = cli('/Relu_output_0,pool=avg,grid=40x40');
    expect(fine.stderr).toMatch(/grid \[40, 40\] is finer than the map \[3, 28, 28\]/);
  }, 60_000);

  it("trains a CNN student, and a torch.onnx.export'ed one, by KD plus hints from the cached features (AT, FitNets, embedding); student.onnx leaves the hint heads out", async () => {
    const ls0 = (await TeacherRegistry.open(join(REPO, 'models'))).get('fmnist-teacher-ls0');
    const r = await precomputeLogits({
      teacher: ls0,
      datasetPath: join(root, 'data', 'test.arrow'),
      cacheRoot: join(root, 'cache-ls0'),
      request: {
        type: 'precompute',
        temperature: 1,
        storage: { mode: 'dense', dtype: 'float16' },
        batchSize: 256,
        features: [{ tensor: '/Relu_2_output_0' }, { tensor: '/MaxPool_1_output_0' }, { tensor: '/Relu_3_output_0' }],
      },
    });
    await ls0.release();
    const cache = join(root, 'cache-ls0', r.key);
    // The built-in CNN's tensors: maxpool_11 [16, 14, 14], maxpool_19 [32, 7, 7], relu_27 [48] (the penultimate layer).
    const recipe = (name: string, hints: unknown[]) =>
      parseRecipe({
        name,
        out: join(root, 'runs'),
        data: { train: join(root, 'data', 'test.arrow') },
        teachers: [{ cache }],
        student: { kind: 'cnn', blocks: [{ filters: 16 }, { filters: 32 }], dense: [48] },
        distill: { method: 'kd', params: { temperature: 2 }, hints },
        epochs: 2,
        batchSize: 128,
        seed: 1,
      });
    const run = await train(
      recipe('hints', [
        { student: 'maxpool_11', teacher: '/Relu_2_output_0', loss: 'at', weight: 100 },
        { student: 'maxpool_19', teacher: '/MaxPool_1_output_0', loss: 'fitnets', weight: 0.1 },
        { student: 'relu_27', teacher: '/Relu_3_output_0', loss: 'embed', params: { distance: 'cosine' } },
      ]),
    );
    for (const term of ['hint_0', 'hint_1', 'hint_2', 'kd']) {
      expect(run.metrics[1]!.loss[term]!, term).toBeLessThan(run.metrics[0]!.loss[term]!);
      expect(run.metrics[1]!.loss[term]!, term).toBeGreaterThan(0);
    }
    expect(run.onnx!.maxRelDiff).toBeLessThanOrEqual(1e-5);
    const exported = Graph.fromBytes(await readFile(join(run.runDir, 'student.onnx')));
    expect(exported.outputs.map((o) => o.name)).toEqual(['logits']);
    expect([...exported.initializers.keys()].some((n) => n.startsWith('hint'))).toBe(false);
    // The parameters reported are the student's own (what student.onnx holds), not the regressors'.
    expect(run.parameters).toBe([...exported.initializers.values()].reduce((n, i) => n + (i.data instanceof Float32Array ? i.data.length : 0), 0));
    expect(exported.nodes.some((n) => n.outputs.some((o) => o.startsWith('hint_')))).toBe(false);

    // Any ONNX student: the torch.onnx.export'ed CNN's own tensor names are its hint points (NCHW maps, no renaming).
    const torchStudent = await train(
      parseRecipe({
        name: 'torch-student-at',
        out: join(root, 'runs'),
        data: { train: join(root, 'data', 'test.arrow') },
        teachers: [{ cache }],
        student: { kind: 'onnx', path: join(REPO, 'tests/fixtures/torch-cnn.onnx') },
        distill: { method: 'kd', params: { temperature: 2 }, hints: [{ student: '/MaxPool_output_0', teacher: '/Relu_2_output_0', loss: 'at', weight: 100 }] },
        epochs: 2,
        batchSize: 128,
        seed: 1,
      }),
    );
    expect(torchStudent.metrics[1]!.loss['hint_0']!).toBeLessThan(torchStudent.metrics[0]!.loss['hint_0']!);
    expect(Graph.fromBytes(await readFile(join(torchStudent.runDir, 'student.onnx'))).outputs.map((o) => o.name)).toEqual(['logits']);

    // Refused in one line before training: an unknown student tensor, shapes that cannot match, a feature the cache does not hold.
    await expect(train(recipe('typo', [{ student: 'maxpool_12', teacher: '/Relu_2_output_0', loss: 'at' }]))).rejects.toThrow(
      /hint student maxpool_12: the student has no such tensor; the closest: maxpool_11 \[16, 14, 14\]/,
    );
    await expect(train(recipe('spatial', [{ student: 'maxpool_19', teacher: '/Relu_2_output_0', loss: 'at' }]))).rejects.toThrow(
      /student maxpool_19 is \[32, 7, 7\] per sample, teacher \/Relu_2_output_0 \[64, 14, 14\]: the spatial sizes differ/,
    );
    await expect(train(recipe('absent', [{ student: 'relu_27', teacher: '/f1/Gemm_output_0', loss: 'embed' }]))).rejects.toThrow(
      /hint teacher \/f1\/Gemm_output_0: cache .* stores \/Relu_2_output_0 \[64, 14, 14\], \/MaxPool_1_output_0 \[64, 7, 7\], \/Relu_3_output_0 \[256\]/,
    );
  }, 300_000);

  it('a label job stores features too (distillate-server label --feature); a semi-supervised run reads the hint from the labelled cache and the pool’s, and refuses a pool that stored it otherwise', async () => {
    // 600 labelled images (60 per class) and a pool of the other 9,400 of the test split.
    await splitLabelled(join(root, 'data', 'test.arrow'), { perClass: 60, labelled: join(root, 'data', 'l600.arrow'), pool: join(root, 'data', 'pool.arrow') });
    await copyFile(join(REPO, 'models/fmnist-teacher-ls0.onnx'), join(root, 'models', 'ls0.onnx'));
    await copyFile(join(REPO, 'models/fmnist-teacher-ls0.json'), join(root, 'models', 'ls0.json'));
    const job = (command: 'precompute' | 'label', dataset: string, features: string[]) => {
      const r = runTs('server/src/bin.ts', [
        command,
        ...['--models', join(root, 'models'), '--data', join(root, 'data'), '--cache', join(root, 'cache-semi')],
        ...['--teacher', 'ls0', '--dataset', dataset, '--dtype', 'float16'],
        ...features.flatMap((f) => ['--feature', f]),
      ]);
      expect(r.status, r.stderr).toBe(0);
    };
    // The pool's label cache holds the hint's feature second, the labelled set's first: each source reads its own index.
    job('precompute', 'l600.arrow', ['/Relu_3_output_0']);
    job('label', 'pool.arrow', ['/MaxPool_1_output_0,pool=avg', '/Relu_3_output_0']);
    const label = (await listCaches(join(root, 'cache-semi'))).find((c) => c.manifest.labelStatistics)!;
    expect(label.manifest.features?.map((f) => [f.tensor, f.shape])).toEqual([
      ['/MaxPool_1_output_0', [64]],
      ['/Relu_3_output_0', [256]],
    ]);
    expect((await verifyCache(join(root, 'cache-semi', label.key))).ok).toBe(true);

    const semi = (name: string) =>
      parseRecipe({
        name,
        out: join(root, 'runs'),
        data: { train: join(root, 'data', 'l600.arrow') },
        teachers: [{ teacher: 'ls0' }],
        semi: { pool: join(root, 'data', 'pool.arrow'), teacher: 'ls0', threshold: 0, targets: 'soft' },
        caches: join(root, 'cache-semi'),
        student: { kind: 'cnn', blocks: [{ filters: 8 }, { filters: 16 }], dense: [32] },
        distill: {
          method: 'kd',
          params: { temperature: 1 },
          hints: [{ student: 'relu_27', teacher: '/Relu_3_output_0', loss: 'embed', params: { distance: 'cosine' } }],
        },
        weights: { ce: 0.1, kd: 1 },
        epochs: 2,
        batchSize: 128,
        seed: 1,
      });
    const run = await train(semi('semi-embed'));
    expect(run.metrics[1]!.loss['hint_0']!).toBeLessThan(run.metrics[0]!.loss['hint_0']!);
    expect(run.metrics[1]!.loss['hint_0']!).toBeGreaterThan(0);

    // A pool cache that stored the hint's map pooled otherwise (a 1×1 grid, not a plain average) is refused naming both.
    job('precompute', 'l600.arrow', ['/MaxPool_1_output_0,pool=avg']);
    job('label', 'pool.arrow', ['/MaxPool_1_output_0,pool=avg,grid=1x1']);
    const mapHint = parseRecipe({
      ...semi('semi-mismatch'),
      distill: { method: 'kd', params: { temperature: 1 }, hints: [{ student: 'relu_27', teacher: '/MaxPool_1_output_0', loss: 'embed' }] },
    });
    await expect(train(mapHint)).rejects.toThrow(
      /hint teacher \/MaxPool_1_output_0: cache .* stores it as \[64, 1, 1\] \(pool avg, grid 1×1\), the first teacher cache as \[64\] \(pool avg\)/,
    );
  }, 300_000);
});
