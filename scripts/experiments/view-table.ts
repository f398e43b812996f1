/**
 * The view-cache table of `npm run experiments`: for the small CNN's KD rows, accuracy, the
 * paired difference from the teacher run online on fresh views, the bytes stored per image and
 * the seconds per epoch, against K (stored views per image). Read from the finished runs'
 * run.json files and the manifests of the caches they used.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ROOT, mean, pairedDelta, std } from './runner.js';

const ONLINE = 'cnn-kd-online';
const ROWS: readonly [string, string][] = [
  ['plain cache of the clean images (no augmentation)', 'cnn-kd'],
  ...[1, 4, 16, 64].map((K): [string, string] => [`view cache, K = ${K}`, `cnn-kd-views${K}`]),
  ['teacher online, a fresh view every epoch', ONLINE],
];

interface RunJson {
  readonly caches: readonly string[];
  readonly metrics: readonly { readonly seconds: number }[];
}

const median = (v: readonly number[]): number => {
  const s = [...v].sort((a, b) => a - b);
  return s.length % 2 === 1 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

/** Stored bytes per image of a cache: its shards over its images. */
async function bytesPerImage(dir: string): Promise<number> {
  const m = JSON.parse(await readFile(join(ROOT, dir, 'manifest.json'), 'utf8')) as { dataset: { rows: number }; shards: { bytes: number }[] };
  return m.shards.reduce((a, s) => a + s.bytes, 0) / m.dataset.rows;
}

export async function viewTable(runs: string, bySeed: Record<string, Map<number, number>>): Promise<string[]> {
  const found = ROWS.filter(([, id]) => bySeed[id] !== undefined);
  if (found.length < 2 || bySeed[ONLINE] === undefined) return [];
  const stats = new Map<string, { seconds: number; bytes: number | undefined }>();
  for (const [, id] of found) {
    const seconds: number[] = [];
    let bytes: number | undefined;
    for (const seed of bySeed[id]!.keys()) {
      const path = join(runs, `${id}-s${seed}`, 'run.json');
      if (!existsSync(path)) continue;
      const run = JSON.parse(await readFile(path, 'utf8')) as RunJson;
      seconds.push(...run.metrics.map((m) => m.seconds));
      if (run.caches[0] !== undefined) bytes = await bytesPerImage(run.caches[0]);
    }
    stats.set(id, { seconds: median(seconds), bytes });
  }
  const online = stats.get(ONLINE)!.seconds;
  const lines = [
    '**KD from stored views against the teacher online on fresh views (small CNN, T = 1, kd only, 10 epochs; views are shifts ≤ 2 px and left–right flips; seconds per epoch on this 2-core VM, one run at a time)**',
    '',
    '| targets | test accuracy, % | paired Δ vs teacher online, pt (95 % interval) | stored per image | s per epoch (median) | speed vs teacher online |',
    '|---|---|---|---:|---:|---:|',
  ];
  for (const [label, id] of found) {
    const acc = [...bySeed[id]!.values()];
    const s = stats.get(id)!;
    lines.push(
      `| ${label} | ${(mean(acc) * 100).toFixed(2)} ± ${(std(acc) * 100).toFixed(2)} (${acc.length} seeds) | ${id === ONLINE ? '' : pairedDelta(bySeed[id], bySeed[ONLINE])} | ${s.bytes === undefined ? '—' : `${Math.round(s.bytes)} B`} | ${s.seconds.toFixed(1)} | ${(online / s.seconds).toFixed(2)}× |`,
    );
  }
  lines.push('');
  return lines;
}
