/**
 * Precompute and label jobs: a queue, their state machine and their events. Jobs run one at a
 * time through the precompute pipeline (precompute.ts) and, for label jobs with a selection,
 * label-selection.ts; they are recorded in the job store (store.ts) so that a server killed
 * mid-job resumes it, from its durable shards, on restart.
 */
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { DatasetReader, findCache, imageGeometry, isTokenDataset, removeStaleTempFiles, type AcceptOutcome } from '@distillate/shared';
import { datasetPreprocessor, type TeacherRegistry } from '@distillate/shared/onnx';
import type { Logger } from 'pino';
import { AppError, toAppError } from '../errors.js';
import { confinedPath } from '../paths.js';
import { inProcessExecutor, type JobExecutor } from './executor.js';
import { selectPseudoLabelled } from './label-selection.js';
import { PrecomputeInterrupted, planFeatures } from './precompute.js';
import { planTokenCache } from './precompute-tokens.js';
import { JobRequestSchema, type JobRequest, type JobRequestInput } from './request.js';
import { JobStore, type JobRecord, type JobState } from './store.js';

export interface JobEvent {
  readonly type: 'progress' | 'state';
  readonly job: JobRecord;
}

export interface JobManagerOptions {
  readonly teachers: TeacherRegistry;
  readonly dataRoot: string;
  readonly cacheRoot: string;
  readonly logger: Logger;
  readonly shardRows?: number;
  /** Who runs jobs: in this process (default) or as shard tasks on a queue. */
  readonly executor?: JobExecutor;
  readonly onStateChange?: (job: JobRecord) => void;
}

export class JobManager {
  readonly #o: JobManagerOptions;
  readonly #jobs = new Map<string, JobRecord>();
  readonly #queue: string[] = [];
  readonly #events = new EventEmitter();
  readonly #store: JobStore;
  #current: { id: string; abort: AbortController } | undefined;
  #loop: Promise<void> | undefined;
  #stopping = false;

  readonly executor: JobExecutor;

  constructor(options: JobManagerOptions) {
    this.#o = options;
    this.executor = options.executor ?? inProcessExecutor;
    this.#store = new JobStore(options.cacheRoot, options.logger);
    this.#events.setMaxListeners(0);
  }

  /** Load recorded jobs; queued and interrupted (running) ones are resumed. */
  async init(): Promise<void> {
    const records = await this.#store.load();
    // Temp files of shard writes that never finished (a crash, a full disk): the jobs resume without them.
    const stale: string[] = [];
    for (const entry of await readdir(this.#o.cacheRoot, { withFileTypes: true })) {
      if (entry.isDirectory() && !entry.name.startsWith('.')) stale.push(...(await removeStaleTempFiles(join(this.#o.cacheRoot, entry.name))));
    }
    if (stale.length > 0) this.#o.logger.info({ files: stale.length }, 'removed stale temp files');
    for (const job of records) {
      this.#jobs.set(job.id, job);
      if (job.state === 'running' || job.state === 'queued') {
        this.#o.logger.info({ job: job.id, state: job.state }, 'resuming job');
        job.state = 'queued';
        this.#queue.push(job.id);
      }
    }
    this.#kick();
  }

  /**
   * Check a request against what is there (teacher, dataset, shapes) and queue it. The HTTP
   * handler and the CLI parse it first; typed callers (scripts, tests) get the schema's defaults here.
   */
  async create(input: JobRequestInput): Promise<JobRecord> {
    if (this.#stopping) throw new AppError(503, 'shutting_down', 'server is shutting down');
    const request: JobRequest = JobRequestSchema.parse(input);
    const teacher = this.#o.teachers.get(request.teacher);
    const datasetPath = await confinedPath(this.#o.dataRoot, request.dataset, 'dataset');
    if (request.label?.output !== undefined) await confinedPath(this.#o.dataRoot, request.label.output, 'label output', false);
    const { info } = await teacher.load();
    if (await isTokenDataset(datasetPath)) {
      await planTokenCache(teacher, datasetPath, request); // refuses a tokenizer, vocabulary or context mismatch
      return this.#enqueue(request);
    }
    if (info.lm !== undefined)
      throw new AppError(400, 'dataset_mismatch', `teacher ${info.name} is a causal language model: give it a token dataset (distillate-server import-text)`);
    const dataset = await DatasetReader.open(datasetPath).catch((err: unknown) => {
      throw new AppError(400, 'bad_dataset', (err as Error).message);
    });
    datasetPreprocessor(dataset.info, info, teacher.sidecar); // throws dataset_mismatch
    if (request.views !== undefined) {
      try {
        imageGeometry(dataset.info);
      } catch (err) {
        throw new AppError(400, 'bad_views', (err as Error).message);
      }
    }
    await planFeatures(teacher, request.features); // refuses an unknown tensor or a pooling its shape cannot take
    if (request.storage.mode === 'topk' && request.storage.k > info.classes.length) {
      throw new AppError(400, 'invalid_request', `top-k storage with k = ${request.storage.k} but teacher ${info.name} has ${info.classes.length} classes`);
    }
    return this.#enqueue(request);
  }

  async #enqueue(request: JobRequest): Promise<JobRecord> {
    const now = new Date().toISOString();
    const job: JobRecord = { id: randomUUID(), request, state: 'queued', progress: { done: 0, total: 0 }, createdAt: now, updatedAt: now };
    this.#jobs.set(job.id, job);
    await this.#store.save(job);
    this.#queue.push(job.id);
    this.#kick();
    return job;
  }

  get(id: string): JobRecord {
    const job = this.#jobs.get(id);
    if (job === undefined) throw new AppError(404, 'unknown_job', `no job with id "${id}"`);
    return job;
  }

  list(): JobRecord[] {
    return [...this.#jobs.values()];
  }

  async cancel(id: string): Promise<JobRecord> {
    const job = this.get(id);
    if (job.state === 'queued') {
      this.#queue.splice(this.#queue.indexOf(id), 1);
      await this.#setState(job, 'canceled');
    } else if (job.state === 'running' && this.#current?.id === id) {
      this.#current.abort.abort('cancel');
      await new Promise<void>((resolve) => {
        const check = (e: JobEvent) => {
          if (e.type === 'state' && e.job.id === id && e.job.state !== 'running') {
            this.#events.off('event', check);
            resolve();
          }
        };
        this.#events.on('event', check);
      });
    }
    return job;
  }

  /**
   * A shard uploaded by a worker for a distributed job. Written (or ignored as a duplicate) if
   * the job runs here; otherwise the answer follows the job's state.
   */
  async acceptShard(id: string, index: number, bytes: Uint8Array, sha256: string, worker: string): Promise<AcceptOutcome> {
    const job = this.get(id);
    const executor = this.executor;
    if (executor.acceptShard === undefined)
      throw new AppError(409, 'not_distributed', 'this server runs jobs in process; it takes no shard uploads (start it with --queue)');
    const outcome = await executor.acceptShard(id, index, bytes, sha256, worker);
    if (outcome !== undefined) return outcome;
    if (job.state === 'queued' || job.state === 'running')
      throw new AppError(503, 'job_not_ready', `job ${id} is ${job.state} but not taking shards yet; retry`, { 'retry-after': '1' });
    if (job.state === 'succeeded' && job.cacheKey !== undefined) {
      const stored = (await findCache(this.#o.cacheRoot, job.cacheKey))?.manifest.shards[index];
      if (stored?.sha256 === sha256) return 'duplicate';
      if (stored !== undefined)
        throw new AppError(
          409,
          'shard_conflict',
          `shard ${index} of cache ${job.cacheKey} is stored with sha256 ${stored.sha256}; a copy with sha256 ${sha256} was refused`,
        );
    }
    throw new AppError(410, 'job_finished', `job ${id} is ${job.state}; it takes no more shards`);
  }

  /** Listen to one job's events; returns an unsubscribe function. */
  subscribe(id: string, listener: (e: JobEvent) => void): () => void {
    const filtered = (e: JobEvent) => {
      if (e.job.id === id) listener(e);
    };
    this.#events.on('event', filtered);
    return () => this.#events.off('event', filtered);
  }

  /** Stop taking work; checkpoint the running job (its durable shards stay) for a restart. */
  async shutdown(): Promise<void> {
    this.#stopping = true;
    this.#current?.abort.abort('shutdown');
    await this.#loop;
    await this.executor.close();
  }

  /** Wait until no job is queued or running (for the CLI and tests). */
  async idle(): Promise<void> {
    while (this.#loop !== undefined) await this.#loop;
  }

  #kick(): void {
    if (this.#loop !== undefined || this.#stopping) return;
    this.#loop = (async () => {
      while (this.#queue.length > 0 && !this.#stopping) {
        const job = this.#jobs.get(this.#queue.shift()!)!;
        await this.#run(job);
      }
    })().finally(() => {
      this.#loop = undefined;
      if (this.#queue.length > 0 && !this.#stopping) this.#kick();
    });
  }

  /**
   * Run one job. Whatever goes wrong in it — a bad teacher, a full disk — fails that job (with a
   * one-line error naming the cause) and never the server: even the failure is recorded on a
   * best-effort basis, since the disk that failed the job may not take its record either.
   */
  async #run(job: JobRecord): Promise<void> {
    const abort = new AbortController();
    this.#current = { id: job.id, abort };
    try {
      await this.#setState(job, 'running');
      await this.#execute(job, abort.signal);
      await this.#setState(job, 'succeeded');
    } catch (err) {
      if (err instanceof PrecomputeInterrupted || abort.signal.aborted) {
        const reason = abort.signal.reason === 'shutdown' ? 'shutdown' : 'cancel';
        this.#o.logger.info({ job: job.id, reason, done: job.progress.done }, 'job interrupted');
        await this.#setState(job, reason === 'shutdown' ? 'queued' : 'canceled', { bestEffort: true });
      } else {
        const known = toAppError(err);
        const code = (err as NodeJS.ErrnoException).code;
        const e =
          known !== undefined
            ? { code: known.code, message: known.message }
            : { code: code === 'ENOSPC' ? 'no_space' : 'job_failed', message: ((err as Error).message ?? String(err)).split('\n')[0]! };
        this.#o.logger.error({ job: job.id, err }, 'job failed');
        job.error = e;
        await this.#setState(job, 'failed', { bestEffort: true });
      }
    } finally {
      this.#current = undefined;
    }
  }

  async #execute(job: JobRecord, signal: AbortSignal): Promise<void> {
    const req = job.request;
    const datasetPath = await confinedPath(this.#o.dataRoot, req.dataset, 'dataset');
    let lastEmit = 0;
    delete job.notice;
    const result = await this.executor.run({
      job,
      request: req,
      teacher: this.#o.teachers.get(req.teacher),
      datasetPath,
      cacheRoot: this.#o.cacheRoot,
      shardRows: this.#o.shardRows,
      signal,
      logger: this.#o.logger,
      onStart: (key, rows) => {
        job.cacheKey = key;
        job.progress = { done: 0, total: rows };
      },
      onProgress: (done, total) => {
        job.progress = { done, total };
        const now = Date.now();
        if (now - lastEmit > 200 || done === total) {
          lastEmit = now;
          this.#emit('progress', job);
        }
      },
      onUpdate: () => this.#emit('progress', job),
    });
    delete job.notice;
    if (result.cacheHit) job.cacheHit = true;
    if (req.type === 'label' && req.label !== undefined && result.dataset !== undefined) {
      job.selection = await selectPseudoLabelled({
        dataRoot: this.#o.dataRoot,
        cacheRoot: this.#o.cacheRoot,
        dataset: result.dataset,
        datasetPath,
        key: result.key,
        label: req.label,
      });
    }
  }

  #emit(type: JobEvent['type'], job: JobRecord): void {
    this.#events.emit('event', { type, job } satisfies JobEvent);
  }

  async #setState(job: JobRecord, state: JobState, opts: { bestEffort?: boolean } = {}): Promise<void> {
    job.state = state;
    job.updatedAt = new Date().toISOString();
    try {
      await this.#store.save(job);
    } catch (err) {
      if (opts.bestEffort !== true) throw err;
      this.#o.logger.error({ job: job.id, err }, 'could not record the job state; it stays in memory');
    }
    this.#o.onStateChange?.(job);
    this.#emit('state', job);
  }
}
