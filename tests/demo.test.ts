/**
 * `npm run demo -- --quick` end to end, in process: real import, real server over HTTP, real
 * precompute job, real training on the ORT engine, its student.onnx served by onnxruntime.
 */
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { onnxParameterCount, verifyCache } from '@distillate/shared';
import { runDemo } from '../scripts/demo.js';
import { FASHION_MNIST_PACKAGE, skipUnless, titled } from './helpers/system.js';

const skip = skipUnless(FASHION_MNIST_PACKAGE);

async function checkRun(runDir: string, epochs: number): Promise<void> {
  const lines = (await readFile(join(runDir, 'metrics.jsonl'), 'utf8')).trim().split('\n');
  expect(lines).toHaveLength(epochs);
  lines.forEach((line, i) => {
    const m = JSON.parse(line);
    expect(m.epoch).toBe(i + 1);
    expect(Number.isFinite(m.loss.total)).toBe(true);
    for (const k of ['trainAccuracy', 'testAccuracy']) {
      expect(m[k]).toBeGreaterThanOrEqual(0);
      expect(m[k]).toBeLessThanOrEqual(1);
    }
  });
  const report = await readFile(join(runDir, 'report.html'), 'utf8');
  expect(report).toContain('<svg');
  expect(JSON.parse(await readFile(join(runDir, 'run.json'), 'utf8')).metrics).toHaveLength(epochs);
}

describe('npm run demo -- --quick', () => {
  it.skipIf(skip !== undefined)(
    titled('runs every stage on a slice of Fashion-MNIST', skip),
    async () => {
      const work = await mkdtemp(join(tmpdir(), 'distillate-demo-'));
      const lines: string[] = [];
      const s = await runDemo({ size: 'quick', work, log: (l) => lines.push(l) });
      expect(s.dataset).toBe('fashion-mnist');
      expect([s.trainRows, s.testRows]).toEqual([2000, 500]);
      expect(s.cacheVerified).toBe(true);
      expect((await verifyCache(s.cacheDir)).ok).toBe(true);
      for (const run of [s.kd, s.scratch]) await checkRun(run.runDir, 1);
      // The trainer's own student.onnx-vs-engine check, and the same model served over HTTP.
      expect(s.kd.engine.name).toBe('ort');
      expect(s.kd.onnx!.maxRelDiff).toBeLessThanOrEqual(1e-5);
      expect(s.served.maxAbsDiff).toBeLessThanOrEqual(1e-4);
      expect(s.served.top1Agreement).toBe(1);
      expect(onnxParameterCount(await readFile(s.kd.onnx!.path))).toBe(s.kd.parameters);
      // The shipped teacher is far better than chance even on 500 test images.
      expect(s.rows[0]!.accuracy).toBeGreaterThan(0.8);
      expect(lines.some((l) => l.startsWith('| student, KD'))).toBe(true);
    },
    240_000,
  );

  it('--synthetic: generated data with a teacher trained on it first, labelled as synthetic', async () => {
    const work = await mkdtemp(join(tmpdir(), 'distillate-demo-'));
    const lines: string[] = [];
    const s = await runDemo({ size: 'quick', work, synthetic: true, log: (l) => lines.push(l) });
    expect(s.dataset).toBe('synthetic');
    expect(s.rows[0]!.name).toBe('teacher (synthetic-teacher)');
    expect(s.rows[0]!.accuracy).toBeGreaterThan(0.5); // its own teacher learned the generated classes (chance: 0.1)
    expect(lines.join('\n')).toMatch(/SYNTHETIC DATA \(--synthetic\)/);
    expect(s.cacheVerified).toBe(true);
    await checkRun(s.kd.runDir, 1);
  }, 240_000);

  it('--data DIR without the files fails before doing anything', async () => {
    const work = await mkdtemp(join(tmpdir(), 'distillate-demo-'));
    await expect(runDemo({ size: 'quick', work, data: join(work, 'nowhere'), log: () => undefined })).rejects.toThrow(
      /nowhere does not hold the four Fashion-MNIST files/,
    );
  });
});
