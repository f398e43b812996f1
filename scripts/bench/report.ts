/** Shared by every benchmark: one row format, printed as a table or as JSON lines. */
import { Command } from 'commander';

export interface BenchRow {
  readonly bench: string;
  readonly metric: string;
  readonly value: number;
  readonly unit: string;
  /** What the value is compared with, measured in the same run; null when nothing is. */
  readonly peer: string | null;
  readonly peerValue: number | null;
  /** value / peerValue; for paired rows, the median of the pairs' ratios. */
  readonly ratio: number | null;
  /** Paired rows (measured in turns with their peer): the smallest and largest pair's ratio, and how many pairs. */
  readonly ratioRange?: readonly [number, number];
  readonly pairs?: number;
}

export function row(bench: string, metric: string, value: number, unit: string, peer?: { name: string; value: number }): BenchRow {
  return {
    bench,
    metric,
    value: round(value),
    unit,
    peer: peer?.name ?? null,
    peerValue: peer === undefined ? null : round(peer.value),
    ratio: peer === undefined || peer.value === 0 ? null : round(value / peer.value, 3),
  };
}

/**
 * A row measured in turns with its peer (ours, the peer's, ours, …), so that the machine's drift
 * between runs (30–40 % on the shared VMs) falls on both sides of each pair: the value and the
 * peer's are the medians, the ratio is the median of the pairs' ratios, with their range.
 */
export function pairedRow(bench: string, metric: string, values: readonly number[], unit: string, peer: { name: string; values: readonly number[] }): BenchRow {
  if (values.length !== peer.values.length || values.length === 0)
    throw new Error(`internal: ${metric}: ${values.length} values against ${peer.values.length}`);
  const ratios = values.map((v, i) => v / peer.values[i]!);
  return {
    ...row(bench, metric, median(values), unit, { name: peer.name, value: median(peer.values) }),
    ratio: round(median(ratios), 3),
    ratioRange: [round(Math.min(...ratios), 3), round(Math.max(...ratios), 3)],
    pairs: values.length,
  };
}

function round(v: number, digits = 4): number {
  if (!Number.isFinite(v) || v === 0) return v;
  const scale = 10 ** Math.max(0, digits - Math.ceil(Math.log10(Math.abs(v))));
  return Math.round(v * scale) / scale;
}

export function median(values: readonly number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** Run `fn` once as a warm-up, then `runs` times; return the median of what it reports. */
export async function medianOf(runs: number, fn: () => Promise<number>): Promise<number> {
  await fn();
  const values: number[] = [];
  for (let i = 0; i < runs; i++) values.push(await fn());
  return median(values);
}

export function printRows(rows: readonly BenchRow[], json: boolean): void {
  if (json) {
    for (const r of rows) console.log(JSON.stringify(r));
    return;
  }
  const header = ['bench', 'metric', 'value', 'unit', 'peer', 'peer value', 'ratio'];
  const cells = rows.map((r) => [
    r.bench,
    r.metric,
    String(r.value),
    r.unit,
    r.peer ?? '',
    r.peerValue === null ? '' : String(r.peerValue),
    r.ratio === null ? '' : `${r.ratio}×${r.ratioRange === undefined ? '' : ` (${r.ratioRange[0]}–${r.ratioRange[1]}, ${r.pairs} pairs)`}`,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  const line = (c: string[]) => c.map((v, i) => (i === 2 || i >= 5 ? v.padStart(widths[i]!) : v.padEnd(widths[i]!))).join('  ');
  console.log(line(header));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const c of cells) console.log(line(c));
}

/**
 * Progress lines on stderr: shown unless the bench prints JSON, or when `npm run bench` asks its
 * children (which always print JSON to it) to show them.
 */
export function log(json: boolean, msg: string): void {
  if (!json || process.env['DISTILLATE_BENCH_PROGRESS'] === '1') process.stderr.write(`${msg}\n`);
}

/**
 * The command every sub-benchmark shares: --json, --quick and (with a default directory) --dir.
 * Add its own options, then `.action(main)` and runCli.
 */
export function benchProgram(name: string, scratchDir?: string): Command {
  const program = new Command(name)
    .option('--json', 'one JSON object per line', false)
    .option('--quick', 'small sizes (for tests); the numbers mean little', false);
  return scratchDir === undefined ? program : program.option('--dir <dir>', 'scratch directory', scratchDir);
}
