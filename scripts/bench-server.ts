/**
 * npm run bench:server [-- --json] [-- --quick]
 *
 * Precompute-job throughput (samples/s, dataset → ORT → cache on disk) against a bare
 * `session.run` loop over the same model and batches, and against PyTorch eager on the same
 * network and weights when python3-torch is installed. Both ORT and torch at 2 threads.
 */
import { spawnSync } from 'node:child_process';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DatasetReader, writeSyntheticDataset, runCli } from '@distillate/shared';
import { OrtSession } from '@distillate/shared/onnx';
import { createServices, resolveConfig } from '@distillate/server';
import { pino } from 'pino';
import { log, median, printRows, row, type BenchRow, benchProgram } from './bench/report.js';
import { BENCH_CNN, benchCnn } from './bench/teacher-model.js';

const THREADS = 2;

async function main(opts: { json: boolean; quick: boolean; dir: string }): Promise<void> {
  // 60,000 rows (Fashion-MNIST's train split): a job's fixed costs (fingerprint, fsyncs of the
  // job record, manifest and progress file) are then amortised as in real use.
  const rowsN = opts.quick ? 512 : 60_000;
  const torchRows = Math.min(rowsN, 10_000);
  const runs = opts.quick ? 1 : 5;
  const batch = 256;
  const dir = opts.dir;
  await rm(dir, { recursive: true, force: true });
  for (const d of ['models', 'data', 'cache']) await mkdir(join(dir, d), { recursive: true });
  const { onnx, weights } = benchCnn();
  await writeFile(join(dir, 'models', 'cnn.onnx'), onnx);
  await writeSyntheticDataset(join(dir, 'data', 'd.arrow'), { rows: rowsN, inputShape: [28, 28, 1], classes: 10, batchRows: 4096 });
  const rows: BenchRow[] = [];

  // Bare loop: the same preprocessing (uint8 → float), the same batches, no cache writing.
  log(opts.json, `bare session.run loop: ${rowsN} samples, batch ${batch}, ${THREADS} threads`);
  const session = await OrtSession.create(onnx, { provider: 'cpu', intraOpThreads: THREADS });
  const dataset = await DatasetReader.open(join(dir, 'data', 'd.arrow'));
  const bare = async () => {
    const t0 = performance.now();
    for await (const b of dataset) {
      for (let r = 0; r < b.rows; r += batch) {
        const n = Math.min(batch, b.rows - r);
        const src = b.inputs.subarray(r * 784, (r + n) * 784);
        const x = new Float32Array(src.length);
        for (let i = 0; i < src.length; i++) x[i] = src[i]! * (1 / 255);
        await session.run('image', x, [n, 1, 28, 28], 'logits');
      }
    }
    return rowsN / ((performance.now() - t0) / 1000);
  };
  await bare();
  const bareRates: number[] = [];
  const jobRates: number[] = [];
  const config = resolveConfig(
    { models: join(dir, 'models'), data: join(dir, 'data'), cache: join(dir, 'cache'), threads: THREADS, provider: 'cpu', logLevel: 'silent' },
    {},
  );
  const services = await createServices(config, pino({ level: 'silent' }));
  await services.jobs.init();
  const job = async () => {
    await rm(join(dir, 'cache'), { recursive: true, force: true });
    await mkdir(join(dir, 'cache', '.jobs'), { recursive: true });
    const t0 = performance.now();
    const j = await services.jobs.create({ type: 'precompute', teacher: 'cnn', dataset: 'd.arrow', batchSize: batch });
    await services.jobs.idle();
    if (services.jobs.get(j.id).state !== 'succeeded') throw new Error(`job ${services.jobs.get(j.id).state}: ${services.jobs.get(j.id).error?.message}`);
    return rowsN / ((performance.now() - t0) / 1000);
  };
  log(opts.json, `precompute job: same model, data and batch size (median of ${runs}, interleaved with the bare loop)`);
  await job();
  for (let i = 0; i < runs; i++) {
    bareRates.push(await bare());
    jobRates.push(await job());
  }
  const bareMedian = median(bareRates);
  const jobMedian = median(jobRates);
  rows.push(row('server', 'precompute_job', jobMedian, 'samples/s', { name: 'bare session.run loop', value: bareMedian }));

  // PyTorch eager on the same network and weights.
  const torch = spawnSync('/usr/bin/python3', ['-c', 'import torch'], { encoding: 'utf8' });
  if (torch.status === 0) {
    log(opts.json, 'PyTorch eager, same network and weights');
    const entries = Object.entries(weights);
    const layout = entries.map(([k, v]) => [k, v.dims] as const);
    const flat = new Float32Array(entries.reduce((a, [, v]) => a + v.data.length, 0));
    let off = 0;
    for (const [, v] of entries) {
      flat.set(v.data, off);
      off += v.data.length;
    }
    // PyTorch's nn layout for the dense layers is the same [in, out] matmul used here.
    await writeFile(join(dir, 'weights.bin'), new Uint8Array(flat.buffer));
    // torch runs on the first 10,000 rows (its rate is per sample; the full set would take minutes).
    const inputs = new Float32Array(torchRows * 784);
    let at = 0;
    for await (const b of dataset) {
      const n = Math.min(b.inputs.length, inputs.length - at);
      for (let i = 0; i < n; i++) inputs[at + i] = b.inputs[i]! / 255;
      at += n;
      if (at >= inputs.length) break;
    }
    await writeFile(join(dir, 'inputs.bin'), new Uint8Array(inputs.buffer));
    const spec = { threads: THREADS, weights: join(dir, 'weights.bin'), inputs: join(dir, 'inputs.bin'), layout, batch, runs };
    const r = spawnSync('/usr/bin/python3', [join(import.meta.dirname, 'bench', 'torch_cnn.py'), JSON.stringify(spec)], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`torch peer failed: ${r.stderr.trim().split('\n').at(-1)}`);
    const t = JSON.parse(r.stdout.trim()) as { samples_per_s: number; torch: string };
    rows.push(row('server', 'ort_bare_vs_torch_eager', bareMedian, 'samples/s', { name: `torch ${t.torch} eager CPU`, value: t.samples_per_s }));
    rows.push(row('server', 'precompute_job_vs_torch_eager', jobMedian, 'samples/s', { name: `torch ${t.torch} eager CPU`, value: t.samples_per_s }));
  } else {
    log(opts.json, 'python3-torch not installed: skipping the PyTorch peer (apt-get install python3-torch)');
  }
  await session.release();
  await services.teachers.releaseAll();
  await rm(dir, { recursive: true, force: true });
  log(opts.json, `model: ${BENCH_CNN.description}`);
  printRows(rows, opts.json);
}

const program = benchProgram('bench-server', '.bench/server').action(main);

await runCli(program);
