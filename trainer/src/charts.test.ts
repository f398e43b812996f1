/** The report charts' axes, legend and coincidence note, read back from the SVG they produce. */
import { describe, expect, it } from 'vitest';
import { COLORS, coinciding, lineChart, niceTicks } from './charts.js';

const attr = (el: string, name: string) => Number(new RegExp(`${name}="([^"]+)"`).exec(el)![1]);

describe('charts', () => {
  it('niceTicks: round steps of 1, 2 or 5 × 10^k covering the range', () => {
    expect(niceTicks(0, 1)).toEqual([0, 0.2, 0.4, 0.6, 0.8, 1]);
    expect(niceTicks(0.83, 0.9)).toEqual([0.84, 0.86, 0.88, 0.9]);
    expect(niceTicks(12, 480)).toEqual([100, 200, 300, 400]);
  });

  it('a line chart has epoch ticks, y ticks, and its legend outside the plot area', () => {
    const svg = lineChart({
      title: 't',
      yLabel: 'loss',
      series: [
        { name: 'ce', points: Array.from({ length: 12 }, (_, i) => [i + 1, 1 / (i + 1)] as const) },
        { name: 'kd', points: Array.from({ length: 12 }, (_, i) => [i + 1, 0.5 / (i + 1)] as const) },
      ],
    });
    const xticks = [...svg.matchAll(/class="xtick"[^>]*>([^<]+)</g)].map((m) => Number(m[1]));
    expect(xticks).toEqual([1, 3, 5, 7, 9, 11]); // 12 epochs: every second one
    expect([...svg.matchAll(/class="ytick"/g)].length).toBeGreaterThanOrEqual(4);
    const [, , right] = /data-plot="([^"]+)"/.exec(svg)![1]!.split(',').map(Number);
    const swatches = [...svg.matchAll(/<g class="legend-item">(<line [^>]*>)/g)].map((m) => m[1]!);
    expect(swatches).toHaveLength(2);
    for (const line of swatches) expect(attr(line, 'x1')).toBeGreaterThan(right!);
    expect(svg).not.toContain('coincide');
  });

  it('curves on top of each other are drawn dashed and named in a note (total = kd when ce has weight 0)', () => {
    const kd = [
      [1, 0.03],
      [2, 0.02],
    ] as const;
    const series = [
      { name: 'kd', points: kd },
      { name: 'total', points: kd.map(([x, y]) => [x, y * (1 + 1e-9)] as const) },
    ];
    expect(coinciding(series)).toEqual([['kd', 'total']]);
    const svg = lineChart({ title: 't', yLabel: 'loss', series });
    expect(svg).toMatch(/data-name="total"[^>]*stroke-dasharray/);
    expect(svg).toContain('kd and total coincide');
  });

  it('a series keeps its colour when an earlier one has no points (a run without that loss term keeps its colour in every chart)', () => {
    const svg = lineChart({
      title: 't',
      yLabel: 'kd',
      series: [
        { name: 'scratch', points: [] },
        { name: 'kd', points: [[1, 0.3]] },
      ],
    });
    expect(svg).toMatch(new RegExp(`data-name="kd" fill="none" stroke="${COLORS[1]}"`));
    expect(svg).not.toContain('data-name="scratch"');
  });
});
