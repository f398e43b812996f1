/** distillate-train as a user runs it: a YAML recipe, overrides, exit codes. */
import { existsSync } from 'node:fs';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runTs } from './helpers/cli.js';
import { beforeAll, describe, expect, it } from 'vitest';
import { writeSyntheticDataset } from '@distillate/shared';
import { Graph } from '@distillate/shared/onnx';

let root: string;

function cli(args: string[]) {
  return runTs('trainer/src/bin.ts', args);
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'distillate-train-cli-'));
  await writeSyntheticDataset(join(root, 'train.arrow'), { rows: 600, inputShape: [8, 8, 1], classes: 10 });
  await writeFile(
    join(root, 'scratch.yaml'),
    `name: cli-scratch
data: { train: ${join(root, 'train.arrow')}, test: ${join(root, 'train.arrow')} }
student: { kind: mlp, hidden: [32, 16] }
epochs: 3
batchSize: 64
out: ${join(root, 'runs')}
`,
  );
});

describe('distillate-train CLI', () => {
  it('trains with overrides applied before the recipe is frozen (ORT engine by default, TF.js on request)', () => {
    const r = cli(['--recipe', join(root, 'scratch.yaml'), '--epochs', '1', '--set', 'student.hidden=[8]', '--ep', 'cpu']);
    expect(r.stderr).not.toMatch(/distillate-train:/);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/epoch 1 · ce \d/);
    expect(r.stdout).toMatch(/engine ort on cpu/);
    expect(r.stdout).toMatch(/student\.onnx matches the ort engine/);
    expect(r.stdout).toMatch(/report: .*cli-scratch\/report\.html/);
    expect(existsSync(join(root, 'runs', 'cli-scratch', 'student.onnx'))).toBe(true);
    const ev = cli(['eval', '--run', join(root, 'runs', 'cli-scratch'), '--data', join(root, 'train.arrow')]);
    expect(ev.status).toBe(0);
    expect(JSON.parse(ev.stdout.trim().split('\n').at(-1)!).rows).toBe(600);
    // export's --out is its own (the training flag of the same name once swallowed it, and the file went to the run).
    const ex = cli(['export', '--run', join(root, 'runs', 'cli-scratch'), '--data', join(root, 'train.arrow'), '--out', join(root, 'exported.onnx')]);
    expect(ex.status, ex.stderr).toBe(0);
    expect(existsSync(join(root, 'exported.onnx'))).toBe(true);

    const t = cli([
      '--recipe',
      join(root, 'scratch.yaml'),
      '--epochs',
      '1',
      '--set',
      'student.hidden=[8]',
      '--name',
      'cli-tfjs',
      '--engine',
      'tfjs',
      '--backend',
      'wasm',
    ]);
    expect(t.status).toBe(0);
    expect(t.stdout).toMatch(/engine tfjs on wasm/);
    expect(t.stdout).toMatch(/student\.onnx matches the tfjs engine/);
    expect(existsSync(join(root, 'runs', 'cli-tfjs', 'model', 'model.json'))).toBe(true);
    const tev = cli(['eval', '--run', join(root, 'runs', 'cli-tfjs'), '--data', join(root, 'train.arrow'), '--backend', 'wasm']);
    expect(tev.status).toBe(0);
    expect(JSON.parse(tev.stdout.trim().split('\n').at(-1)!).rows).toBe(600);
  });

  it('bad recipes exit 1 with one line naming the field or file', () => {
    const bad = cli(['--recipe', join(root, 'scratch.yaml'), '--set', 'distill.method=kdd']);
    expect(bad.status).toBe(1);
    expect(bad.stderr.trim().split('\n')).toHaveLength(1);
    expect(bad.stderr).toMatch(/^distillate-train: .*scratch\.yaml: distill\.method/);
    const noTeacher = cli(['--recipe', join(root, 'scratch.yaml'), '--set', 'distill.method=kd']);
    expect(noTeacher.status).toBe(1);
    expect(noTeacher.stderr).toMatch(/needs at least one entry in teachers/);
    const missingCache = cli(['--recipe', join(root, 'scratch.yaml'), '--set', 'distill.method=kd', '--set', `teachers=[{cache: ${join(root, 'nope')}}]`]);
    expect(missingCache.status).toBe(1);
    expect(missingCache.stderr).toMatch(/nope is not a logit cache: it has no manifest\.json/);
    // Reported before the TF.js backend is probed: no native backend warnings ahead of the reason.
    expect(missingCache.stderr.trim().split('\n')).toHaveLength(1);
    const missing = cli(['--recipe', join(root, 'missing.yaml')]);
    expect(missing.status).toBe(1);
    expect(missing.stderr).toMatch(/missing\.yaml: cannot read recipe/);
  });

  it('an ONNX student with an op the ORT engine cannot differentiate: one line naming the op and the node, exit 1', async () => {
    const g = new Graph('bad');
    g.input('x', ['N', 64]);
    g.node('Softsign', [g.node('MatMul', ['x', g.constant('w', new Float32Array(64 * 10), [64, 10])])], {}, 'y');
    g.output('y', ['N', 10]);
    await writeFile(join(root, 'softsign.onnx'), g.toBytes());
    const r = cli(['--recipe', join(root, 'scratch.yaml'), '--set', `student={kind: onnx, path: ${join(root, 'softsign.onnx')}}`]);
    expect(r.status).toBe(1);
    expect(r.stderr.trim().split('\n')).toEqual([expect.stringMatching(/^distillate-train: unsupported op Softsign \(node Softsign_node_\d+\)/)]);
    expect(r.stdout).not.toMatch(/epoch 1/);
  });
});
