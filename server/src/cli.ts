/**
 * distillate-server serve | precompute | label | worker | import | export-labels
 */
import { SingleBar, Presets } from 'cli-progress';
import { Command, InvalidArgumentError, Option } from 'commander';
import { runCli, type FeatureSpecInput } from '@distillate/shared';
import { pino } from 'pino';
import { resolveConfig, type ServerConfigInput } from './config.js';
// Each command loads what it runs when it runs (below): loading every module a command might
// need took 0.8 s before any work (the HTTP server, the queue, onnxruntime, polars), most of an
// import of a few thousand images.
import type { JobRecord, JobRequestInput } from './jobs/index.js';
import type { Fit } from './import/image-folder.js';
import type { LabelFormat } from './export-labels.js';
import { toAppError, zodToAppError } from './errors.js';
import { reportPath } from './import/sink.js';
import { parseSplit, writeSplits } from './import/splits.js';
import { homedir } from 'node:os';
import { join } from 'node:path';

const int = (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError('expected a non-negative integer');
  return n;
};
/** `HxW`, e.g. 28x28. */
const size = (v: string): [number, number] => {
  const m = /^(\d+)x(\d+)$/i.exec(v.trim());
  if (m === null || Number(m[1]) === 0 || Number(m[2]) === 0) throw new InvalidArgumentError('expected HxW in pixels, e.g. 28x28');
  return [Number(m[1]), Number(m[2])];
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

/**
 * Submit the job to a running server (a coordinator with workers, say) and follow its events:
 * the bar shows rows, ETA and the live worker count. Ctrl-C stops following; the job goes on.
 */
async function runJobRemote(server: string, token: string | undefined, request: JobRequestInput): Promise<void> {
  const { JobRequestSchema } = await import('./jobs/index.js');
  const parsed = JobRequestSchema.safeParse(request);
  if (!parsed.success) throw zodToAppError(parsed.error);
  const base = server.replace(/\/+$/, '');
  const headers: Record<string, string> = token === undefined ? {} : { authorization: `Bearer ${token}` };
  const call = async (path: string, init: RequestInit = {}) => {
    const res = await fetch(`${base}${path}`, { ...init, headers: { ...headers, ...(init.headers as Record<string, string> | undefined) } }).catch(
      (err: unknown) => {
        throw new Error(`cannot reach ${base}: ${(err as { cause?: { code?: string } }).cause?.code ?? (err as Error).message}`);
      },
    );
    if (!res.ok) {
      const body = (await res.json().catch(() => undefined)) as { error?: { code: string; message: string } } | undefined;
      throw new Error(body?.error !== undefined ? `${body.error.code}: ${body.error.message}` : `${path}: HTTP ${res.status}`);
    }
    return res;
  };
  const created = (await (
    await call('/v1/jobs', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(parsed.data) })
  ).json()) as { id: string };
  const bar = new SingleBar(
    {
      format: `${request.type} ${request.teacher} [{bar}] {percentage}% | {value}/{total} rows | {workers} | ETA {eta_formatted}`,
      hideCursor: true,
      etaBuffer: 50,
    },
    Presets.shades_classic,
  );
  let started = false;
  let last: RemoteJob | undefined;
  const abort = new AbortController();
  process.once('SIGINT', () => abort.abort());
  try {
    const res = await call(`/v1/jobs/${created.id}/events`, { signal: abort.signal });
    const decoder = new TextDecoder();
    let buffer = '';
    for await (const chunk of res.body as AsyncIterable<Uint8Array>) {
      buffer += decoder.decode(chunk, { stream: true });
      let cut: number;
      while ((cut = buffer.indexOf('\n\n')) >= 0) {
        const data = buffer
          .slice(0, cut)
          .split('\n')
          .find((l) => l.startsWith('data: '));
        buffer = buffer.slice(cut + 2);
        if (data === undefined) continue;
        last = JSON.parse(data.slice(6)) as RemoteJob;
        const workers = last.distributed === undefined ? 'in process' : `${last.distributed.workers} workers`;
        if (!started && last.progress.total > 0) {
          bar.start(last.progress.total, last.progress.done, { workers });
          started = true;
        }
        if (started) bar.update(last.progress.done, { workers });
      }
    }
  } catch (err) {
    if (!abort.signal.aborted) throw err;
  } finally {
    if (started) bar.stop();
  }
  if (abort.signal.aborted) {
    console.log(`stopped following; job ${created.id} goes on at ${base}`);
    return;
  }
  if (last?.state !== 'succeeded') throw new Error(last?.error?.message ?? `job ${created.id} ${last?.state ?? 'ended without a state'}`);
  console.log(`${last.cacheHit === true ? 'cache hit' : 'wrote cache'} ${last.cacheKey} (${last.progress.total} rows) on ${base}`);
  for (const w of last.warnings ?? []) console.log(`warning: ${w}`);
}

interface RemoteJob {
  state: string;
  progress: { done: number; total: number };
  cacheKey?: string;
  cacheHit?: boolean;
  error?: { code: string; message: string };
  distributed?: { workers: number; tasks: number };
  warnings?: string[];
}

async function runJobInProcess(flags: CommonFlags, request: JobRequestInput): Promise<void> {
  const config = configFrom(flags, { logLevel: 'warn' });
  // The command reports a failed job itself, in one line; the job's own error log would be a second.
  const logger = pino({ level: 'fatal' }, pino.destination(2));
  const { createServices } = await import('./server.js');
  const { JobRequestSchema } = await import('./jobs/index.js');
  const services = await createServices(config, logger);
  const { jobs } = services;
  await jobs.init(); // also resumes interrupted jobs left by a crashed run
  const parsed = JobRequestSchema.safeParse(request);
  if (!parsed.success) throw zodToAppError(parsed.error);
  const job = await jobs.create(parsed.data);
  const bar = new SingleBar(
    { format: `${request.type} ${request.teacher} [{bar}] {percentage}% | {value}/{total} rows | ETA {eta_formatted}`, hideCursor: true, etaBuffer: 50 },
    Presets.shades_classic,
  );
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
  if (done.selection !== undefined)
    console.log(`selected ${done.selection.rows} rows → ${done.selection.path} (per class ${done.selection.perClass.join('/')})`);
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
    .option(
      '--queue <url>',
      'run jobs as shard tasks on BullMQ: redis://[:password@]host:port[/db] (env DISTILLATE_QUEUE; password also from DISTILLATE_QUEUE_PASSWORD); default in process',
    )
    .action(
      async (
        flags: CommonFlags & { host?: string; port?: number; token?: string; maxBatch?: number; maxWaitMs?: number; maxQueueRows?: number; queue?: string },
      ) => {
        const config = configFrom(flags, {
          queue: flags.queue,
          host: flags.host,
          port: flags.port,
          token: flags.token,
          maxBatch: flags.maxBatch,
          maxWaitMs: flags.maxWaitMs,
          maxQueueRows: flags.maxQueueRows,
        } as Partial<ServerConfigInput>);
        const logger = pino({ level: config.logLevel });
        const { startServer } = await import('./server.js');
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
      },
    );

  const jobFlags = (cmd: Command) =>
    common(cmd)
      .requiredOption('--teacher <name>', 'teacher name (file stem under --models)')
      .requiredOption('--dataset <path>', 'dataset file, relative to --data')
      .option('--temperature <t>', 'temperature T (logits stored as z/T)', num, 1)
      .addOption(
        new Option('--storage <mode>', 'dense, topk, or sampled (token datasets: --samples draws per position)')
          .choices(['dense', 'topk', 'sampled'])
          .default('dense'),
      )
      .option('--k <k>', 'k for top-k storage', int, 10)
      .option('--samples <n>', 'draws per position for sampled storage (1–255)', int, 16)
      .option('--sample-seed <n>', 'seed of the draws for sampled storage', int, 1)
      .addOption(new Option('--dtype <dtype>', 'stored value type').choices(['float32', 'float16']).default('float32'))
      .option('--batch-size <n>', 'rows per teacher call', int, 256)
      .option(
        '--feature <spec>',
        'also store a teacher tensor, repeatable: NAME[,pool=none|avg|max][,grid=HxW][,dtype=float16|float32] (names: distillate-server tensors)',
        (v: string, all: FeatureSpecInput[] = []) => [...all, parseFeatureFlag(v)],
      )
      .option('--server <url>', 'submit the job to this server (a coordinator) and follow it, instead of running it here')
      .option('--token <token>', "the server's bearer token (env DISTILLATE_TOKEN)");

  type JobFlags = CommonFlags & {
    server?: string;
    token?: string;
    teacher: string;
    dataset: string;
    temperature: number;
    storage: 'dense' | 'topk' | 'sampled';
    k: number;
    samples: number;
    sampleSeed: number;
    dtype: 'float32' | 'float16';
    batchSize: number;
    feature?: FeatureSpecInput[];
  };
  const request = (type: 'precompute' | 'label', f: JobFlags): JobRequestInput => ({
    type,
    teacher: f.teacher,
    dataset: f.dataset,
    temperature: f.temperature,
    storage:
      f.storage === 'dense'
        ? { mode: 'dense', dtype: f.dtype }
        : f.storage === 'topk'
          ? { mode: 'topk', k: f.k, dtype: f.dtype }
          : { mode: 'sampled', n: f.samples, seed: f.sampleSeed },
    batchSize: f.batchSize,
    ...(f.feature === undefined ? {} : { features: f.feature }),
  });

  const run = (f: JobFlags, r: JobRequestInput) =>
    f.server === undefined ? runJobInProcess(f, r) : runJobRemote(f.server, f.token ?? process.env['DISTILLATE_TOKEN'], r);

  jobFlags(program.command('precompute').description('precompute teacher logits for a dataset into the cache (in process, or on a server with --server)'))
    .option('--views <k>', 'store K augmented views per image, each with its own logits', int)
    .option('--view-seed <n>', 'seed of the views (with --views)', int, 0)
    .option('--shift <px>', 'views: shift by up to px pixels in x and y', int, 0)
    .option('--flip', 'views: mirror left-right half of the time', false)
    .action(async (f: JobFlags & { views?: number; viewSeed: number; shift: number; flip: boolean }) => {
      await run(f, {
        ...request('precompute', f),
        ...(f.views === undefined ? {} : { views: { count: f.views, seed: f.viewSeed, augment: { shift: f.shift, flip: f.flip } } }),
      });
    });

  jobFlags(program.command('label').description('label a pool: logits plus pseudo-label, confidence, entropy, margin; optionally write the selected rows'))
    .option('--threshold <p>', 'select rows with confidence ≥ p', num)
    .option('--per-class-max <n>', 'select at most n rows per class', int)
    .option('--output <path>', 'write the selection as a dataset (relative to --data)')
    .action(async (f: JobFlags & { threshold?: number; perClassMax?: number; output?: string }) => {
      const select = f.threshold !== undefined || f.perClassMax !== undefined || f.output !== undefined;
      await run(f, {
        ...request('label', f),
        ...(select
          ? {
              label: {
                threshold: f.threshold ?? 0,
                ...(f.perClassMax === undefined ? {} : { perClassMax: f.perClassMax }),
                ...(f.output === undefined ? {} : { output: f.output }),
              },
            }
          : {}),
      });
    });

  program
    .command('worker')
    .description('run shard tasks from a Redis queue and upload the shards to the coordinator')
    .option('--queue <url>', 'redis://[:password@]host:port[/db] (env DISTILLATE_QUEUE; password also from DISTILLATE_QUEUE_PASSWORD)')
    .requiredOption('--server <url>', 'the coordinator (distillate-server serve --queue …), e.g. http://coordinator:8080')
    .option('--token <token>', "the coordinator's bearer token (env DISTILLATE_TOKEN)")
    .option('--models <dir>', "teachers on this host; one whose sha256 differs from the task's is fetched from the coordinator")
    .option('--data <dir>', 'datasets on this host; rows are read here when the fingerprint matches, else fetched')
    .option('--cache <dir>', 'where fetched teachers are kept (default: $XDG_CACHE_HOME/distillate/worker)')
    .addOption(new Option('--ep <provider>', 'force an execution provider (env DISTILLATE_EP)').choices(['cuda', 'webgpu', 'cpu']))
    .option('--threads <n>', 'ORT intra-op threads (env DISTILLATE_THREADS)', int)
    .option('--concurrency <n>', 'tasks in flight: one runs the teacher while the others read rows or upload', int, 2)
    .option('--lock-ms <ms>', 'a worker silent this long loses its task to another', int, 30_000)
    .action(
      async (f: {
        queue?: string;
        server: string;
        token?: string;
        models?: string;
        data?: string;
        cache?: string;
        ep?: 'cuda' | 'webgpu' | 'cpu';
        threads?: number;
        concurrency: number;
        lockMs: number;
      }) => {
        const queue = f.queue ?? process.env['DISTILLATE_QUEUE'];
        if (queue === undefined || queue === '') throw new Error('worker needs --queue redis://host:port (or DISTILLATE_QUEUE)');
        const env = process.env;
        const threads = f.threads ?? (env['DISTILLATE_THREADS'] === undefined ? undefined : int(env['DISTILLATE_THREADS']));
        const provider = f.ep ?? (env['DISTILLATE_EP'] as 'cuda' | 'webgpu' | 'cpu' | undefined);
        const logger = pino({ level: env['LOG_LEVEL'] ?? 'info' });
        const { startWorker } = await import('./queue/worker.js');
        const { parseQueueUrl } = await import('./queue/redis.js');
        const worker = await startWorker({
          target: parseQueueUrl(queue),
          server: f.server,
          token: f.token ?? env['DISTILLATE_TOKEN'],
          models: f.models ?? env['DISTILLATE_MODELS'],
          data: f.data ?? env['DISTILLATE_DATA'],
          workDir: f.cache ?? join(env['XDG_CACHE_HOME'] ?? join(homedir(), '.cache'), 'distillate', 'worker'),
          provider,
          threads,
          concurrency: Math.max(1, f.concurrency),
          lockMs: f.lockMs,
          logger,
        });
        console.log(`distillate-server worker ${worker.id} waiting for tasks`);
        const stop = () => {
          setTimeout(() => process.exit(1), 30_000).unref();
          void worker.close().then(() => process.exit(0));
        };
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      },
    );

  program
    .command('import')
    .description(
      'import images or a table into a dataset file: a folder (class sub-folders give the labels, a flat folder is an unlabelled pool), or a .parquet, .csv or .jsonl table',
    )
    .argument('<source>', 'the image folder, or the table')
    .option('--input <columns>', 'table: the image column, the list column, or the numeric columns (comma-separated)')
    .option('--label <column>', 'table: the label column (class indices or class names)')
    .option('--key <column>', "table: the column that names each row (default: an image's path, else <file>#<row>)")
    .requiredOption('--out <file>', 'the dataset file to write (.arrow); the import report goes next to it')
    .option('--size <HxW>', "resize every image to H×W pixels (default: the first image's size)", size)
    .addOption(new Option('--channels <n>', '1 (gray) or 3 (sRGB)').choices(['1', '3']).default('3'))
    .addOption(new Option('--fit <how>', 'cover: centre crop; contain: letterbox; fill: stretch').choices(['cover', 'contain', 'fill']).default('cover'))
    .option('--classes <names>', 'class names, comma-separated: for a flat folder (required), or the order of the class folders')
    .addOption(
      new Option('--on-error <policy>', 'a file that cannot be imported: skip it (listed in the report) or fail').choices(['skip', 'fail']).default('skip'),
    )
    .option('--max-skipped <fraction>', 'fail when more than this fraction of the image files is skipped', num, 0.05)
    .option('--max-pixels <n>', 'refuse images with more pixels (decompression-bomb guard)', int, 40_000_000)
    .option('--split <parts>', 'also write stratified random parts, e.g. test=0.1 (<out>-test.arrow; the rest <out>-train.arrow)', parseSplit)
    .option('--seed <n>', 'the seed of --split', int, 1)
    .option('--labelled <n>', 'also split the training rows into n labelled (n / classes per class) and an unlabelled pool', int)
    .action(
      async (
        folder: string,
        f: {
          out: string;
          input?: string;
          label?: string;
          key?: string;
          size?: [number, number];
          channels: '1' | '3';
          fit: Fit;
          classes?: string;
          onError: 'skip' | 'fail';
          maxSkipped: number;
          maxPixels: number;
          split?: Record<string, number>;
          seed: number;
          labelled?: number;
        },
      ) => {
        const bar = new SingleBar(
          { format: 'import [{bar}] {percentage}% | {value}/{total} | ETA {eta_formatted}', hideCursor: true, etaBuffer: 200 },
          Presets.shades_classic,
        );
        let started = false;
        const onProgress = (done: number, total: number): void => {
          if (!process.stderr.isTTY) return;
          if (!started) bar.start(total, 0);
          started = true;
          bar.update(done);
        };
        const common = {
          out: f.out,
          ...(f.size === undefined ? {} : { size: f.size }),
          channels: f.channels === '1' ? (1 as const) : (3 as const),
          fit: f.fit,
          ...(f.classes === undefined ? {} : { classes: f.classes.split(',').map((c) => c.trim()) }),
          onError: f.onError,
          maxSkipped: f.maxSkipped,
          maxPixels: f.maxPixels,
          onProgress,
        };
        const splits = { ...(f.split === undefined ? {} : { split: f.split }), seed: f.seed, ...(f.labelled === undefined ? {} : { labelled: f.labelled }) };
        try {
          if (/\.(parquet|csv|jsonl|ndjson)$/i.test(folder)) {
            if (f.input === undefined) throw new Error(`${folder} is a table: give --input (the image column, the list column, or the numeric columns)`);
            const { importTable } = await import('./import/table.js');
            const t = await importTable({
              ...common,
              table: folder,
              input: f.input.split(',').map((c) => c.trim()),
              ...(f.label === undefined ? {} : { label: f.label }),
              ...(f.key === undefined ? {} : { key: f.key }),
            });
            if (started) bar.stop();
            const classes =
              f.label === undefined
                ? 'unlabelled'
                : Object.entries(t.perClass)
                    .map(([c, n]) => `${c} ${n}`)
                    .join(', ');
            console.log(
              `${t.imported} rows → ${t.out} (${t.input} [${t.inputShape.join(', ')}], ${classes}); skipped ${t.skipped.length}: ${reportPath(t.out)}`,
            );
            for (const d of await writeSplits(t.out, splits)) console.log(`${d.name}: ${d.rows} rows → ${d.path}`);
            return;
          }
          if (f.input !== undefined || f.label !== undefined || f.key !== undefined)
            throw new Error(`--input, --label and --key are for tables; ${folder} is read as an image folder`);
          const { importImageFolder } = await import('./import/image-folder.js');
          const r = await importImageFolder({
            ...common,
            folder,
          });
          if (started) bar.stop();
          const classes =
            r.mode === 'flat'
              ? 'unlabelled'
              : Object.entries(r.perClass)
                  .map(([c, n]) => `${c} ${n}`)
                  .join(', ');
          console.log(
            `${r.imported} images → ${r.out} (${r.size[0]}×${r.size[1]}×${r.channels}, ${classes}); skipped ${r.skipped.length}, ignored ${r.ignored.length}: ${reportPath(r.out)}`,
          );
          if (r.emptyClasses.length > 0) console.log(`empty class folders (kept as classes): ${r.emptyClasses.join(', ')}`);
          for (const d of await writeSplits(r.out, splits)) console.log(`${d.name}: ${d.rows} rows → ${d.path}`);
        } finally {
          if (started) bar.stop();
        }
      },
    );

  program
    .command('import-text')
    .description(
      'tokenize text into a token dataset (blocks of --block tokens, cut per document): a .txt file, a folder of .txt files, .jsonl or .parquet (one document per line or row)',
    )
    .argument('<source>', 'the text file, folder or table')
    .requiredOption('--tokenizer <file>', "a Hugging Face tokenizer.json, or 'byte' (UTF-8 bytes, vocabulary 256)")
    .requiredOption('--out <file>', 'the dataset to write (.arrow); with --split, <out>-<part>.arrow and <out>-train.arrow')
    .option('--block <n>', 'tokens per block (the context the teacher and student see)', int, 128)
    .option('--text <field>', 'JSON lines / Parquet: the text field', 'text')
    .option('--key <field>', 'JSON lines / Parquet: the field naming each document (default <file>#<line>)')
    .option('--split <parts>', 'hold out whole documents, e.g. test=0.1,val=0.1 (the rest: train)', parseSplit)
    .option('--stratify <field>', 'with --split: split each value of this field separately (e.g. a genre)')
    .option('--seed <n>', 'the seed of --split', int, 1)
    .action(
      async (
        source: string,
        f: { tokenizer: string; out: string; block: number; text: string; key?: string; split?: Record<string, number>; stratify?: string; seed: number },
      ) => {
        const { importText } = await import('./import/text.js');
        const r = await importText({
          source,
          out: f.out,
          tokenizer: f.tokenizer,
          block: f.block,
          text: f.text,
          seed: f.seed,
          ...(f.key === undefined ? {} : { key: f.key }),
          ...(f.split === undefined ? {} : { split: f.split }),
          ...(f.stratify === undefined ? {} : { stratify: f.stratify }),
          onProgress: (n) => {
            if (process.stderr.isTTY && n % 50 === 0) process.stderr.write(`\rimport-text: ${n} documents`);
          },
        });
        if (process.stderr.isTTY) process.stderr.write('\n');
        for (const p of r.parts) {
          console.log(
            `${p.name}: ${p.documents} documents → ${p.rows} blocks of ${r.block} (${p.tokens} tokens, ${(p.bytes / p.tokens).toFixed(2)} bytes/token) → ${p.out}`,
          );
        }
        console.log(`tokenizer ${r.tokenizer.name} (sha256 ${r.tokenizer.sha256.slice(0, 12)}…, vocabulary ${r.tokenizer.vocabSize})`);
        if (r.replacedLines > 0) console.log(`${r.replacedLines} lines held bytes that are not UTF-8; they were replaced by U+FFFD`);
      },
    );

  program
    .command('tensors')
    .description("list a teacher's per-sample intermediate tensors (name, op, dtype, shape per sample): what feature capture can store")
    .requiredOption('--teacher <name>', 'a teacher in --models')
    .option('--models <dir>', 'directory of teacher *.onnx files (env DISTILLATE_MODELS)')
    .option('--json', 'one JSON object per tensor', false)
    .action(async (f: { teacher: string; models?: string; json: boolean }) => {
      const models = f.models ?? process.env['DISTILLATE_MODELS'];
      if (models === undefined || models === '') throw new Error('tensors: give --models <dir> (or DISTILLATE_MODELS)');
      const { TeacherRegistry } = await import('@distillate/shared/onnx');
      const registry = await TeacherRegistry.open(models, { provider: 'cpu' });
      try {
        const tensors = await registry.get(f.teacher).tensors();
        if (f.json) {
          for (const t of tensors) console.log(JSON.stringify(t));
          return;
        }
        const rows = tensors.map((t) => [t.name, t.op, t.dtype, `[${t.shape.join(', ')}]`, String(t.elements), t.output ? 'output' : '']);
        const head = ['tensor', 'op', 'dtype', 'shape per sample', 'values', ''];
        const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
        for (const r of [head, ...rows])
          console.log(
            r
              .map((c, i) => (i === 4 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)))
              .join('  ')
              .trimEnd(),
          );
      } finally {
        await registry.releaseAll();
      }
    });

  program
    .command('export-labels')
    .description("write a cache's pseudo-labels as a table: source, id, class, confidence, entropy, margin (and the top-k classes)")
    .requiredOption('--cache <dir>', "a label job's cache, or a dense precompute cache")
    .requiredOption('--dataset <file>', 'the dataset the cache was computed over')
    .requiredOption('--out <file>', 'the table to write (.csv, .parquet or .jsonl)')
    .addOption(new Option('--format <format>', 'default: from the extension of --out').choices(['csv', 'parquet', 'jsonl']))
    .option('--top-k <k>', 'also the k most probable classes and their probabilities (dense caches)', int)
    .option('--min-confidence <c>', 'keep only rows with at least this confidence', num)
    .action(async (f: { cache: string; dataset: string; out: string; format?: LabelFormat; topK?: number; minConfidence?: number }) => {
      const ext = /\.(csv|parquet|jsonl)$/.exec(f.out)?.[1] as LabelFormat | undefined;
      const format = f.format ?? ext;
      if (format === undefined) throw new Error(`${f.out}: give --format csv|parquet|jsonl (or an .csv, .parquet or .jsonl name)`);
      const { exportLabels } = await import('./export-labels.js');
      const r = await exportLabels({
        cache: f.cache,
        dataset: f.dataset,
        out: f.out,
        format,
        ...(f.topK === undefined ? {} : { topK: f.topK }),
        ...(f.minConfidence === undefined ? {} : { minConfidence: f.minConfidence }),
      });
      console.log(`${r.rows} rows → ${r.path}`);
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

/** `--feature NAME[,pool=…][,grid=HxW][,dtype=…]`: the name is everything before the first comma (names may hold ':' and '/'). */
function parseFeatureFlag(v: string): FeatureSpecInput {
  const [tensor, ...rest] = v.split(',');
  const spec: Record<string, unknown> = { tensor };
  for (const part of rest) {
    const [k, value] = part.split('=') as [string, string | undefined];
    if (value === undefined || !['pool', 'grid', 'dtype'].includes(k))
      throw new InvalidArgumentError(`"${part}": give pool=none|avg|max, grid=HxW or dtype=float16|float32 after the tensor name`);
    if (k === 'grid') {
      const m = /^(\d+)x(\d+)$/.exec(value);
      if (m === null) throw new InvalidArgumentError(`grid=${value}: give it as HxW, e.g. grid=2x2`);
      spec['grid'] = [Number(m[1]), Number(m[2])];
    } else spec[k] = value;
  }
  return spec as FeatureSpecInput;
}
