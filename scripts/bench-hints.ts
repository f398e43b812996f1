/**
 * npm run bench:hints [-- --pairs 3]
 *
 * Time per epoch of the small CNN student (the experiments:hints rows) trained with a cached hint
 * against KD alone from the same cache, and against KD with the teacher online (its forward pass
 * in every step, which is what a hint would cost without the cache), one epoch each, in turns
 * (KD, KD + FitNets, KD + AT, KD + embedding, KD online, then again), one process at a time, so
 * the VM's drift cancels in each turn's ratios. Needs the caches experiments:hints builds.
 * Prints each turn and the median ratio with its range.
 */
import { join } from 'node:path';
import { readFile } from 'node:fs/promises';
import { Command, InvalidArgumentError } from 'commander';
import { runCli } from '@distillate/shared';
import { ROOT, trainRecipe } from './experiments/runner.js';

const ROWS = [
  { id: 'kd', recipe: 'fmnist-cnn-kd.yaml' },
  { id: 'kd-fitnets', recipe: 'fmnist-cnn-kd-fitnets.yaml' },
  { id: 'kd-at', recipe: 'fmnist-cnn-kd-at.yaml' },
  { id: 'kd-embed', recipe: 'fmnist-cnn-kd-embed.yaml' },
  // The same KD recipe with the teacher online (its forward pass in every step) instead of its cache.
  { id: 'kd-online', recipe: 'fmnist-cnn-kd.yaml', set: ['teachers=[{ onnx: models/fmnist-teacher-ls0.onnx }]'] },
] as const;

const median = (v: readonly number[]): number => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)]!;

async function main(o: { pairs: number }): Promise<void> {
  const out = join(ROOT, '.bench', 'hints');
  const seconds: Record<string, number[]> = {};
  for (let turn = 1; turn <= o.pairs; turn++) {
    for (const r of ROWS) {
      const name = `${r.id}-t${turn}-${Date.now()}`;
      await trainRecipe({ recipe: r.recipe, seed: 1, name, out, set: ['epochs=1', ...('set' in r ? r.set : [])] });
      const run = JSON.parse(await readFile(join(out, name, 'run.json'), 'utf8')) as { metrics: { seconds: number }[] };
      (seconds[r.id] ??= []).push(run.metrics[0]!.seconds);
    }
    console.log(`turn ${turn}: ${ROWS.map((r) => `${r.id} ${seconds[r.id]!.at(-1)!.toFixed(1)} s`).join(', ')}`);
  }
  for (const r of ROWS.slice(1)) {
    const q = seconds[r.id]!.map((v, i) => v / seconds['kd']![i]!);
    console.log(`${r.id} / kd (seconds per epoch): ${median(q).toFixed(2)}× (${Math.min(...q).toFixed(2)}–${Math.max(...q).toFixed(2)}, ${q.length} turns)`);
  }
}

const program = new Command('bench-hints')
  .description('seconds per epoch with a cached hint against KD alone and KD with the teacher online, in turns')
  .option(
    '--pairs <n>',
    'turns',
    (v: string) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('a positive integer');
      return n;
    },
    3,
  )
  .action(main);
await runCli(program);
