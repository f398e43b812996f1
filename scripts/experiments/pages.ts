/**
 * The experiments' table pages: for each table of BENCHMARKS.md's experiments section, one
 * comparison page (distillate-train report) of its rows' seed-1 runs, in experiments-out/pages/.
 */
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { readRun, renderComparison } from '@distillate/trainer';

/** `tables`: each table's title and its rows' experiment ids. Returns the pages written. */
export async function writeTablePages(
  runs: string,
  outDir: string,
  tables: ReadonlyArray<{ id: string; title: string; rows: readonly string[] }>,
): Promise<string[]> {
  await mkdir(outDir, { recursive: true });
  const written: string[] = [];
  for (const t of tables) {
    const dirs = t.rows.map((id) => join(runs, `${id}-s1`)).filter((d) => existsSync(join(d, 'run.json')));
    if (dirs.length === 0) continue;
    const page = join(outDir, `${t.id}.html`);
    await writeFile(page, renderComparison(await Promise.all(dirs.map((d) => readRun(d))), `${t.title} (seed 1 of each row)`));
    written.push(page);
  }
  return written;
}
