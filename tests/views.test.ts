/**
 * View caches end to end on real parts: a precompute job over HTTP stores K augmented views of
 * Fashion-MNIST images with the shipped teacher's logits for each; replaying a view (shared
 * transform on the stored image) and running the teacher on it online gives the cached logits;
 * the key follows the view spec; bad specs are refused; a student trains from the view cache.
 */
import { copyFile, mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  DatasetReader,
  FASHION_MNIST_CLASSES,
  FASHION_MNIST_DEBIAN_DIR,
  FASHION_MNIST_FILES,
  LogitCacheReader,
  ViewSpecSchema,
  alignDatasetWithViewCaches,
  headDataset,
  importIdxPair,
  verifyCache,
} from '@distillate/shared';
import { resolveCacheDir } from '@distillate/trainer';
import { TeacherRegistry, datasetPreprocessor } from '@distillate/shared/onnx';
import { resolveConfig, startServer, type RunningServer } from '@distillate/server';
import { REPO, runTs } from './helpers/cli.js';
import { FASHION_MNIST_PACKAGE, skipUnless, titled } from './helpers/system.js';

const skip = skipUnless(FASHION_MNIST_PACKAGE);

const TEACHER = 'fmnist-teacher';
const VIEWS = { count: 4, seed: 7, augment: { shift: 2, flip: true } };
let root: string;
let server: RunningServer;

async function call(path: string, body?: unknown): Promise<{ status: number; body: any }> {
  const res = await fetch(
    `${server.url}${path}`,
    body === undefined ? {} : { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) },
  );
  return { status: res.status, body: await res.json() };
}

async function run(request: object): Promise<any> {
  const created = await call('/v1/jobs', { type: 'precompute', teacher: TEACHER, dataset: 'test-600.arrow', ...request });
  expect(created.status, JSON.stringify(created.body)).toBe(202);
  for (;;) {
    const j = (await call(`/v1/jobs/${created.body.id}`)).body;
    if (['succeeded', 'failed', 'canceled'].includes(j.state)) return j;
    await new Promise((r) => setTimeout(r, 50));
  }
}

beforeAll(async () => {
  if (skip !== undefined) return;
  root = await mkdtemp(join(tmpdir(), 'distillate-views-'));
  for (const d of ['models', 'data', 'cache']) await mkdir(join(root, d));
  for (const f of [`${TEACHER}.onnx`, `${TEACHER}.json`]) await copyFile(join(REPO, 'models', f), join(root, 'models', f));
  const { images, labels } = FASHION_MNIST_FILES.test;
  await importIdxPair({
    images: join(FASHION_MNIST_DEBIAN_DIR, images),
    labels: join(FASHION_MNIST_DEBIAN_DIR, labels),
    out: join(root, 'data', 'test.arrow'),
    classes: FASHION_MNIST_CLASSES,
  });
  await headDataset(join(root, 'data', 'test.arrow'), join(root, 'data', 'test-600.arrow'), 600);
  server = await startServer(
    resolveConfig({ models: join(root, 'models'), data: join(root, 'data'), cache: join(root, 'cache'), port: 0, logLevel: 'silent', shardRows: 1000 }, {}),
  );
}, 60_000);

afterAll(async () => {
  await server?.close();
});

describe.skipIf(skip !== undefined)(titled('view caches', skip), () => {
  it('store K views per image; the teacher run online on a replayed view gives the cached logits (1e-5)', async () => {
    const job = await run({ temperature: 2, views: VIEWS });
    expect(job.state, JSON.stringify(job)).toBe('succeeded');
    const dir = join(root, 'cache', job.cacheKey);
    expect((await verifyCache(dir)).ok).toBe(true);
    const cache = await LogitCacheReader.open(dir);
    expect(cache.manifest.views).toEqual(VIEWS);
    expect(cache.shardOffsets().at(-1)).toBe(600 * 4);
    expect(cache.shardOffsets().every((o) => o % 4 === 0)).toBe(true);

    const registry = await TeacherRegistry.open(join(root, 'models'), { provider: 'cpu' });
    const teacher = registry.get(TEACHER);
    const { info } = await teacher.load();
    const dataset = await DatasetReader.open(join(root, 'data', 'test-600.arrow'));
    const pre = datasetPreprocessor(dataset.info, info, teacher.sidecar);
    let rows = 0;
    let worst = 0;
    for await (const b of alignDatasetWithViewCaches(dataset, [cache], { viewSeed: 3 })) {
      const online = await teacher.logits(pre.apply(b.inputs, b.rows), b.rows);
      const t = b.teachers[0]!;
      if (t.kind !== 'dense') throw new Error('dense expected');
      for (let i = 0; i < online.length; i++) worst = Math.max(worst, Math.abs(t.logits[i]! * 2 - online[i]!) / Math.max(1, Math.abs(online[i]!)));
      rows += b.rows;
    }
    expect(rows).toBe(600);
    expect(worst).toBeLessThan(1e-5);
    await registry.releaseAll();
  });

  it('key the cache by the view spec; the same spec again is a cache hit', async () => {
    const a = await run({ temperature: 2, views: VIEWS });
    expect(a.cacheHit).toBe(true);
    const b = await run({ temperature: 2, views: { ...VIEWS, seed: 8 } });
    const c = await run({ temperature: 2 });
    expect(new Set([a.cacheKey, b.cacheKey, c.cacheKey]).size).toBe(3);
  });

  it('refuse bad view specs with a 400 naming the field', async () => {
    for (const [views, pattern] of [
      [{ count: -1, seed: 0, augment: {} }, /views\.count/],
      [{ count: 4, seed: 0, augment: { rotate: 10 } }, /rotate/],
      [{ count: 4, seed: 0, augment: { shift: -2 } }, /views\.augment\.shift/],
    ] as const) {
      const r = await call('/v1/jobs', { type: 'precompute', teacher: TEACHER, dataset: 'test-600.arrow', views });
      expect(r.status).toBe(400);
      expect(r.body.error.message).toMatch(pattern);
    }
    const label = await call('/v1/jobs', { type: 'label', teacher: TEACHER, dataset: 'test-600.arrow', views: VIEWS });
    expect(label.status).toBe(400);
    expect(label.body.error.message).toMatch(/precompute jobs only/);
  });

  it('are found by teacher name only when the recipe gives the same view spec', async () => {
    const dataset = await DatasetReader.open(join(root, 'data', 'test-600.arrow'));
    const cacheRoot = join(root, 'cache');
    const viewed = await resolveCacheDir({ teacher: TEACHER, views: ViewSpecSchema.parse({ ...VIEWS }) }, cacheRoot, dataset);
    expect((await LogitCacheReader.open(viewed)).manifest.views).toEqual(VIEWS);
    const plain = await resolveCacheDir({ teacher: TEACHER }, cacheRoot, dataset);
    expect((await LogitCacheReader.open(plain)).manifest.views).toBeUndefined();
    await expect(resolveCacheDir({ teacher: TEACHER, views: ViewSpecSchema.parse({ ...VIEWS, count: 5 }) }, cacheRoot, dataset)).rejects.toThrow(
      /--views 5 --view-seed 7 --shift 2 --flip/,
    );
  });

  it('train a student from a view cache (one view per image per epoch)', async () => {
    const job = await run({ temperature: 1, views: VIEWS });
    const recipe = join(root, 'views.yaml');
    await writeFile(
      recipe,
      [
        'name: views',
        `data: { train: ${join(root, 'data', 'test-600.arrow')}, test: ${join(root, 'data', 'test-600.arrow')} }`,
        `teachers: [{ cache: ${join(root, 'cache', job.cacheKey)} }]`,
        'student: { kind: mlp, hidden: [32] }',
        'distill: { method: kd, params: { temperature: 1 } }',
        'weights: { ce: 0, kd: 1 }',
        'optimizer: { kind: adam, lr: 0.003 }',
        'epochs: 2',
        'batchSize: 64',
      ].join('\n'),
    );
    const r = runTs('trainer/src/bin.ts', ['--recipe', recipe, '--out', join(root, 'out')]);
    expect(r.status, r.stderr).toBe(0);
  });
  it('train a student with the teacher online on fresh views (augment); augment with cached logits is refused in one line', async () => {
    const recipe = (name: string, teacher: string): string[] => [
      `name: ${name}`,
      `data: { train: ${join(root, 'data', 'test-600.arrow')}, test: ${join(root, 'data', 'test-600.arrow')} }`,
      `teachers: [${teacher}]`,
      'student: { kind: mlp, hidden: [32] }',
      'distill: { method: kd, params: { temperature: 1 } }',
      'weights: { ce: 0, kd: 1 }',
      'augment: { shift: 2, flip: true }',
      'epochs: 2',
      'batchSize: 64',
    ];
    const online = join(root, 'online.yaml');
    await writeFile(online, recipe('online-views', `{ onnx: ${join(root, 'models', `${TEACHER}.onnx`)} }`).join('\n'));
    const ok = runTs('trainer/src/bin.ts', ['--recipe', online, '--out', join(root, 'out')]);
    expect(ok.status, ok.stderr).toBe(0);
    const cached = join(root, 'cached.yaml');
    await writeFile(
      cached,
      recipe('cached-views', `{ teacher: ${TEACHER} }`)
        .concat(`caches: ${join(root, 'cache')}`)
        .join('\n'),
    );
    const refused = runTs('trainer/src/bin.ts', ['--recipe', cached, '--out', join(root, 'out')]);
    expect(refused.status).not.toBe(0);
    expect(refused.stderr.trim().split('\n')).toHaveLength(1);
    expect(refused.stderr).toMatch(/augment draws fresh views each epoch, but cached logits belong to the clean images/);
  });
});
