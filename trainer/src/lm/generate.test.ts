import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { mulberry32 } from '@distillate/shared';
import { generate, pickToken } from './generate.js';

describe('generation', () => {
  it('greedy takes the largest logit; top-p keeps only the smallest set holding that mass', () => {
    const z = [0, 3, 1, 2.9];
    expect(pickToken(z, 0, 1, mulberry32(1))).toBe(1);
    const rand = mulberry32(2);
    const seen = new Set(Array.from({ length: 200 }, () => pickToken(z, 1, 0.8, rand)));
    expect(seen).toEqual(new Set([1, 3])); // p ≈ 0.44, 0.40, 0.11, 0.04: 0.8 is reached by the two largest
    const all = new Set(Array.from({ length: 400 }, () => pickToken(z, 1, 1, rand)));
    expect(all.size).toBe(4);
  });

  it('continues a prompt with the shipped teacher, the same text for the same seed', async () => {
    const model = join(import.meta.dirname, '..', '..', '..', 'models', 'brown-lm.onnx');
    const a = await generate({ model, prompt: 'The jury said', maxTokens: 12, temperature: 0.8, topP: 0.9, seed: 3 });
    const b = await generate({ model, prompt: 'The jury said', maxTokens: 12, temperature: 0.8, topP: 0.9, seed: 3 });
    expect(a.tokens).toHaveLength(12);
    expect(a.text).toBe(b.text);
    expect(a.text.length).toBeGreaterThan(5);
  });
});
