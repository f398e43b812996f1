/**
 * Run reports as users get them: two runs trained by the CLI, compared by `distillate-train
 * report`, and the page checked against each run's metrics.jsonl; the single-run report's
 * charts (ticks, legend outside the plot, the note when total = kd).
 */
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { writeSyntheticDataset } from '@distillate/shared';
import { runTs } from './helpers/cli.js';
import { writeTablePages } from '../scripts/experiments/pages.js';
import { launchChromium, withScreenshot } from './helpers/browser.js';
import { CHROMIUM_PACKAGE, skipUnless, titled } from './helpers/system.js';

let root: string;
const cli = (args: string[]) => runTs('trainer/src/bin.ts', args);
const metricsOf = (run: string) =>
  readFileSync(join(root, 'runs', run, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'distillate-reports-'));
  await writeSyntheticDataset(join(root, 'train.arrow'), { rows: 600, inputShape: [8, 8, 1], classes: 10 });
  await writeFile(
    join(root, 'r.yaml'),
    `name: small
data: { train: ${join(root, 'train.arrow')}, test: ${join(root, 'train.arrow')} }
student: { kind: mlp, hidden: [16] }
epochs: 3
batchSize: 64
out: ${join(root, 'runs')}
`,
  );
  for (const [name, hidden] of [
    ['small', '[16]'],
    ['wide', '[64]'],
  ] as const) {
    const r = cli(['--recipe', join(root, 'r.yaml'), '--name', name, '--set', `student.hidden=${hidden}`, '--ep', 'cpu']);
    expect(r.status, r.stderr).toBe(0);
  }
}, 120_000);

describe('distillate-train report', () => {
  it('overlays the runs, and its table and curves hold what metrics.jsonl says', () => {
    const out = join(root, 'compare.html');
    const r = cli(['report', join(root, 'runs', 'small'), join(root, 'runs', 'wide'), '--out', out]);
    expect(r.status, r.stderr).toBe(0);
    const html = readFileSync(out, 'utf8');
    const rows = [...html.matchAll(/<tr class="run">(.*?)<\/tr>/g)].map((m) => m[1]!);
    expect(rows).toHaveLength(2);
    for (const [i, run] of ['small', 'wide'].entries()) {
      const m = metricsOf(run);
      const run_ = JSON.parse(readFileSync(join(root, 'runs', run, 'run.json'), 'utf8'));
      expect(rows[i]).toContain(`<td>${run}</td>`);
      expect(/class="acc">([^<]*)</.exec(rows[i]!)![1]).toBe(`${(run_.test.accuracy * 100).toFixed(2)}%`);
      expect(/class="ece">([^<]*)</.exec(rows[i]!)![1]).toBe(`${(run_.test.ece * 100).toFixed(2)}%`);
      const rates: number[] = m
        .slice(1)
        .map((e: { samplesPerSecond: number }) => e.samplesPerSecond)
        .sort((a: number, b: number) => a - b);
      const mid = rates.length >> 1;
      const median = rates.length % 2 === 1 ? rates[mid]! : (rates[mid - 1]! + rates[mid]!) / 2;
      expect(Number(/class="sps">([^<]*)</.exec(rows[i]!)![1])).toBe(Number(median.toFixed(0)));
      // One polyline per run in the test-accuracy chart, one point per epoch, with the epoch's value in its tooltip.
      const chart = /aria-label="Test accuracy"(.*?)<\/svg>/s.exec(html)![1]!;
      const points = /data-name="([^"]+)"[^>]*points="([^"]+)"/g;
      const byRun = new Map([...chart.matchAll(points)].map((x) => [x[1], x[2]!.split(' ').length]));
      expect(byRun.get(run)).toBe(m.length);
      for (const e of m) expect(chart).toContain(`<title>${run}, epoch ${e.epoch}: ${Number((e.testAccuracy * 100).toPrecision(4))}%</title>`);
    }
    expect(rows[1]).toContain('student.hidden: [16] → [64]');
    expect(html).toContain('aria-label="Loss: ce"');
    // Trained from labels alone: no teacher, so no agreement curve rather than an empty chart.
    expect(html).not.toContain('aria-label="Teacher agreement"');
  });

  it('refuses a directory that is not a run, in one line', () => {
    const r = cli(['report', root, '--out', join(root, 'x.html')]);
    expect(r.status).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/not a run directory/);
  });

  it("the experiments' table pages: one comparison page per table of its rows' seed-1 runs, none for a table without runs", async () => {
    const runs = join(root, 'experiment-runs');
    await mkdir(runs);
    await symlink(join(root, 'runs', 'small'), join(runs, 'row-a-s1'));
    await symlink(join(root, 'runs', 'wide'), join(runs, 'row-b-s1'));
    const pages = await writeTablePages(runs, join(root, 'pages'), [
      { id: 'mlps', title: 'Two MLPs', rows: ['row-a', 'row-b', 'row-never-run'] },
      { id: 'empty', title: 'Nothing yet', rows: ['row-c'] },
    ]);
    expect(pages).toEqual([join(root, 'pages', 'mlps.html')]);
    const html = readFileSync(pages[0]!, 'utf8');
    expect(html).toContain('<h1>Two MLPs (seed 1 of each row)</h1>');
    expect([...html.matchAll(/<tr class="run"><td>([^<]+)</g)].map((m) => m[1])).toEqual(['row-a-s1', 'row-b-s1']);
  });

  it("the single-run report's loss chart has epoch ticks and its legend right of the plot", () => {
    const html = readFileSync(join(root, 'runs', 'small', 'report.html'), 'utf8');
    const svg = /aria-label="Training loss by term"(.*?)<\/svg>/s.exec(html)![1]!;
    expect([...svg.matchAll(/class="xtick"[^>]*>([^<]+)</g)].map((m) => Number(m[1]))).toEqual([1, 2, 3]);
    // Scratch training: ce is the only term, so total = ce, and the chart says so.
    expect(html).toContain('ce and total coincide');
  });
});

const noBrowser = skipUnless(CHROMIUM_PACKAGE);
/** What the page code below uses of SVG elements (the tests compile without the DOM library). */
interface SvgLine {
  getTotalLength(): number;
  getBBox(): { x: number };
  readonly points: { readonly numberOfItems: number };
}

describe.skipIf(noBrowser !== undefined)(titled('the comparison report in headless Chromium', noBrowser), () => {
  it('draws one curve per run in every chart, legends right of their plots, and the table of metrics.jsonl', async () => {
    const out = join(root, 'compare-browser.html');
    expect(cli(['report', join(root, 'runs', 'small'), join(root, 'runs', 'wide'), '--out', out]).status).toBe(0);
    const browser = await launchChromium();
    try {
      const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
      await page.goto(`file://${out}`);
      await withScreenshot(page, 'compare-report', async () => {
        const charts = await page.$$eval('svg[data-plot]', (svgs) =>
          svgs.map((svg) => {
            const [, , right] = svg.getAttribute('data-plot')!.split(',').map(Number);
            const legend = svg.querySelector('g.legend');
            const curves = [...svg.querySelectorAll('polyline.series')].map((p) => ({
              name: p.getAttribute('data-name'),
              length: (p as unknown as SvgLine).getTotalLength(),
              points: (p as unknown as SvgLine).points.numberOfItems,
            }));
            return { label: svg.getAttribute('aria-label'), right, legendLeft: legend === null ? null : (legend as unknown as SvgLine).getBBox().x, curves };
          }),
        );
        expect(charts.map((c) => c.label)).toEqual(['Loss: ce', 'Loss: total', 'Test accuracy']);
        for (const c of charts) {
          expect(c.curves.map((x) => x.name)).toEqual(['small', 'wide']);
          for (const curve of c.curves) {
            expect(curve.points).toBe(3); // one per epoch
            expect(curve.length).toBeGreaterThan(0); // drawn, not collapsed
          }
          expect(c.legendLeft!).toBeGreaterThan(c.right!);
        }
        const cells = await page.$$eval('tr.run', (rows) => rows.map((r) => [...r.querySelectorAll('td')].map((td) => td.textContent)));
        for (const [i, run] of ['small', 'wide'].entries()) {
          const result = JSON.parse(readFileSync(join(root, 'runs', run, 'run.json'), 'utf8'));
          const last = metricsOf(run).at(-1);
          expect(cells[i]![0]).toBe(run);
          expect(cells[i]![4]).toBe(`${(result.test.accuracy * 100).toFixed(2)}%`);
          expect(result.test.accuracy).toBeCloseTo(last.testAccuracy, 10);
        }
      });
    } finally {
      await browser.close();
    }
  }, 60_000);
});
