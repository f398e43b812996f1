/**
 * `npm run bench -- --quick --json`: every sub-benchmark runs at its quick size and prints
 * well-formed rows. No timing is asserted; the quick numbers mean nothing.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FASHION_MNIST_PACKAGE, REDIS_PACKAGE, skipUnless, titled } from './helpers/system.js';

const ROOT = join(import.meta.dirname, '..');
// bench:distributed runs the shipped teacher over Fashion-MNIST on a real redis-server.
const skip = skipUnless(FASHION_MNIST_PACKAGE, REDIS_PACKAGE);

/**
 * Run `scripts/bench.ts` without blocking this worker's event loop (a synchronous spawn of a
 * minute or more starves vitest's worker RPC and fails the run).
 */
function bench(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--conditions=source', '--import', 'tsx', 'scripts/bench.ts', ...args], { cwd: ROOT });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

describe('npm run bench -- --quick --json', () => {
  it.skipIf(skip !== undefined)(
    titled(
      'runs cache, server, distributed, trainer, ort, crossover, storage and import, one well-formed JSON row per line, and leaves BENCHMARKS.md alone',
      skip,
    ),
    async () => {
      const before = readFileSync(join(ROOT, 'BENCHMARKS.md'), 'utf8');
      const r = await bench(['--quick', '--json']);
      expect(r.status, r.stderr).toBe(0);
      const lines = r.stdout.trim().split('\n');
      const rows = lines.map((l) => JSON.parse(l));
      for (const row of rows) {
        const keys = ['bench', 'metric', 'value', 'unit', 'peer', 'peerValue', 'ratio'];
        expect(Object.keys(row)).toEqual(row.pairs === undefined ? keys : [...keys, 'ratioRange', 'pairs']);
        expect(typeof row.metric).toBe('string');
        expect(Number.isFinite(row.value)).toBe(true);
        expect(typeof row.unit).toBe('string');
        if (row.peer === null) {
          expect(row.peerValue).toBeNull();
          expect(row.ratio).toBeNull();
        } else {
          expect(Number.isFinite(row.peerValue)).toBe(true);
          // A paired row's ratio is the median of its pairs' ratios, within their range; a plain row's is value / peer.
          if (row.pairs === undefined) expect(row.ratio).toBeCloseTo(row.value / row.peerValue, 1);
          else expect(row.ratioRange[0] <= row.ratio && row.ratio <= row.ratioRange[1]).toBe(true);
        }
      }
      const metrics = (bench: string) => rows.filter((x) => x.bench === bench).map((x) => x.metric);
      expect(metrics('cache')).toContain('write_dense_f32_fsync');
      expect(metrics('server')).toContain('precompute_job');
      expect(metrics('distributed')).toEqual(
        expect.arrayContaining(['in_process_1_thread', 'distributed_1_worker_vs_in_process', 'distributed_2_workers_vs_1', 'time_2_workers_teacher_ms']),
      );
      expect(metrics('trainer')).toEqual(
        expect.arrayContaining([
          'ort_train_mlp_784_512_256_10',
          'ort_train_cnn_32_64_128',
          'ort_train_mlp_gflops',
          'ort_train_mlp_cpu_percent',
          'ort_train_cnn_cpu_percent',
          'train_mlp_784_512_256_10',
          'train_cnn_32_64_128',
          'ort_train_peak_rss_10x_dataset',
          'ort_train_peak_rss_20x_dataset',
        ]),
      );
      expect(metrics('ort')).toEqual(
        expect.arrayContaining([
          'maxpool_fwd_grad_space_to_depth_ms',
          'conv_dw_patches_ms',
          'relu_grad_where_ms',
          'step_ms_mlp_784_512_256_10_32_per_run',
          'step_ms_cnn_32_64_128_32_per_run',
          'step_ms_mlp_784_512_256_10_threads',
          'step_ms_cnn_32_64_128_threads',
        ]),
      );
      expect(metrics('crossover')).toEqual(
        expect.arrayContaining([
          'students_1_precompute_plus_train_s',
          'students_4_precompute_plus_train_s',
          'students_16_precompute_plus_train_s',
          'speedup_at_16_students',
        ]),
      );
      expect(metrics('storage')).toEqual(
        expect.arrayContaining([
          'bytes_per_row_dense_f32',
          'bytes_per_row_dense_f16',
          'bytes_per_row_topk_5',
          'bytes_per_row_topk_10',
          'bytes_per_row_topk_20',
        ]),
      );
      expect(metrics('import')).toContain('images_per_second_jpeg_56_to_28_gray');
      expect(readFileSync(join(ROOT, 'BENCHMARKS.md'), 'utf8')).toBe(before);
    },
    600_000,
  );

  it('rejects an unknown benchmark with a one-line reason', async () => {
    const r = await bench(['--only', 'cache,nope']);
    expect(r.status).not.toBe(0);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toContain('unknown benchmark(s) nope');
  });
});
