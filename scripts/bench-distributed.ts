/**
 * npm run bench:distributed [-- --json] [-- --quick]
 *
 * The shipped teacher over Fashion-MNIST's 60,000 training rows, three ways, in one run:
 *   - the in-process job, 1 ORT thread (today's default path);
 *   - a coordinator (`serve --queue`, this process) with 1 worker × 1 thread;
 *   - the same coordinator with 2 workers × 1 thread each.
 * Each figure is rows/s from job creation to the manifest, median of interleaved runs, with the
 * workers started and their teacher loaded beforehand (a warm-up job). Scaling is 2 workers
 * against 1 (target ≥ 1.7×); overhead is 1 worker against the in-process job (target ≥ 0.9×).
 * Where the time goes comes from the workers' own timings (read, teacher, encode, upload) and
 * the coordinator's (verify, write). Redis is a real redis-server started here.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { copyFile, mkdir, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { FASHION_MNIST_CLASSES, FASHION_MNIST_FILES, acquireFashionMnist, headDataset, importIdxPair, runCli } from '@distillate/shared';
import { resolveConfig, startServer, type RunningServer } from '@distillate/server';
import { pino } from 'pino';
import { freePort, startRedis } from './bench/redis-server.js';
import { log, median, printRows, row, benchProgram, type BenchRow } from './bench/report.js';

const ROOT = resolve(import.meta.dirname, '..');
const TEACHER = 'fmnist-teacher';

interface WorkerView {
  id: string;
  rows: number;
  timing: { read: number; teacher: number; encode: number; upload: number };
}

async function main(opts: { json: boolean; quick: boolean; dir: string }): Promise<void> {
  const runs = opts.quick ? 1 : 5;
  const rowsTotal = opts.quick ? 2000 : 60_000;
  const dir = resolve(opts.dir);
  await rm(dir, { recursive: true, force: true });
  for (const d of ['models', 'data']) await mkdir(join(dir, d), { recursive: true });
  for (const f of [`${TEACHER}.onnx`, `${TEACHER}.json`]) await copyFile(join(ROOT, 'models', f), join(dir, 'models', f));
  const source = await acquireFashionMnist();
  const split = opts.quick ? 'test' : 'train';
  const files = FASHION_MNIST_FILES[split];
  await importIdxPair({
    images: join(source.dir, files.images),
    labels: join(source.dir, files.labels),
    out: join(dir, 'data', `${split}.arrow`),
    classes: FASHION_MNIST_CLASSES,
  });
  const dataset = opts.quick ? 'test-2k.arrow' : 'train.arrow';
  if (opts.quick) await headDataset(join(dir, 'data', 'test.arrow'), join(dir, 'data', dataset), 2000);
  const redis = await startRedis();
  const children: ChildProcess[] = [];
  const servers: RunningServer[] = [];
  const rows: BenchRow[] = [];
  let ceiling: { one: number; two: number } | undefined;
  try {
    const request = { type: 'precompute' as const, teacher: TEACHER, dataset, batchSize: 256 };
    const common = { models: join(dir, 'models'), data: join(dir, 'data'), threads: 1, provider: 'cpu' as const, logLevel: 'silent' as const };

    // In process: the job manager and one teacher session in this process.
    const local = await startServer(resolveConfig({ ...common, cache: join(dir, 'cache-local'), port: 0 }, {}), pino({ level: 'silent' }));
    servers.push(local);
    // The coordinator: same process kind, jobs go to the queue.
    const port = await freePort();
    const coord = await startServer(resolveConfig({ ...common, cache: join(dir, 'cache-dist'), port, queue: redis.url }, {}), pino({ level: 'silent' }));
    servers.push(coord);

    const startWorker = () => {
      const child = spawn(
        process.execPath,
        [
          '--conditions=source',
          '--import',
          'tsx',
          join(ROOT, 'server/src/bin.ts'),
          'worker',
          '--queue',
          redis.url,
          '--server',
          coord.url,
          '--threads',
          '1',
          '--ep',
          'cpu',
          '--models',
          join(dir, 'models'),
          '--data',
          join(dir, 'data'),
        ],
        {
          cwd: ROOT,
          env: { ...process.env, LOG_LEVEL: 'warn' },
          stdio: ['ignore', 'ignore', 'inherit'],
        },
      );
      children.push(child);
      return child;
    };
    const workers = async (): Promise<WorkerView[]> => ((await (await fetch(`${coord.url}/v1/workers`)).json()) as { workers: WorkerView[] }).workers;
    const until = async (what: string, ok: () => Promise<boolean>) => {
      for (let t = 0; !(await ok()); t++) {
        if (t > 600) throw new Error(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    };

    /** One job on a server, from creation to success; a fresh cache every time. */
    const time = async (server: RunningServer, cache: string) => {
      await rm(cache, { recursive: true, force: true });
      await mkdir(join(cache, '.jobs'), { recursive: true });
      const t0 = performance.now();
      const job = await server.jobs.create(request);
      await server.jobs.idle();
      const seconds = (performance.now() - t0) / 1000;
      const done = server.jobs.get(job.id);
      if (done.state !== 'succeeded') throw new Error(`job ${done.state}: ${done.error?.message ?? ''}`);
      return { rate: done.progress.total / seconds, job: done };
    };

    const w1 = startWorker();
    await until('a worker', async () => (await workers()).length === 1);
    log(opts.json, `warm-up: in-process and distributed jobs over ${dataset}`);
    await time(local, join(dir, 'cache-local'));
    await time(coord, join(dir, 'cache-dist'));

    const inProcess: number[] = [];
    const one: number[] = [];
    for (let i = 0; i < runs; i++) {
      log(opts.json, `run ${i + 1}/${runs}: in process, 1 thread; coordinator + 1 worker`);
      inProcess.push((await time(local, join(dir, 'cache-local'))).rate);
      one.push((await time(coord, join(dir, 'cache-dist'))).rate);
    }
    const w2 = startWorker();
    await until('two workers', async () => (await workers()).length === 2);
    await time(coord, join(dir, 'cache-dist')); // the second worker's teacher loads here
    const two: number[] = [];
    let breakdown: { workers: Record<string, number>; coordinator: { verify: number; write: number }; tasks: number } | undefined;
    for (let i = 0; i < runs; i++) {
      log(opts.json, `run ${i + 1}/${runs}: coordinator + 2 workers`);
      const before = await workers();
      const r = await time(coord, join(dir, 'cache-dist'));
      two.push(r.rate);
      // Workers report after every task; give the last report a moment to land.
      await new Promise((res) => setTimeout(res, 300));
      const after = await workers();
      const sum = { read: 0, teacher: 0, encode: 0, upload: 0 };
      for (const w of after) {
        const b = before.find((x) => x.id === w.id);
        for (const k of Object.keys(sum) as Array<keyof typeof sum>) sum[k] += w.timing[k] - (b?.timing[k] ?? 0);
      }
      breakdown = { workers: sum, coordinator: r.job.distributed!.timing, tasks: r.job.distributed!.tasks };
    }
    for (const c of [w1, w2]) c.kill('SIGTERM');

    // The machine's own ceiling: the bare teacher loop in 1 process, then in 2 processes at once
    // (half the rows each), no queue, no cache. What 2 workers could reach at best here.
    const bare = async (n: number): Promise<number> => {
      const procs = Array.from({ length: n }, () =>
        spawn(
          process.execPath,
          [
            '--conditions=source',
            '--import',
            'tsx',
            join(ROOT, 'scripts/bench/bare-teacher.ts'),
            join(dir, 'models'),
            TEACHER,
            join(dir, 'data', dataset),
            String(Math.floor(rowsTotal / n)),
          ],
          { cwd: ROOT, stdio: ['pipe', 'pipe', 'inherit'] },
        ),
      );
      const outs = procs.map((p) => {
        let out = '';
        p.stdout!.on('data', (d: Buffer) => (out += d.toString()));
        return {
          ready: new Promise<void>((r) => p.stdout!.on('data', () => out.includes('ready') && r())),
          done: new Promise<number>((r) => p.once('exit', () => r((JSON.parse(out.slice(out.indexOf('{'))) as { rowsPerSecond: number }).rowsPerSecond))),
        };
      });
      await Promise.all(outs.map((o) => o.ready));
      for (const p of procs) p.stdin!.write('go\n');
      const rates = await Promise.all(outs.map((o) => o.done));
      return rates.reduce((a, b) => a + b, 0);
    };
    log(opts.json, 'ceiling: the bare teacher loop, 1 process, then 2 at once');
    const bare1: number[] = [];
    const bare2: number[] = [];
    for (let i = 0; i < Math.min(runs, 3); i++) {
      bare1.push(await bare(1));
      bare2.push(await bare(2));
    }
    ceiling = { one: median(bare1), two: median(bare2) };

    const local1 = median(inProcess);
    const d1 = median(one);
    const d2 = median(two);
    rows.push(row('distributed', 'in_process_1_thread', local1, 'rows/s'));
    rows.push(row('distributed', 'distributed_1_worker_vs_in_process', d1, 'rows/s', { name: 'in-process job, 1 thread (target ≥ 0.9×)', value: local1 }));
    rows.push(row('distributed', 'distributed_2_workers_vs_1', d2, 'rows/s', { name: 'coordinator + 1 worker (target ≥ 1.7×)', value: d1 }));
    if (ceiling !== undefined)
      rows.push(
        row('distributed', 'ceiling_bare_teacher_2_processes_vs_1', ceiling.two, 'rows/s', { name: 'bare teacher loop, 1 process', value: ceiling.one }),
      );
    if (breakdown !== undefined) {
      // Busy time summed over both workers, then the coordinator's, for the last 2-worker run.
      for (const [k, v] of Object.entries(breakdown.workers)) rows.push(row('distributed', `time_2_workers_${k}_ms`, v, 'ms'));
      rows.push(row('distributed', 'time_2_workers_coordinator_verify_ms', breakdown.coordinator.verify, 'ms'));
      rows.push(row('distributed', 'time_2_workers_coordinator_write_ms', breakdown.coordinator.write, 'ms'));
      rows.push(row('distributed', 'tasks_per_job', breakdown.tasks, 'tasks'));
    }
  } finally {
    for (const c of children) c.kill('SIGKILL');
    for (const s of servers) await s.close();
    await redis.stop();
    await rm(dir, { recursive: true, force: true });
  }
  printRows(rows, opts.json);
}

const program = benchProgram('bench-distributed', '.bench/distributed').action(main);

await runCli(program);
