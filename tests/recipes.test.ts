/** The shipped recipes: each one parses, and every teacher it names ships in models/ with its sidecar. */
import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadRecipe } from '@distillate/trainer';

const repo = join(import.meta.dirname, '..');
const files = (await readdir(join(repo, 'recipes'))).filter((f) => f.endsWith('.yaml')).sort();

describe('recipes/', () => {
  it('ships recipes', () => {
    expect(files.length).toBeGreaterThan(0);
  });

  it.each(files)('%s parses and names only shipped teachers', async (file) => {
    const recipe = await loadRecipe(join(repo, 'recipes', file));
    expect(recipe.name).toBe(file.replace(/\.yaml$/, ''));
    const named = [
      ...(recipe.teachers ?? []).flatMap((t) => ('teacher' in t ? [t.teacher] : [])),
      ...(recipe.semi?.teacher !== undefined ? [recipe.semi.teacher] : []),
    ];
    for (const teacher of named) {
      expect(existsSync(join(repo, 'models', `${teacher}.onnx`)), `${file}: models/${teacher}.onnx`).toBe(true);
      expect(existsSync(join(repo, 'models', `${teacher}.json`)), `${file}: models/${teacher}.json`).toBe(true);
    }
  });
});
