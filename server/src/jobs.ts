/**
 * Precompute and label jobs. Jobs run one at a time, write through LogitCacheWriter (inference
 * of the next batch overlaps the write of the previous one), and are persisted under
 * `<cache>/.jobs/` so that a server killed mid-job resumes it, from its durable shards, on
 * restart.
 */
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { mkdir, readFile, readdir } from 'node:fs/promises';
import { basename, dirname, join, relative } from 'node:path';
import {
  DatasetReader,
  DatasetWriter,
  LogitCacheReader,
  LogitCacheWriter,
  StorageSchema,
  alignDatasetWithCaches,
  cacheKey,
  pickRows,
  findCache,
  writeFileAtomic,
  removeStaleTempFiles,
  type Ids,
} from '@distillate/shared';
import type { Logger } from 'pino';
import { z } from 'zod';
import { AppError, toAppError } from './errors.js';
import { confinedPath } from './paths.js';
import { datasetPreprocessor } from '@distillate/shared/onnx';
import type { TeacherRegistry } from '@distillate/shared/onnx';

export const JobRequestSchema = z
  .object({
    type: z.enum(['precompute', 'label']),
    teacher: z.string().min(1),
    /** Dataset path relative to --data. */
    dataset: z.string().min(1),
    temperature: z.number().positive().finite().default(1),
    storage: StorageSchema.default({ mode: 'dense', dtype: 'float32' }),
    label: z
      .object({
        /** Keep rows whose top-1 probability is at least this. */
        threshold: z.number().min(0).max(1).default(0),
        /** Keep at most this many rows per pseudo-class (in dataset order). */
        perClassMax: z.number().int().positive().optional(),
        /** Where to write the selected rows as a dataset, relative to --data. */
        output: z.string().min(1).optional(),
      })
      .strict()
      .optional(),
    /** Rows per teacher inference call. */
    batchSize: z.number().int().positive().max(8192).default(256),
  })
  .strict();
export type JobRequest = z.infer<typeof JobRequestSchema>;
export type JobRequestInput = z.input<typeof JobRequestSchema>;

export type JobState = 'queued' | 'running' | 'succeeded' | 'failed' | 'canceled';

export interface JobRecord {
  readonly id: string;
  readonly request: JobRequest;
  state: JobState;
  progress: { done: number; total: number };
  cacheKey?: string;
  cacheHit?: boolean;
  error?: { code: string; message: string };
  selection?: { path: string; rows: number; perClass: number[] };
  createdAt: string;
  updatedAt: string;
}

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
  readonly onStateChange?: (job: JobRecord) => void;
}

class JobInterrupted extends Error {
  constructor(readonly reason: 'cancel' | 'shutdown') {
    super(reason);
  }
}

export class JobManager {
  readonly #o: JobManagerOptions;
  readonly #jobs = new Map<string, JobRecord>();
  readonly #queue: string[] = [];
  readonly #events = new EventEmitter();
  readonly #jobsDir: string;
  #current: { id: string; abort: AbortController; reason?: 'cancel' | 'shutdown' } | undefined;
  #loop: Promise<void> | undefined;
  #stopping = false;

  constructor(options: JobManagerOptions) {
    this.#o = options;
    this.#jobsDir = join(options.cacheRoot, '.jobs');
    this.#events.setMaxListeners(0);
  }

  /** Load persisted jobs; queued and interrupted (running) ones are resumed. */
  async init(): Promise<void> {
    await mkdir(this.#jobsDir, { recursive: true });
    // Temp files of writes that never finished (a crash, a full disk): the jobs resume without them.
    const stale = [...(await removeStaleTempFiles(this.#jobsDir))];
    for (const entry of await readdir(this.#o.cacheRoot, { withFileTypes: true })) {
      if (entry.isDirectory() && !entry.name.startsWith('.')) stale.push(...(await removeStaleTempFiles(join(this.#o.cacheRoot, entry.name))));
    }
    if (stale.length > 0) this.#o.logger.info({ files: stale.length }, 'removed stale temp files');
    const files = (await readdir(this.#jobsDir)).filter((f) => f.endsWith('.json'));
    const records: JobRecord[] = [];
    for (const f of files) {
      try {
        records.push(JSON.parse(await readFile(join(this.#jobsDir, f), 'utf8')) as JobRecord);
      } catch {
        this.#o.logger.warn({ file: f }, 'ignoring unreadable job record');
      }
    }
    records.sort((a, b) => a.createdAt.localeCompare(b.createdAt));
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

  /** Validate a request fully (teacher, dataset, shapes) and queue it. */
  async create(input: unknown): Promise<JobRecord> {
    if (this.#stopping) throw new AppError(503, 'shutting_down', 'server is shutting down');
    const parsed = JobRequestSchema.safeParse(input);
    if (!parsed.success) throw zodToAppError(parsed.error);
    const request = parsed.data;
    if (request.type === 'precompute' && request.label !== undefined) throw new AppError(400, 'invalid_request', '"label" options apply to label jobs only');
    const teacher = this.#o.teachers.get(request.teacher);
    const datasetPath = await confinedPath(this.#o.dataRoot, request.dataset, 'dataset');
    if (request.label?.output !== undefined) await confinedPath(this.#o.dataRoot, request.label.output, 'label output', false);
    const { info } = await teacher.load();
    const dataset = await DatasetReader.open(datasetPath).catch((err: unknown) => {
      throw new AppError(400, 'bad_dataset', (err as Error).message);
    });
    datasetPreprocessor(dataset.info, info, teacher.sidecar); // throws dataset_mismatch
    if (request.storage.mode === 'topk' && request.storage.k > info.classes.length) {
      throw new AppError(400, 'invalid_request', `top-k storage with k = ${request.storage.k} but teacher ${info.name} has ${info.classes.length} classes`);
    }
    const now = new Date().toISOString();
    const job: JobRecord = { id: randomUUID(), request, state: 'queued', progress: { done: 0, total: 0 }, createdAt: now, updatedAt: now };
    this.#jobs.set(job.id, job);
    await this.#persist(job);
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
      this.#current.reason = 'cancel';
      this.#current.abort.abort();
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
    if (this.#current !== undefined) {
      this.#current.reason = 'shutdown';
      this.#current.abort.abort();
    }
    await this.#loop;
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
      if (err instanceof JobInterrupted || abort.signal.aborted) {
        const reason = this.#current.reason ?? 'cancel';
        this.#o.logger.info({ job: job.id, reason, done: job.progress.done }, 'job interrupted');
        await this.#setState(job, reason === 'shutdown' ? 'queued' : 'canceled', { bestEffort: true });
      } else {
        const known = toAppError(err);
        const code = (err as NodeJS.ErrnoException).code;
        const e = known !== undefined ? { code: known.code, message: known.message } : { code: code === 'ENOSPC' ? 'no_space' : 'job_failed', message: ((err as Error).message ?? String(err)).split('\n')[0]! };
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
    const teacher = this.#o.teachers.get(req.teacher);
    const { info } = await teacher.load();
    const datasetPath = await confinedPath(this.#o.dataRoot, req.dataset, 'dataset');
    const dataset = await DatasetReader.open(datasetPath);
    const pre = datasetPreprocessor(dataset.info, info, teacher.sidecar);
    const fingerprint = await dataset.fingerprint();
    const rows = await dataset.countRows();
    const label = req.type === 'label';
    // Label caches carry extra columns; keep them apart from plain precomputes.
    const preprocessing = label ? `${pre.description};columns=label-statistics` : pre.description;
    const storage = StorageSchema.parse(req.storage);
    const key = cacheKey({ teacherSha256: info.sha256, datasetFingerprint: fingerprint, preprocessing, temperature: req.temperature, storage });
    job.cacheKey = key;
    job.progress = { done: 0, total: rows };
    const existing = await findCache(this.#o.cacheRoot, key);
    if (existing !== undefined) {
      job.cacheHit = true;
      job.progress = { done: rows, total: rows };
    } else {
      const writer = await LogitCacheWriter.open({
        root: this.#o.cacheRoot,
        teacher: { name: info.name, sha256: info.sha256, classes: [...info.classes] },
        dataset: { fingerprint, rows },
        preprocessing,
        temperature: req.temperature,
        storage,
        labelStatistics: label,
        ...(this.#o.shardRows === undefined ? {} : { shardRows: this.#o.shardRows }),
      });
      try {
        await this.#infer(job, dataset, writer, pre.apply.bind(pre), (x, n) => teacher.logits(x, n), signal);
        await writer.finish();
      } catch (err) {
        await writer.abort();
        throw err;
      }
    }
    if (label && req.label !== undefined) job.selection = await this.#select(job, dataset, key, datasetPath);
  }

  async #infer(
    job: JobRecord,
    dataset: DatasetReader,
    writer: LogitCacheWriter,
    prepare: (inputs: Uint8Array | Float32Array, rows: number, out?: Float32Array) => Float32Array,
    logits: (x: Float32Array, rows: number) => Promise<Float32Array>,
    signal: AbortSignal,
  ): Promise<void> {
    const B = job.request.batchSize;
    const D = dataset.inputSize;
    let skip = writer.resumedRows;
    job.progress.done = skip;
    if (skip > 0) this.#o.logger.info({ job: job.id, resumedRows: skip }, 'resuming from durable shards');
    let pendingWrite: Promise<void> = Promise.resolve();
    let lastEmit = 0;
    // onnxruntime-node runs inference synchronously before resolving, so the input buffer is
    // free again once `logits` resolves: reuse it rather than allocating per batch.
    let scratch: Float32Array | undefined;
    for await (const batch of dataset) {
      let start = 0;
      if (skip > 0) {
        start = Math.min(skip, batch.rows);
        skip -= start;
      }
      for (let r = start; r < batch.rows; r += B) {
        if (signal.aborted) throw new JobInterrupted('cancel');
        const n = Math.min(B, batch.rows - r);
        const x = prepare(batch.inputs.subarray(r * D, (r + n) * D), n, scratch);
        scratch = x.length === B * D ? x : scratch;
        const z = await logits(x, n);
        await pendingWrite;
        pendingWrite = writer.append({ ids: batch.ids.subarray(r, r + n) as Ids, logits: z });
        // A write that fails (a full disk) while the next batch runs is thrown at the next
        // `await pendingWrite`, not left as an unhandled rejection that takes the server down.
        pendingWrite.catch(() => undefined);
        job.progress.done += n;
        const now = Date.now();
        if (now - lastEmit > 200) {
          lastEmit = now;
          this.#emit('progress', job);
        }
      }
    }
    await pendingWrite;
    this.#emit('progress', job);
  }

  async #select(job: JobRecord, dataset: DatasetReader, key: string, datasetPath: string): Promise<NonNullable<JobRecord['selection']>> {
    const opts = job.request.label!;
    const cache = await LogitCacheReader.open(join(this.#o.cacheRoot, key));
    const outRel = opts.output ?? join(relative(this.#o.dataRoot, dirname(datasetPath)), `${basename(datasetPath, '.arrow')}.pseudo-${key.slice(0, 12)}.arrow`);
    const outPath = await confinedPath(this.#o.dataRoot, outRel, 'label output', false);
    await mkdir(dirname(outPath), { recursive: true });
    const C = cache.classes.length;
    const info = { ...dataset.info, classes: [...cache.classes] };
    const writer = DatasetWriter.create(outPath, info, { idType: dataset.idType });
    const perClass = new Array<number>(C).fill(0);
    let kept = 0;
    const D = dataset.inputSize;
    try {
      for await (const b of alignDatasetWithCaches(dataset, [cache])) {
        const stats = b.teachers[0]!.stats!;
        const idx: number[] = [];
        for (let r = 0; r < b.rows; r++) {
          const y = stats.pseudoLabel[r]!;
          if (stats.confidence[r]! < opts.threshold) continue;
          if (opts.perClassMax !== undefined && perClass[y]! >= opts.perClassMax) continue;
          perClass[y]! += 1;
          idx.push(r);
        }
        if (idx.length === 0) continue;
        await writer.append(pickRows(b, D, idx, (r) => stats.pseudoLabel[r]!));
        kept += idx.length;
      }
      await writer.close();
    } catch (err) {
      await writer.abort();
      throw err;
    }
    return { path: relative(this.#o.dataRoot, outPath), rows: kept, perClass };
  }

  #emit(type: JobEvent['type'], job: JobRecord): void {
    this.#events.emit('event', { type, job } satisfies JobEvent);
  }

  async #setState(job: JobRecord, state: JobState, opts: { bestEffort?: boolean } = {}): Promise<void> {
    job.state = state;
    job.updatedAt = new Date().toISOString();
    try {
      await this.#persist(job);
    } catch (err) {
      if (opts.bestEffort !== true) throw err;
      this.#o.logger.error({ job: job.id, err }, 'could not record the job state; it stays in memory');
    }
    this.#o.onStateChange?.(job);
    this.#emit('state', job);
  }

  async #persist(job: JobRecord): Promise<void> {
    await writeFileAtomic(join(this.#jobsDir, `${job.id}.json`), JSON.stringify(job, null, 2));
  }
}

export function zodToAppError(error: z.ZodError): AppError {
  const msg = error.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`).join('; ');
  return new AppError(400, 'invalid_request', msg);
}
