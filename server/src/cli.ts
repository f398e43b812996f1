/**
 * distillate-server serve | precompute | label
 */
import { SingleBar, Presets } from 'cli-progress';
import { Command, InvalidArgumentError, Option } from 'commander';
import { runCli } from '@distillate/shared';
import { pino } from 'pino';
import { resolveConfig, type ServerConfigInput } from './config.js';
import { createServices, startServer } from './server.js';
import { JobRequestSchema, type JobRecord, type JobRequestInput } from './jobs/index.js';
import { toAppError, zodToAppError } from './errors.js';

const int = (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError('expected a non-negative integer');
  return n;
};
const num = (v: string) => {
  const n = Number(v);
  if (!Number.isFinite(n)) throw new InvalidArgumentError('expected a number');
  return n;
};

interface CommonFlags {
  models?: string;
  data?: string;
  cache?: string;
  ep?: 'cuda' | 'webgpu' | 'cpu';
  threads?: number;
  shardRows?: number;
}

function common(cmd: Command): Command {
  return cmd
    .option('--models <dir>', 'directory of teacher *.onnx files (env DISTILLATE_MODELS)')
    .option('--data <dir>', 'root for dataset paths (env DISTILLATE_DATA)')
    .option('--cache <dir>', 'logit cache root (env DISTILLATE_CACHE)')
    .addOption(new Option('--ep <provider>', 'force an execution provider (env DISTILLATE_EP)').choices(['cuda', 'webgpu', 'cpu']))
    .option('--threads <n>', 'ORT intra-op threads (env DISTILLATE_THREADS)', int)
    .option('--shard-rows <n>', 'rows per cache shard (default: 16 MiB worth)', int);
}

function configFrom(flags: CommonFlags & Partial<ServerConfigInput>, extra: Partial<ServerConfigInput> = {}) {
  return resolveConfig({
    models: flags.models,
    data: flags.data,
    cache: flags.cache,
    provider: flags.ep,
    threads: flags.threads,
    shardRows: flags.shardRows,
    ...extra,
  } as Partial<ServerConfigInput>);
}

async function runJobInProcess(flags: CommonFlags, request: JobRequestInput): Promise<void> {
  const config = configFrom(flags, { logLevel: 'warn' });
  // The command reports a failed job itself, in one line; the job's own error log would be a second.
  const logger = pino({ level: 'fatal' }, pino.destination(2));
  const services = await createServices(config, logger);
  const { jobs } = services;
  await jobs.init(); // also resumes interrupted jobs left by a crashed run
  const parsed = JobRequestSchema.safeParse(request);
  if (!parsed.success) throw zodToAppError(parsed.error);
  const job = await jobs.create(parsed.data);
  const bar = new SingleBar({ format: `${request.type} ${request.teacher} [{bar}] {percentage}% | {value}/{total} rows | ETA {eta_formatted}`, hideCursor: true, etaBuffer: 50 }, Presets.shades_classic);
  let started = false;
  const stop = jobs.subscribe(job.id, (e) => {
    if (!started && e.job.progress.total > 0) {
      bar.start(e.job.progress.total, e.job.progress.done);
      started = true;
    }
    if (started) bar.update(e.job.progress.done);
  });
  const onSignal = () => void jobs.shutdown();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  await jobs.idle();
  stop();
  if (started) bar.stop();
  await services.teachers.releaseAll();
  const done: JobRecord = jobs.get(job.id);
  if (done.state !== 'succeeded') {
    throw new Error(done.error?.message ?? `job ${done.state}${done.state === 'queued' ? ' (interrupted; run the same command again to resume)' : ''}`);
  }
  console.log(`${done.cacheHit === true ? 'cache hit' : 'wrote cache'} ${done.cacheKey} (${done.progress.total} rows) in ${config.cache}`);
  if (done.selection !== undefined) console.log(`selected ${done.selection.rows} rows → ${done.selection.path} (per class ${done.selection.perClass.join('/')})`);
}

export function buildProgram(): Command {
  const program = new Command('distillate-server').description('Teacher soft-label server: ONNX teachers, logit caches, HTTP API');

  common(program.command('serve').description('serve the HTTP API'))
    .option('--host <host>', 'bind address (env DISTILLATE_HOST)', undefined)
    .option('--port <port>', 'port; 0 picks a free one (env DISTILLATE_PORT)', int)
    .option('--token <token>', 'require Authorization: Bearer <token> on mutating routes (env DISTILLATE_TOKEN)')
    .option('--max-batch <n>', 'online dynamic batch size cap', int)
    .option('--max-wait-ms <ms>', 'online batching wait', num)
    .option('--max-queue-rows <n>', 'online queue capacity in rows (429 beyond)', int)
    .action(async (flags: CommonFlags & { host?: string; port?: number; token?: string; maxBatch?: number; maxWaitMs?: number; maxQueueRows?: number }) => {
      const config = configFrom(flags, {
        host: flags.host,
        port: flags.port,
        token: flags.token,
        maxBatch: flags.maxBatch,
        maxWaitMs: flags.maxWaitMs,
        maxQueueRows: flags.maxQueueRows,
      } as Partial<ServerConfigInput>);
      const logger = pino({ level: config.logLevel });
      const server = await startServer(config, logger);
      console.log(`distillate-server listening on ${server.url}`);
      const shutdown = (signal: string) => {
        logger.info({ signal }, 'shutting down');
        // Give in-flight work a bounded time; never hang on exit.
        setTimeout(() => process.exit(1), 10_000).unref();
        void server.close().then(() => process.exit(0));
      };
      process.once('SIGINT', () => shutdown('SIGINT'));
      process.once('SIGTERM', () => shutdown('SIGTERM'));
    });

  const jobFlags = (cmd: Command) =>
    common(cmd)
      .requiredOption('--teacher <name>', 'teacher name (file stem under --models)')
      .requiredOption('--dataset <path>', 'dataset file, relative to --data')
      .option('--temperature <t>', 'temperature T (logits stored as z/T)', num, 1)
      .addOption(new Option('--storage <mode>', 'dense or topk').choices(['dense', 'topk']).default('dense'))
      .option('--k <k>', 'k for top-k storage', int, 10)
      .addOption(new Option('--dtype <dtype>', 'stored value type').choices(['float32', 'float16']).default('float32'))
      .option('--batch-size <n>', 'rows per teacher call', int, 256);

  type JobFlags = CommonFlags & { teacher: string; dataset: string; temperature: number; storage: 'dense' | 'topk'; k: number; dtype: 'float32' | 'float16'; batchSize: number };
  const request = (type: 'precompute' | 'label', f: JobFlags): JobRequestInput => ({
    type,
    teacher: f.teacher,
    dataset: f.dataset,
    temperature: f.temperature,
    storage: f.storage === 'dense' ? { mode: 'dense', dtype: f.dtype } : { mode: 'topk', k: f.k, dtype: f.dtype },
    batchSize: f.batchSize,
  });

  jobFlags(program.command('precompute').description('precompute teacher logits for a dataset into the cache (no HTTP)')).action(async (f: JobFlags) => {
    await runJobInProcess(f, request('precompute', f));
  });

  jobFlags(program.command('label').description('label a pool: logits plus pseudo-label, confidence, entropy, margin; optionally write the selected rows'))
    .option('--threshold <p>', 'select rows with confidence ≥ p', num)
    .option('--per-class-max <n>', 'select at most n rows per class', int)
    .option('--output <path>', 'write the selection as a dataset (relative to --data)')
    .action(async (f: JobFlags & { threshold?: number; perClassMax?: number; output?: string }) => {
      const select = f.threshold !== undefined || f.perClassMax !== undefined || f.output !== undefined;
      await runJobInProcess(f, {
        ...request('label', f),
        ...(select
          ? { label: { threshold: f.threshold ?? 0, ...(f.perClassMax === undefined ? {} : { perClassMax: f.perClassMax }), ...(f.output === undefined ? {} : { output: f.output }) } }
          : {}),
      });
    });

  return program;
}

/** Parse argv and run; errors become one line on stderr and exit code 1. */
export function main(argv = process.argv): Promise<void> {
  return runCli(buildProgram(), argv, (e) => {
    const known = toAppError(e);
    return known !== undefined ? `${known.code}: ${known.message}` : e.message;
  });
}
