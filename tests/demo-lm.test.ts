/**
 * `npm run demo -- --lm --quick` end to end, as a user runs it (a child process): the Brown corpus
 * split and tokenized, the shipped language-model teacher served over HTTP, its sampled and top-1
 * token caches built by precompute jobs, two transformer students trained on the ORT engine, bits
 * per byte compared, and text generated from each model.
 */
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runTs } from './helpers/cli.js';

describe('npm run demo -- --lm --quick', () => {
  it('tokenizes, serves, precomputes, trains scratch and KD students, compares bits per byte and generates', async () => {
    const work = await mkdtemp(join(tmpdir(), 'demo-lm-'));
    const r = runTs('scripts/demo.ts', ['--lm', '--quick', '--work', work]);
    expect(r.status, r.stderr).toBe(0);
    const lines = r.stdout.split('\n');
    for (const stage of ['[1/6]', '[2/6]', '[4/6]', '[5/6]', '[6/6]']) expect(lines.some((l) => l.startsWith(stage))).toBe(true);
    const bpb = (label: string): number =>
      Number(
        lines
          .find((l) => l.trim().startsWith(label))!
          .trim()
          .slice(label.length)
          .trim()
          .split(/\s+/)[0],
      );
    for (const label of ['teacher brown-lm', 'student, scratch', 'student, KD (sampled cache)']) {
      expect(bpb(label)).toBeGreaterThan(0.5);
      expect(bpb(label)).toBeLessThan(8);
    }
    for (const run of ['lm-scratch', 'lm-kd-sampled']) {
      expect(JSON.parse(await readFile(join(work, 'lm', 'runs', run, 'student.json'), 'utf8'))).toMatchObject({
        kind: 'causal-lm',
        context: 128,
        vocabSize: 1024,
      });
      const result = JSON.parse(await readFile(join(work, 'lm', 'runs', run, 'run.json'), 'utf8'));
      expect(result.test.agreement).toBeGreaterThan(0);
    }
    for (const name of ['teacher', 'scratch', 'kd']) expect(lines.some((l) => l.trim().startsWith(`${name}: The jury said`))).toBe(true);
  }, 600_000);
});
