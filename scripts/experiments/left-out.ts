/**
 * What distillation transfers that labels cannot (Hinton et al. 2015, §3): a student learns from
 * a transfer set with no image at all of one class, by KD from the shipped teacher and by labels
 * alone, and is then tested on that class.
 *
 * The bias correction uses no labels: the left-out class's output bias is raised until the
 * student's mean predicted share of that class on held-out *unlabelled* images (5,000 images
 * of the training split, never the test split) equals the teacher's share on the same images.
 * Recall on the class and overall accuracy are reported on the test split, before and after.
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DatasetReader, FASHION_MNIST_CLASSES, LogitCacheReader, softmax, withoutClass } from '@distillate/shared';
import { predictRunLogits } from '@distillate/trainer';
import { ROOT, buildCaches, mean, pairedInterval, pool, replaceSection, std, trainRecipe } from './runner.js';

const C = 10;
const HELD_OUT = 'val/train-labelled-5000.arrow';
const METHODS = [
  { id: 'kd', label: 'KD (T = 4)', recipe: 'fmnist-kd.yaml' },
  { id: 'labels', label: 'labels only', recipe: 'fmnist-scratch.yaml' },
] as const;

export interface LeftOutRun {
  readonly leftOut: number;
  readonly method: 'kd' | 'labels';
  readonly seed: number;
  readonly recallBefore: number;
  readonly recallAfter: number;
  readonly accuracyBefore: number;
  readonly accuracyAfter: number;
  /** The bias added to the left-out class's logit. */
  readonly shift: number;
  /** Of the test images of the left-out class, the share predicted as each class, after correction. */
  readonly confusionRowAfter: number[];
  readonly confusionRowBefore: number[];
}

/** Flat model inputs (stored × scale + offset) and labels of a dataset file. */
async function load(path: string): Promise<{ x: Float32Array; labels: Int32Array; rows: number }> {
  const d = await DatasetReader.open(path);
  const rows = await d.countRows();
  const D = d.inputSize;
  const { scale, offset } = d.info.scaling;
  const x = new Float32Array(rows * D);
  const labels = new Int32Array(rows);
  let r = 0;
  for await (const b of d) {
    for (let i = 0; i < b.rows * D; i++) x[r * D + i] = b.inputs[i]! * scale + offset;
    labels.set(b.labels, r);
    r += b.rows;
  }
  return { x, labels, rows };
}

/** Mean softmax share of class c over rows of logits, with `shift` added to class c's logit. */
function share(logits: Float32Array, rows: number, c: number, shift: number): number {
  const z = new Float32Array(C);
  let sum = 0;
  for (let r = 0; r < rows; r++) {
    z.set(logits.subarray(r * C, (r + 1) * C));
    z[c]! += shift;
    sum += softmax(z, C)[c]!;
  }
  return sum / rows;
}

/** The shift that makes the student's share of class c equal `target` (bisection; the share grows with the shift). */
function matchShare(logits: Float32Array, rows: number, c: number, target: number): number {
  let lo = -20;
  let hi = 60;
  for (let i = 0; i < 60; i++) {
    const mid = (lo + hi) / 2;
    if (share(logits, rows, c, mid) < target) lo = mid;
    else hi = mid;
  }
  return (lo + hi) / 2;
}

function score(logits: Float32Array, labels: Int32Array, rows: number, c: number, shift: number): { recall: number; accuracy: number; row: number[] } {
  let correct = 0;
  let ofClass = 0;
  const row = new Array<number>(C).fill(0);
  for (let r = 0; r < rows; r++) {
    let best = 0;
    for (let k = 1; k < C; k++) if (logits[r * C + k]! + (k === c ? shift : 0) > logits[r * C + best]! + (best === c ? shift : 0)) best = k;
    if (best === labels[r]) correct++;
    if (labels[r] === c) {
      ofClass++;
      row[best]! += 1;
    }
  }
  return { recall: row[c]! / ofClass, accuracy: correct / rows, row: row.map((n) => n / ofClass) };
}

export async function runLeftOut(opts: { seeds: number; parallel: number; classes?: readonly number[] }): Promise<LeftOutRun[]> {
  const classes = opts.classes ?? Array.from({ length: C }, (_, c) => c);
  const dir = join(ROOT, 'data', 'left-out');
  await mkdir(dir, { recursive: true });
  for (const c of classes) {
    const path = join(dir, `train-without-${c}.arrow`);
    if (!existsSync(path)) await withoutClass(join(ROOT, 'data', 'fashion-mnist', 'train.arrow'), path, c);
  }
  // The teacher over every transfer set (the recipes find these caches by teacher name), and over the held-out images.
  const keys = await buildCaches([
    { type: 'precompute', teacher: 'fmnist-teacher', dataset: HELD_OUT },
    ...classes.map((c) => ({ type: 'precompute' as const, teacher: 'fmnist-teacher', dataset: `left-out/train-without-${c}.arrow` })),
  ]);
  const teacherHeldOut = await LogitCacheReader.open(join(ROOT, 'cache', keys[0]!));
  const teacherShare = new Float64Array(C);
  let heldRows = 0;
  for await (const b of teacherHeldOut.batches()) {
    if (b.kind !== 'dense') throw new Error('dense cache expected');
    for (let r = 0; r < b.rows; r++) {
      const p = softmax(b.logits.subarray(r * C, (r + 1) * C), C);
      for (let k = 0; k < C; k++) teacherShare[k]! += p[k]!;
    }
    heldRows += b.rows;
  }
  for (let k = 0; k < C; k++) teacherShare[k]! /= heldRows;

  const out = join(ROOT, 'experiments-out', 'runs');
  const name = (c: number, m: string, seed: number) => `left-out-${c}-${m}-s${seed}`;
  const seeds = Array.from({ length: opts.seeds }, (_, i) => i + 1);
  const jobs = seeds.flatMap((seed) => classes.flatMap((c) => METHODS.map((m) => ({ c, m, seed }))));
  await pool(
    jobs.map(
      ({ c, m, seed }) =>
        () =>
          trainRecipe({ recipe: m.recipe, seed, name: name(c, m.id, seed), out, set: [`data.train=data/left-out/train-without-${c}.arrow`] }),
    ),
    opts.parallel,
  );

  const test = await load(join(ROOT, 'data', 'fashion-mnist', 'test.arrow'));
  const held = await load(join(ROOT, 'data', HELD_OUT));
  const results: LeftOutRun[] = [];
  for (const { c, m, seed } of jobs) {
    const run = join(out, name(c, m.id, seed));
    const testLogits = await predictRunLogits(run, test.x, test.rows);
    const heldLogits = await predictRunLogits(run, held.x, held.rows);
    const shift = matchShare(heldLogits, held.rows, c, teacherShare[c]!);
    const before = score(testLogits, test.labels, test.rows, c, 0);
    const after = score(testLogits, test.labels, test.rows, c, shift);
    results.push({
      leftOut: c,
      method: m.id,
      seed,
      recallBefore: before.recall,
      recallAfter: after.recall,
      accuracyBefore: before.accuracy,
      accuracyAfter: after.accuracy,
      shift,
      confusionRowBefore: before.row,
      confusionRowAfter: after.row,
    });
  }
  await writeFile(join(ROOT, 'experiments-out', 'left-out.json'), `${JSON.stringify(results, null, 2)}\n`);
  await writeFile(join(ROOT, 'experiments-out', 'left-out.html'), html(results));
  const table = markdown(results, opts.seeds);
  console.log(table);
  const path = join(ROOT, 'BENCHMARKS.md');
  await writeFile(
    path,
    replaceSection(
      await readFile(path, 'utf8'),
      '<!-- left-out:begin -->',
      '<!-- left-out:end -->',
      table,
      '## What distillation transfers: a class the student never saw',
    ),
  );
  return results;
}

const pct = (v: number) => (v * 100).toFixed(1);
const pmPct = (v: readonly number[]) => (v.length < 2 ? pct(mean(v)) : `${pct(mean(v))} ± ${pct(std(v))}`);

function markdown(results: readonly LeftOutRun[], seeds: number): string {
  const lines = [
    `Generated by \`npm run experiments -- --only left-out --seeds ${seeds}\` on ${new Date().toISOString().slice(0, 10)}: for each class, the MLP 784-128-10 (10 epochs, the recipes of the first table) trained on the 54,000 training images of the other nine classes; the correction matches the student's predicted share of the left-out class on 5,000 held-out unlabelled training images to the teacher's. Percentages on the test split; mean ± std over ${seeds} seed(s) per row.`,
    '',
    '| left-out class | method | recall on it, before → after correction | overall accuracy, before → after | bias added |',
    '|---|---|---|---|---:|',
  ];
  for (let c = 0; c < C; c++) {
    for (const m of METHODS) {
      const rs = results.filter((r) => r.leftOut === c && r.method === m.id);
      if (rs.length === 0) continue;
      lines.push(
        `| ${FASHION_MNIST_CLASSES[c]} | ${m.label} | ${pmPct(rs.map((r) => r.recallBefore))} → **${pmPct(rs.map((r) => r.recallAfter))}** | ${pmPct(rs.map((r) => r.accuracyBefore))} → ${pmPct(rs.map((r) => r.accuracyAfter))} | ${mean(rs.map((r) => r.shift)).toFixed(2)} |`,
      );
    }
  }
  lines.push(
    '',
    '**Mean over the left-out classes** (each class left out in its own runs):',
    '',
    '| method | recall before | recall after | accuracy before | accuracy after |',
    '|---|---:|---:|---:|---:|',
  );
  for (const m of METHODS) {
    const rs = results.filter((r) => r.method === m.id);
    if (rs.length === 0) continue;
    lines.push(
      `| ${m.label} | ${pct(mean(rs.map((r) => r.recallBefore)))} | **${pct(mean(rs.map((r) => r.recallAfter)))}** | ${pct(mean(rs.map((r) => r.accuracyBefore)))} | ${pct(mean(rs.map((r) => r.accuracyAfter)))} |`,
    );
  }
  // Paired over (class, seed): KD's recall after correction minus labels-only's.
  const d: number[] = [];
  for (const r of results.filter((x) => x.method === 'kd')) {
    const l = results.find((x) => x.method === 'labels' && x.leftOut === r.leftOut && x.seed === r.seed);
    if (l !== undefined) d.push((r.recallAfter - l.recallAfter) * 100);
  }
  if (d.length >= 2) {
    const { mean: m, half } = pairedInterval(d);
    lines.push(
      '',
      `KD − labels only, recall after correction, paired over (class, seed): ${m >= 0 ? '+' : ''}${m.toFixed(1)} pt [${(m - half).toFixed(1)}, ${(m + half).toFixed(1)}] (95 % t interval, ${d.length} pairs).`,
    );
  }
  lines.push('', 'The confusion row of each left-out class (where its test images go, before and after the correction): `experiments-out/left-out.html`.');
  return lines.join('\n');
}

/** A self-contained page: per left-out class, the confusion row before/after correction, KD against labels only (inline SVG). */
function html(results: readonly LeftOutRun[]): string {
  const W = 360;
  const bar = (row: readonly number[], c: number, title: string) => {
    const bw = W / C;
    const bars = row
      .map(
        (v, k) =>
          `<rect x="${(k * bw + 2).toFixed(1)}" y="${(100 - v * 100).toFixed(1)}" width="${(bw - 4).toFixed(1)}" height="${(v * 100).toFixed(1)}" fill="${k === c ? '#c0392b' : '#7f8c8d'}"><title>${FASHION_MNIST_CLASSES[k]}: ${(v * 100).toFixed(1)} %</title></rect>`,
      )
      .join('');
    const labels = FASHION_MNIST_CLASSES.map(
      (n, k) => `<text x="${(k * bw + bw / 2).toFixed(1)}" y="114" font-size="8" text-anchor="middle">${n.split(/[ /]/)[0]}</text>`,
    ).join('');
    return `<figure><svg width="${W}" height="120" role="img" aria-label="${title}"><line x1="0" y1="100" x2="${W}" y2="100" stroke="#333"/>${bars}${labels}</svg><figcaption>${title}</figcaption></figure>`;
  };
  const avg = (rs: readonly LeftOutRun[], key: 'confusionRowBefore' | 'confusionRowAfter') =>
    Array.from({ length: C }, (_, k) => mean(rs.map((r) => r[key][k]!)));
  const sections: string[] = [];
  for (let c = 0; c < C; c++) {
    const figs: string[] = [];
    for (const m of METHODS) {
      const rs = results.filter((r) => r.leftOut === c && r.method === m.id);
      if (rs.length === 0) continue;
      figs.push(bar(avg(rs, 'confusionRowBefore'), c, `${m.label}, before: recall ${pct(mean(rs.map((r) => r.recallBefore)))} %`));
      figs.push(bar(avg(rs, 'confusionRowAfter'), c, `${m.label}, after: recall ${pct(mean(rs.map((r) => r.recallAfter)))} %`));
    }
    if (figs.length > 0) sections.push(`<section><h2>${FASHION_MNIST_CLASSES[c]} left out</h2><div class="row">${figs.join('')}</div></section>`);
  }
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Left-out class · Distillate</title>
<style>body{font:14px system-ui,sans-serif;margin:2em;color:#222}.row{display:flex;flex-wrap:wrap;gap:1em}figure{margin:0}figcaption{font-size:12px}</style></head><body>
<h1>What distillation transfers: a class the student never saw</h1>
<p>For each class, the test images of that class and where the student sends them (red: the class itself). The student's transfer set had no image of it; KD learned it from the teacher's soft labels on the other classes' images. The correction raises the class's output bias until the student's predicted share of it on held-out unlabelled images matches the teacher's; it uses no labels.</p>
${sections.join('\n')}
</body></html>
`;
}
