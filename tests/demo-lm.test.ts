/**
 * `npm run demo:lm -- --quick` end to end, in process: the Brown corpus split and tokenized, the
 * shipped language-model teacher served over HTTP, its sampled and top-1 token caches built by
 * precompute jobs, two transformer students trained on the ORT engine, bits per byte compared,
 * and text generated from each model.
 */
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runLmDemo } from '../scripts/demo-lm.js';

describe('npm run demo:lm -- --quick', () => {
  it('tokenizes, serves, precomputes, trains scratch and KD students, compares bits per byte and generates', async () => {
    const lines: string[] = [];
    const r = await runLmDemo({ work: await mkdtemp(join(tmpdir(), 'demo-lm-')), quick: true, log: (l) => lines.push(l) });
    for (const stage of ['[1/6]', '[2/6]', '[4/6]', '[5/6]', '[6/6]']) expect(lines.some((l) => l.startsWith(stage))).toBe(true);
    for (const run of [r.scratch, r.kd]) {
      expect(run.test!.bitsPerByte).toBeGreaterThan(0.5);
      expect(run.test!.bitsPerByte).toBeLessThan(8);
      expect(run.test!.agreement).toBeGreaterThan(0);
      expect(JSON.parse(await readFile(join(run.runDir, 'student.json'), 'utf8'))).toMatchObject({ kind: 'causal-lm', context: 128, vocabSize: 1024 });
    }
    expect(r.kd.cache).toMatchObject({ storage: 'sampled' });
    expect(r.bytesPerToken).toBeGreaterThan(0);
    expect(r.teacher.bitsPerByte).toBeGreaterThan(0.5);
    for (const name of ['teacher', 'scratch', 'kd']) expect(r.samples[name]!.startsWith('The jury said')).toBe(true);
  }, 600_000);
});
