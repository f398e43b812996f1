/** `distillate-server precompute|label` run in-process (no HTTP), as a user runs them. */
import { mkdir, mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runTs } from './helpers/cli.js';
import { beforeAll, describe, expect, it } from 'vitest';
import { listCaches, verifyCache, writeSyntheticDataset } from '@distillate/shared';
import { writeTeachers } from './helpers/teachers.js';

let root: string;

function cli(args: string[]) {
  return runTs('server/src/bin.ts', args);
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'distillate-cli-'));
  for (const d of ['models', 'data']) await mkdir(join(root, d));
  await writeTeachers(join(root, 'models'));
  await writeSyntheticDataset(join(root, 'data', 'train.arrow'), { rows: 2000, inputShape: [8, 8, 1], classes: 10 });
});

describe('distillate-server CLI', () => {
  const dirs = () => ['--models', join(root, 'models'), '--data', join(root, 'data'), '--cache', join(root, 'cache')];

  it('precompute writes a verified cache; running it again is a cache hit', () => {
    const r = cli([
      'precompute',
      ...dirs(),
      '--teacher',
      'conv',
      '--dataset',
      'train.arrow',
      '--temperature',
      '4',
      '--storage',
      'topk',
      '--k',
      '5',
      '--dtype',
      'float16',
    ]);
    expect(r.stderr).not.toMatch(/distillate-server:/);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/wrote cache [0-9a-f]{64} \(2000 rows\)/);
    const again = cli([
      'precompute',
      ...dirs(),
      '--teacher',
      'conv',
      '--dataset',
      'train.arrow',
      '--temperature',
      '4',
      '--storage',
      'topk',
      '--k',
      '5',
      '--dtype',
      'float16',
    ]);
    expect(again.status).toBe(0);
    expect(again.stdout).toMatch(/cache hit/);
  });

  it('label writes pseudo-label statistics and the selection', async () => {
    const r = cli(['label', ...dirs(), '--teacher', 'conv', '--dataset', 'train.arrow', '--threshold', '0.2', '--output', 'picked.arrow']);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/selected \d+ rows → picked\.arrow/);
    const caches = await listCaches(join(root, 'cache'));
    const labelled = caches.find((c) => c.manifest.labelStatistics);
    expect(labelled).toBeDefined();
    expect((await verifyCache(labelled!.dir)).ok).toBe(true);
  });

  it('bad input exits 1 with one line naming the cause', () => {
    const unknown = cli(['precompute', ...dirs(), '--teacher', 'nope', '--dataset', 'train.arrow']);
    expect(unknown.status).toBe(1);
    expect(unknown.stderr.trim()).toMatch(/^distillate-server: unknown_teacher: no teacher named "nope"/);
    const escape = cli(['precompute', ...dirs(), '--teacher', 'conv', '--dataset', '../../etc/passwd']);
    expect(escape.status).toBe(1);
    expect(escape.stderr.trim().split('\n')).toHaveLength(1);
    expect(escape.stderr).toMatch(/path_outside_root/);
  });

  it("tensors lists the shipped teacher's per-sample tensors (the --json lines), and an unknown teacher exits 1 in one line", () => {
    const r = cli(['tensors', '--teacher', 'fmnist-teacher', '--models', 'models', '--json']);
    expect(r.status, r.stderr).toBe(0);
    const tensors = r.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    // The shipped CNN teacher (models/README.md): the second pooled map and the penultimate layer, where hints come from.
    expect(tensors.find((t) => t.op === 'MaxPool' && t.shape.join() === '64,7,7')).toBeDefined();
    expect(tensors.at(-1)).toEqual({ name: 'logits', op: 'Gemm', dtype: 'float32', shape: [10], elements: 10, output: true });
    expect(tensors.filter((t) => t.output)).toHaveLength(1);
    const table = cli(['tensors', '--teacher', 'fmnist-teacher', '--models', 'models']);
    expect(table.stdout.split('\n')[0]).toMatch(/^tensor\s+op\s+dtype\s+shape per sample\s+values/);
    const unknown = cli(['tensors', '--teacher', 'nope', '--models', 'models']);
    expect(unknown.status).toBe(1);
    expect(unknown.stderr.trim().split('\n')).toHaveLength(1);
    expect(unknown.stderr).toMatch(/unknown_teacher: no teacher named "nope"/);
  });
});
