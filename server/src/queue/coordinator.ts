/**
 * The Redis executor: a job becomes shard tasks on a BullMQ queue; workers run them and upload
 * each shard here. Only this process writes the cache (CacheAssembler: every shard checked,
 * written atomically, the manifest last). The task list is reconciled with the queue every
 * `pollMs`: a shard with no live task gets one (a coordinator restart, Redis restarted empty),
 * a task that failed its last attempt fails the job with the worker's message. Completion
 * itself is driven by the uploads, not by polling.
 */
import { hostname } from 'node:os';
import {
  CacheAssembler,
  CacheIntegrityError,
  countTokens,
  featureBytes,
  ShardConflictError,
  findCache,
  imageGeometry,
  inspectCacheShard,
  isTokenDataset,
  repeatIds,
  shardLayout,
  type AcceptOutcome,
  type CacheAssemblerOptions,
  type DatasetReader,
  type Ids,
  type ShardLayout,
  type TokenDatasetReader,
} from '@distillate/shared';
import { Queue, QueueEvents } from 'bullmq';
import type { Logger } from 'pino';
import { AppError } from '../errors.js';
import type { ExecutionContext, ExecutionResult, JobExecutor } from '../jobs/executor.js';
import { PrecomputeInterrupted, planCache } from '../jobs/precompute.js';
import { blocksPerCall, planTokenCache } from '../jobs/precompute-tokens.js';
import { assertReachable, connectionOptions, describeTarget, type RedisTarget } from './redis.js';
import { DEFAULT_ATTEMPTS, DEFAULT_DISTRIBUTED_SHARD_POSITIONS, DEFAULT_DISTRIBUTED_SHARD_ROWS, QUEUE_NAME, taskId, type ShardTask } from './task.js';

export interface CoordinatorOptions {
  readonly target: RedisTarget;
  readonly logger: Logger;
  /** Attempts per task before the job fails (default 3). */
  readonly attempts?: number;
  /** How often the task list is reconciled with the queue (default 1,000 ms). */
  readonly pollMs?: number;
  /** fsync shards and records (default true). */
  readonly fsync?: boolean;
}

/** Coordinator-side time per job, in milliseconds, summed over shards. */
export interface CoordinatorTiming {
  verify: number;
  write: number;
}

/**
 * Every cache row's id (the dataset's, each K times for a view cache); for a token cache also
 * the running count of non-padding positions (`tokens[r]` before row r, `rows + 1` entries).
 */
interface RowIds {
  readonly ids: Ids;
  readonly tokens?: Float64Array;
}

/** What a job becomes before anything is queued: its key, layout, assembler and task template. */
interface PlannedJob {
  readonly key: string;
  /** Progress units: images (class and view caches) or blocks. */
  readonly rows: number;
  /** Cache rows per image: K for a view cache, else 1. */
  readonly K: number;
  readonly layout: ShardLayout;
  readonly assembler: Omit<CacheAssemblerOptions, 'root' | 'layout' | 'fsync'>;
  /** Started once tasks are queued and read while the first ones run (uploads wait for it). */
  readonly ids: () => Promise<RowIds>;
  readonly template: (batchRows: number) => ActiveJob['template'];
  /** The dataset read (class caches). */
  readonly dataset?: DatasetReader;
}

interface ActiveJob {
  readonly ctx: ExecutionContext;
  readonly assembler: CacheAssembler;
  readonly ids: Promise<RowIds>;
  /** Cache rows per image: K for a view cache, else 1. */
  readonly rowsPerImage: number;
  readonly template: Omit<ShardTask, 'index' | 'start' | 'rows'>;
  readonly timing: CoordinatorTiming;
  failure: AppError | undefined;
  /** A task attempt failed since the last reconcile: look sooner. */
  attemptFailed: boolean;
  wake: (() => void) | undefined;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export class RedisCoordinator implements JobExecutor {
  readonly kind = 'redis' as const;
  readonly target: RedisTarget;
  readonly #o: CoordinatorOptions;
  readonly #queue: Queue;
  readonly #events: QueueEvents;
  readonly #active = new Map<string, ActiveJob>();
  #unreachable: string | undefined;

  private constructor(o: CoordinatorOptions) {
    this.#o = o;
    this.target = o.target;
    const connection = connectionOptions(o.target);
    this.#queue = new Queue(QUEUE_NAME, { connection });
    this.#events = new QueueEvents(QUEUE_NAME, { connection });
    // Connection errors repeat while Redis is away; the reconcile loop reports the outage once.
    this.#queue.on('error', () => undefined);
    this.#events.on('error', () => undefined);
    this.#events.on('stalled', ({ jobId }) =>
      o.logger.warn({ task: jobId }, 'task stalled (its worker stopped answering); the queue hands it to another worker'),
    );
    this.#events.on('failed', ({ jobId, failedReason }) => {
      o.logger.warn({ task: jobId, reason: failedReason }, 'task attempt failed');
      for (const a of this.#active.values()) {
        if (jobId.startsWith(`${a.ctx.job.id}-`)) {
          a.attemptFailed = true;
          a.wake?.();
        }
      }
    });
  }

  /** Check that Redis answers (one clear error if not), then connect the queue. */
  static async open(o: CoordinatorOptions): Promise<RedisCoordinator> {
    await assertReachable(o.target);
    const c = new RedisCoordinator(o);
    await c.#queue.waitUntilReady();
    await c.#events.waitUntilReady();
    o.logger.info({ queue: describeTarget(o.target), host: hostname() }, 'shard tasks go to the Redis queue');
    return c;
  }

  get describe(): string {
    return describeTarget(this.target);
  }

  /** Task counts by state, for /metrics; undefined while Redis does not answer within 1 s. */
  async counts(): Promise<Record<string, number> | undefined> {
    return Promise.race([
      this.#queue.getJobCounts('waiting', 'active', 'delayed', 'failed', 'completed', 'prioritized'),
      sleep(1000).then(() => undefined),
    ]).catch(() => undefined);
  }

  async run(ctx: ExecutionContext): Promise<ExecutionResult> {
    const planned = (await isTokenDataset(ctx.datasetPath)) ? await this.#planTokens(ctx) : await this.#planClasses(ctx);
    const { key, rows, K, layout, dataset } = planned;
    ctx.onStart(key, rows);
    if ((await findCache(ctx.cacheRoot, key)) !== undefined) {
      ctx.onProgress(rows, rows);
      return { key, rows, cacheHit: true, ...(dataset === undefined ? {} : { dataset }) };
    }
    const assembler = await CacheAssembler.open({
      ...planned.assembler,
      root: ctx.cacheRoot,
      layout,
      ...(this.#o.fsync === undefined ? {} : { fsync: this.#o.fsync }),
    });
    const active: ActiveJob = {
      ctx,
      assembler,
      ids: planned.ids(),
      rowsPerImage: K,
      template: planned.template(layout.batchRows),
      timing: { verify: 0, write: 0 },
      failure: undefined,
      attemptFailed: false,
      wake: undefined,
    };
    active.ids.catch(() => undefined); // awaited by uploads; a failure fails them with its message
    if (assembler.doneRows > 0)
      ctx.logger.info({ job: ctx.job.id, key, durableShards: assembler.plan.length - assembler.missing().length }, 'resuming from durable shards');
    ctx.job.distributed = { queue: this.describe, tasks: assembler.plan.length, timing: active.timing };
    this.#active.set(ctx.job.id, active);
    try {
      ctx.onProgress(assembler.doneRows / K, rows);
      await this.#await(active);
      await assembler.finish();
    } catch (err) {
      await assembler.release();
      // A shutdown leaves the tasks queued: workers keep going and the restarted coordinator takes their uploads.
      if (!(ctx.signal.aborted && ctx.signal.reason === 'shutdown')) await this.#removeTasks(active);
      throw err;
    } finally {
      this.#active.delete(ctx.job.id);
    }
    // Finished tasks expire from Redis by themselves; tidying up is not worth the job's time.
    void this.#removeTasks(active);
    return { key, rows, cacheHit: false, ...(dataset === undefined ? {} : { dataset }) };
  }

  /** A class (or view) cache: the dataset's images, K cache rows each. */
  async #planClasses(ctx: ExecutionContext): Promise<PlannedJob> {
    const { request: req, teacher } = ctx;
    const { info, dataset, fingerprint, rows, labelStatistics, preprocessing, storage, features, key } = await planCache(teacher, ctx.datasetPath, req);
    const views = req.views;
    // Shards, tasks and uploads count cache rows (K per image for a view cache); progress counts images, as in process.
    const K = views?.count ?? 1;
    if (views !== undefined) imageGeometry(dataset.info); // refuses flat samples
    return {
      key,
      rows,
      K,
      dataset,
      layout: shardLayout(storage, info.classes.length, {
        shardRows: ctx.shardRows ?? DEFAULT_DISTRIBUTED_SHARD_ROWS,
        ...(views === undefined ? {} : { viewCount: K }),
        ...(features.length === 0 ? {} : { featureBytes: featureBytes(features) }),
      }),
      assembler: {
        teacher: { name: info.name, sha256: info.sha256, classes: [...info.classes] },
        dataset: { fingerprint, rows },
        preprocessing,
        temperature: req.temperature,
        storage,
        labelStatistics,
        views,
        ...(features.length === 0 ? {} : { features }),
      },
      ids: () => readIds(dataset, rows).then((ids) => ({ ids: K === 1 ? ids : repeatIds(ids, K) })),
      template: (batchRows) => ({
        job: ctx.job.id,
        key,
        teacher: { name: info.name, sha256: info.sha256, sidecar: teacher.sidecar },
        dataset: { path: ctx.request.dataset, fingerprint },
        preprocessing,
        temperature: req.temperature,
        storage,
        labelStatistics,
        ...(views === undefined ? {} : { views }),
        ...(features.length === 0 ? {} : { features }),
        batchSize: req.batchSize,
        batchRows,
      }),
    };
  }

  /** A token cache: a causal-LM teacher over a token dataset's blocks (planned and refused as in process). */
  async #planTokens(ctx: ExecutionContext): Promise<PlannedJob> {
    const { request: req, teacher } = ctx;
    const { info, dataset, fingerprint, rows, storage, key, preprocessing } = await planTokenCache(teacher, ctx.datasetPath, req);
    const L = dataset.info.block;
    const lm = info.lm!;
    return {
      key,
      rows,
      K: 1,
      layout: shardLayout(storage, lm.vocabSize, {
        shardRows: ctx.shardRows ?? Math.max(1, Math.floor(DEFAULT_DISTRIBUTED_SHARD_POSITIONS / L)),
        positions: L,
      }),
      assembler: {
        teacher: { name: info.name, sha256: info.sha256, classes: [] },
        dataset: { fingerprint, rows },
        preprocessing,
        temperature: req.temperature,
        storage,
        labelStatistics: false,
        tokens: { positions: L, vocabSize: lm.vocabSize, tokenizer: dataset.info.tokenizer },
      },
      ids: () => readTokenIds(dataset, rows),
      template: (batchRows) => ({
        job: ctx.job.id,
        key,
        teacher: { name: info.name, sha256: info.sha256, sidecar: teacher.sidecar },
        dataset: { path: ctx.request.dataset, fingerprint },
        preprocessing,
        temperature: req.temperature,
        storage,
        labelStatistics: false,
        tokens: { block: L },
        batchSize: blocksPerCall(req.batchSize, L),
        batchRows,
      }),
    };
  }

  /**
   * Until every shard is durable: reconcile tasks with the queue every `pollMs` (sooner when a
   * task attempt fails), and wake on each upload and on abort. Uploads do not trigger a
   * reconcile: at one per shard that would be most of the coordinator's Redis traffic.
   */
  async #await(a: ActiveJob): Promise<void> {
    const pollMs = this.#o.pollMs ?? 1000;
    let reconciling: Promise<void> | undefined;
    let since = 0;
    let last = -Infinity;
    const aborted = new Promise<void>((resolve) => a.ctx.signal.addEventListener('abort', () => resolve(), { once: true }));
    while (!a.assembler.complete) {
      if (a.ctx.signal.aborted) throw new PrecomputeInterrupted('interrupted');
      if (a.failure !== undefined) throw a.failure;
      if (reconciling === undefined && (Date.now() - last >= pollMs || a.attemptFailed)) {
        since = last = Date.now();
        a.attemptFailed = false;
        reconciling = this.#reconcile(a)
          .then(() => this.#reachable(a))
          .catch((err: unknown) => this.#unreachableNow(a, err))
          .finally(() => {
            reconciling = undefined;
            a.wake?.();
          });
      } else if (reconciling !== undefined && Date.now() - since > 5000) {
        // Commands wait in ioredis's offline queue while Redis is away: the job waits with them.
        this.#unreachableNow(a, new Error('no answer for 5 s'));
      }
      await Promise.race([new Promise<void>((resolve) => (a.wake = resolve)), sleep(pollMs), aborted]);
      a.wake = undefined;
    }
  }

  /** Give every missing shard a live task; fail the job on a task out of attempts. */
  async #reconcile(a: ActiveJob): Promise<void> {
    const attempts = this.#o.attempts ?? DEFAULT_ATTEMPTS;
    const add: ShardTask[] = [];
    for (const spec of a.assembler.missing()) {
      const id = taskId(a.ctx.job.id, spec.index);
      const existing = await this.#queue.getJob(id);
      const state = existing === undefined ? 'unknown' : await existing.getState();
      if (state === 'failed') {
        // Read again now that it is final: the copy above may predate its last attempt (it was
        // fetched before its state, and a worker may have failed it once more in between).
        const final = (await this.#queue.getJob(id)) ?? existing;
        const reason = final?.failedReason ?? 'no reason given';
        a.failure = new AppError(
          422,
          'task_failed',
          `shard ${spec.index} (rows ${spec.start}–${spec.start + spec.rows - 1}) failed after ${final?.attemptsMade ?? attempts} attempt(s): ${reason}`,
        );
        a.wake?.();
        return;
      }
      if (state === 'completed' || state === 'unknown') {
        // Finished but not durable here (a crash between upload and record), or gone (Redis
        // restarted empty): run it again.
        await existing?.remove().catch(() => undefined);
        add.push({ ...a.template, index: spec.index, start: spec.start, rows: spec.rows });
      }
    }
    if (add.length > 0) {
      await this.#queue.addBulk(
        add.map((t) => ({
          name: 'shard',
          data: t,
          opts: {
            jobId: taskId(t.job, t.index),
            attempts,
            backoff: { type: 'exponential', delay: 500 },
            removeOnComplete: { age: 3600 },
            removeOnFail: { age: 24 * 3600 },
          },
        })),
      );
      a.ctx.logger.info({ job: a.ctx.job.id, tasks: add.length }, 'queued shard tasks');
    }
  }

  #unreachableNow(a: ActiveJob, err: unknown): void {
    const reason = ((err as Error).message ?? String(err)).split('\n')[0]!;
    if (this.#unreachable === undefined) a.ctx.logger.warn({ queue: this.describe, reason }, 'the queue does not answer; the job waits for it');
    this.#unreachable = reason;
    const notice = `waiting for the queue at ${this.describe} (${reason})`;
    if (a.ctx.job.notice !== notice) {
      a.ctx.job.notice = notice;
      a.ctx.onUpdate();
    }
  }

  #reachable(a: ActiveJob): void {
    if (this.#unreachable !== undefined) a.ctx.logger.info({ queue: this.describe }, 'the queue answers again; the job goes on');
    this.#unreachable = undefined;
    if (a.ctx.job.notice !== undefined) {
      delete a.ctx.job.notice;
      a.ctx.onUpdate();
    }
  }

  /** Remove the job's tasks that are still queued (best effort: running ones finish and are refused). */
  async #removeTasks(a: ActiveJob): Promise<void> {
    await Promise.race([Promise.all(a.assembler.plan.map((s) => this.#queue.remove(taskId(a.ctx.job.id, s.index)).catch(() => 0))), sleep(2000)]);
  }

  /**
   * An uploaded shard for a running job. undefined: the job is not running here (the manager
   * answers from the job's state).
   */
  async acceptShard(jobId: string, index: number, bytes: Uint8Array, sha256: string, worker: string): Promise<AcceptOutcome | undefined> {
    const a = this.#active.get(jobId);
    if (a === undefined) return undefined;
    const spec = a.assembler.plan[index];
    if (spec === undefined) throw new AppError(422, 'bad_shard', `job ${jobId} has ${a.assembler.plan.length} shards; there is no shard ${index}`);
    const t0 = performance.now();
    let checked;
    try {
      const { ids, tokens } = await a.ids;
      checked = inspectCacheShard(bytes, {
        sha256,
        encoding: a.assembler.encoding,
        ids: ids.subarray(spec.start, spec.start + spec.rows) as Ids,
        ...(tokens === undefined ? {} : { tokens: tokens[spec.start + spec.rows]! - tokens[spec.start]! }),
      });
    } catch (err) {
      if (err instanceof CacheIntegrityError) throw new AppError(422, 'bad_shard', `shard ${index} from worker ${worker}: ${err.message}; nothing was written`);
      throw err;
    }
    const t1 = performance.now();
    let outcome: AcceptOutcome;
    try {
      outcome = await a.assembler.accept(index, checked);
    } catch (err) {
      if (err instanceof ShardConflictError) {
        a.ctx.logger.error({ job: jobId, shard: index, worker }, err.message);
        (a.ctx.job.warnings ??= []).push(`worker ${worker}: ${err.message}`);
        a.ctx.onUpdate();
        throw new AppError(409, 'shard_conflict', err.message);
      }
      throw err;
    }
    a.timing.verify += t1 - t0;
    a.timing.write += performance.now() - t1;
    if (outcome === 'duplicate') a.ctx.logger.info({ job: jobId, shard: index, worker }, 'duplicate upload of a stored shard (same bytes): ignored');
    else a.ctx.onProgress(a.assembler.doneRows / a.rowsPerImage, a.assembler.plan.reduce((n, s) => n + s.rows, 0) / a.rowsPerImage);
    a.wake?.();
    return outcome;
  }

  async close(): Promise<void> {
    await Promise.race([Promise.all([this.#queue.close(), this.#events.close()]), sleep(2000)]).catch(() => undefined);
  }
}

/** A token dataset's ids in row order, with the running count of non-padding positions before each row (a shard's token count). */
async function readTokenIds(dataset: TokenDatasetReader, rows: number): Promise<RowIds> {
  const ids = new Int32Array(rows);
  const tokens = new Float64Array(rows + 1);
  let off = 0;
  for await (const b of dataset.batches()) {
    ids.set(b.ids, off);
    const L = b.tokens.length / b.rows;
    for (let r = 0; r < b.rows; r++) tokens[off + r + 1] = tokens[off + r]! + countTokens(b.tokens.subarray(r * L, (r + 1) * L));
    off += b.rows;
  }
  return { ids, tokens };
}

/** Every id of the dataset in row order (the coordinator checks each upload against them). */
async function readIds(dataset: DatasetReader, rows: number): Promise<Ids> {
  const ids = dataset.idType === 'int64' ? new BigInt64Array(rows) : new Int32Array(rows);
  let off = 0;
  for await (const b of dataset) {
    (ids as Int32Array).set(b.ids as Int32Array, off);
    off += b.rows;
  }
  return ids;
}
