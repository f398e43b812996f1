/**
 * `distillate-server worker`: takes shard tasks from the Redis queue, runs the teacher over the
 * task's rows on this host's execution provider, encodes the shard exactly as the in-process
 * writer would, and uploads it to the coordinator. The teacher comes from --models when its
 * sha256 matches the task's, else from the coordinator (the sha256 is checked either way); the
 * rows come from --data when the dataset's fingerprint matches, else from the coordinator.
 */
import { randomUUID } from 'node:crypto';
import { stat } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join, resolve, sep } from 'node:path';
import {
  DatasetReader,
  ShardEncoder,
  TokenDatasetReader,
  encodeCacheShard,
  expandViews,
  featureSize,
  poolFeature,
  imageGeometry,
  isTokenDataset,
  sha256File,
  type DatasetBatch,
  type DatasetInfo,
  type EncodedShard,
  type Ids,
  type TokenBatch,
  type TokenDatasetInfo,
} from '@distillate/shared';
import { Teacher, datasetPreprocessor, type ExecutionProvider, type TeacherInfo } from '@distillate/shared/onnx';
import { UnrecoverableError, Worker, type Job } from 'bullmq';
import type { Logger } from 'pino';
import { cachePreprocessing } from '../jobs/precompute.js';
import { tokenPreprocessing } from '../jobs/precompute-tokens.js';
import { CoordinatorClient, CoordinatorError } from './coordinator-client.js';
import { assertReachable, connectionOptions, describeTarget, type RedisTarget } from './redis.js';
import { QUEUE_NAME, ShardTaskSchema, type ShardTask, type Timing } from './task.js';
import { HEARTBEAT_MS, type Heartbeat } from './workers.js';

export interface WorkerOptions {
  readonly target: RedisTarget;
  readonly server: string;
  readonly token?: string | undefined;
  readonly models?: string | undefined;
  readonly data?: string | undefined;
  /** Where fetched teachers are kept. */
  readonly workDir: string;
  readonly provider?: ExecutionProvider | undefined;
  readonly threads?: number | undefined;
  /**
   * Tasks in flight (default 2). The teacher runs one task at a time whatever this is (its
   * parallelism is `threads`); the next task is taken when the teacher is free, so up to
   * `concurrency − 1` uploads overlap the running inference.
   */
  readonly concurrency?: number;
  /** BullMQ lock: a worker silent this long (killed, hung) loses its task to another (default 30 s). */
  readonly lockMs?: number;
  readonly logger: Logger;
}

export interface RunningWorker {
  readonly id: string;
  close(): Promise<void>;
}

const ms = (t0: number) => performance.now() - t0;

export async function startWorker(o: WorkerOptions): Promise<RunningWorker> {
  await assertReachable(o.target);
  const id = `${hostname()}-${process.pid}`;
  const client = new CoordinatorClient({ server: o.server, token: o.token });
  const teachers = new Map<string, Promise<Teacher>>();
  /** Local datasets by path, per version of the file: hashed and indexed once, not per task. */
  const local = new Map<string, { version: string; fingerprint: string; dataset: DatasetReader | TokenDatasetReader }>();
  const stats = { rows: 0, tasks: 0, busyMs: 0, timing: { read: 0, teacher: 0, encode: 0, upload: 0 } satisfies Timing, ep: undefined as string | undefined };
  const active = new Set<string>();
  /** Busy time is wall time with at least one task in hand (tasks in flight overlap). */
  let busySince = 0;
  const concurrency = o.concurrency ?? 2;
  const lockDuration = o.lockMs ?? 30_000;
  const log = o.logger.child({ worker: id });

  /** The task's teacher, by sha256: ours if the file matches, else downloaded and checked. */
  function teacherFor(t: ShardTask['teacher']): Promise<Teacher> {
    let p = teachers.get(t.sha256);
    if (p === undefined) {
      p = (async () => {
        const options = { ...(o.provider === undefined ? {} : { provider: o.provider }), ...(o.threads === undefined ? {} : { intraOpThreads: o.threads }) };
        const own = o.models === undefined ? undefined : join(o.models, `${t.name}.onnx`);
        if (own !== undefined && (await sha256File(own).catch(() => undefined))?.sha256 === t.sha256) return new Teacher(t.name, own, t.sidecar, options);
        const path = join(o.workDir, 'teachers', `${t.sha256}.onnx`);
        if ((await sha256File(path).catch(() => undefined))?.sha256 !== t.sha256) {
          log.info({ teacher: t.name, sha256: t.sha256 }, 'fetching the teacher from the coordinator');
          await client.fetchTeacher(t.name, t.sha256, path);
        }
        return new Teacher(t.name, path, t.sidecar, options);
      })();
      teachers.set(t.sha256, p);
      p.catch(() => teachers.delete(t.sha256));
    }
    return p;
  }

  /** The task's dataset under --data when the file there has the task's fingerprint (opened and hashed once per version of the file). */
  async function localDataset(task: ShardTask): Promise<DatasetReader | TokenDatasetReader | undefined> {
    if (o.data === undefined) return undefined;
    const root = resolve(o.data);
    const path = resolve(root, task.dataset.path);
    const s = path.startsWith(root + sep) ? await stat(path).catch(() => undefined) : undefined;
    if (s?.isFile() !== true) return undefined;
    const version = `${s.size}:${s.mtimeMs}:${s.ino}`;
    let known = local.get(path);
    if (known?.version !== version) {
      const dataset = (await isTokenDataset(path)) ? await TokenDatasetReader.open(path) : await DatasetReader.open(path);
      known = { version, fingerprint: (await sha256File(path)).sha256, dataset };
      local.set(path, known);
    }
    if (known.fingerprint === task.dataset.fingerprint) return known.dataset;
    log.warn({ dataset: task.dataset.path }, "the local copy of the dataset differs from the coordinator's; reading rows over HTTP");
    return undefined;
  }

  /** The task's dataset rows (its images, for a view cache): from --data, else over HTTP. */
  async function rowsFor(task: ShardTask): Promise<{ info: DatasetInfo; batch: DatasetBatch }> {
    const K = task.views?.count ?? 1;
    const [start, count] = [task.start / K, task.rows / K];
    const d = await localDataset(task);
    if (d instanceof DatasetReader) return { info: d.info, batch: await d.readRows(start, count) };
    return client.fetchRows(task.dataset.path, task.dataset.fingerprint, start, count);
  }

  /** A token task's blocks: from --data, else over HTTP. */
  async function blocksFor(task: ShardTask): Promise<{ info: TokenDatasetInfo; batch: TokenBatch }> {
    const d = await localDataset(task);
    if (d instanceof TokenDatasetReader) return { info: d.info, batch: await d.readRows(task.start, task.rows) };
    return client.fetchTokenRows(task.dataset.path, task.dataset.fingerprint, task.start, task.rows);
  }

  /** A class or view cache shard: the teacher over the task's rows (their views), then encoded whole. */
  async function classShard(task: ShardTask, teacher: Teacher, teacherInfo: TeacherInfo, computed: () => void): Promise<EncodedShard> {
    let t0 = performance.now();
    const { info, batch } = await rowsFor(task).catch(refuse);
    // A view cache's rows: each image's K views, drawn and transformed by shared code as in process.
    let ids: Ids = batch.ids;
    let inputs: Float32Array | Uint8Array = batch.inputs;
    if (task.views !== undefined) {
      // The coordinator refuses flat samples before queueing; a worker's different copy cannot be fixed by retrying.
      let geometry;
      try {
        geometry = imageGeometry(info);
      } catch (err) {
        throw new UnrecoverableError((err as Error).message);
      }
      ({ ids, raw: inputs } = expandViews(task.views, geometry, ids, inputs, batch.inputs.length / batch.rows));
    }
    stats.timing.read += ms(t0);
    const pre = datasetPreprocessor(info, teacherInfo, teacher.sidecar);
    if (cachePreprocessing(pre.description, task.labelStatistics) !== task.preprocessing) {
      throw new UnrecoverableError(`this worker preprocesses as ${pre.description}; the coordinator planned ${task.preprocessing}`);
    }
    const C = teacherInfo.classes.length;
    const D = pre.sampleSize;
    const logits = new Float32Array(task.rows * C);
    // Stored features, pooled here exactly as in process (shared's poolFeature).
    const stored = task.features ?? [];
    const names = stored.map((f) => f.tensor);
    const features = stored.map((f) => new Float32Array(task.rows * featureSize(f)));
    t0 = performance.now();
    let scratch: Float32Array | undefined;
    for (let r = 0; r < task.rows; r += task.batchSize) {
      const n = Math.min(task.batchSize, task.rows - r);
      // Ask for the next task as the last batch starts: its fetch and read overlap this batch.
      if (r + n >= task.rows) computed();
      const x = pre.apply(inputs.subarray(r * D, (r + n) * D), n, scratch);
      scratch = x.length === task.batchSize * D ? x : scratch;
      if (stored.length === 0) logits.set(await teacher.logits(x, n), r * C);
      else {
        const out = await teacher.logitsAndTensors(x, n, names);
        logits.set(out.logits, r * C);
        stored.forEach((f, i) => poolFeature(f, out.tensors[i]!, n, features[i]!.subarray(r * featureSize(f), (r + n) * featureSize(f))));
      }
    }
    stats.timing.teacher += ms(t0);
    t0 = performance.now();
    const shard = encodeCacheShard(
      {
        storage: task.storage,
        classes: C,
        temperature: task.temperature,
        labelStatistics: task.labelStatistics,
        views: task.views,
        ...(stored.length === 0 ? {} : { features: stored }),
      },
      task.batchRows,
      ids,
      logits,
      undefined,
      stored.length === 0 ? undefined : features,
    );
    stats.timing.encode += ms(t0);
    return shard;
  }

  /**
   * A token cache shard: the causal-LM teacher over the task's blocks, one record batch of full
   * logits ([batchRows, L, V], bounded by the layout) at a time, each encoded as it is done.
   */
  async function tokenShard(task: ShardTask, teacher: Teacher, teacherInfo: TeacherInfo, computed: () => void): Promise<EncodedShard> {
    let t0 = performance.now();
    const { info, batch } = await blocksFor(task).catch(refuse);
    stats.timing.read += ms(t0);
    if (tokenPreprocessing(info) !== task.preprocessing)
      throw new UnrecoverableError(`this worker's copy of the rows reads as ${tokenPreprocessing(info)}; the coordinator planned ${task.preprocessing}`);
    const lm = teacherInfo.lm;
    if (lm === undefined) throw new UnrecoverableError(`teacher ${task.teacher.name} is not a causal language model here`);
    const [L, V] = [info.block, lm.vocabSize];
    const encoder = new ShardEncoder({ storage: task.storage, classes: V, temperature: task.temperature, labelStatistics: false, positions: L }, 'int32');
    const logits = new Float32Array(Math.min(task.batchRows, task.rows) * L * V);
    for (let b = 0; b < task.rows; b += task.batchRows) {
      const rows = Math.min(task.batchRows, task.rows - b);
      t0 = performance.now();
      for (let r = b; r < b + rows; r += task.batchSize) {
        const n = Math.min(task.batchSize, b + rows - r);
        if (r + n >= task.rows) computed();
        await teacher.tokenLogits(batch.tokens.subarray(r * L, (r + n) * L), n, L, logits.subarray((r - b) * L * V, (r - b + n) * L * V));
      }
      stats.timing.teacher += ms(t0);
      t0 = performance.now();
      encoder.add(batch.ids.subarray(b, b + rows), logits.subarray(0, rows * L * V), batch.tokens.subarray(b * L, (b + rows) * L));
      stats.timing.encode += ms(t0);
    }
    t0 = performance.now();
    const shard = encoder.finish();
    stats.timing.encode += ms(t0);
    return shard;
  }

  /** One task, start to upload. `computed` is called as its last teacher batch starts (or when it fails before). */
  async function runTask(job: Job, computed: () => void): Promise<{ rows: number; outcome: string }> {
    const parsed = ShardTaskSchema.safeParse(job.data);
    if (!parsed.success) throw new UnrecoverableError(`not a shard task: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
    const task = parsed.data;
    if (job.attemptsStarted > 1) log.warn({ task: job.id, attempt: job.attemptsStarted }, 'running a task again (an earlier attempt stalled or failed)');
    if (active.size === 0) busySince = performance.now();
    active.add(job.id!);
    void beat();
    const started = performance.now();
    try {
      const teacher = await teacherFor(task.teacher).catch(refuse);
      const { info: teacherInfo } = await teacher.load();
      stats.ep = teacherInfo.executionProvider;
      const shard = task.tokens === undefined ? await classShard(task, teacher, teacherInfo, computed) : await tokenShard(task, teacher, teacherInfo, computed);
      const t0 = performance.now();
      let outcome: string;
      try {
        outcome = await client.uploadShard(task.job, task.index, shard.bytes, shard.sha256, id);
      } catch (err) {
        if (err instanceof CoordinatorError && err.code === 'shard_conflict') {
          // The coordinator keeps the first copy and reports the conflict on the job.
          log.error({ task: job.id }, err.message);
          outcome = 'conflict';
        } else if (err instanceof CoordinatorError && (err.status === 404 || err.status === 410)) {
          throw new UnrecoverableError(err.message);
        } else throw err;
      }
      stats.timing.upload += ms(t0);
      stats.rows += task.rows;
      stats.tasks += 1;
      log.info({ task: job.id, rows: task.rows, ms: Math.round(ms(started)), outcome }, 'shard uploaded');
      return { rows: task.rows, outcome };
    } finally {
      computed();
      active.delete(job.id!);
      if (active.size === 0) stats.busyMs += ms(busySince);
      void beat();
    }
  }

  /**
   * Manual fetching (BullMQ's Worker without a processor): a task is taken only when the
   * teacher is free, so the next task's inference overlaps the last one's upload, and no task
   * waits in this worker's hands while another worker idles (which a plain `concurrency: 2`
   * would do at the end of a job).
   */
  async function handle(job: Job, token: string, computed: () => void): Promise<void> {
    // Manual fetching renews its own locks; a worker that stops renewing (killed) loses the task.
    const renew = setInterval(() => void job.extendLock(token, lockDuration).catch(() => undefined), Math.max(250, Math.floor(lockDuration / 3)));
    try {
      const result = await runTask(job, computed);
      await job.moveToCompleted(result, token, false);
    } catch (err) {
      log.warn({ task: job.id, attempt: job.attemptsMade + 1, err: (err as Error).message }, 'task attempt failed');
      await job
        .moveToFailed(err as Error, token, false)
        .catch((e: unknown) => log.warn({ task: job.id, err: (e as Error).message }, 'could not record the failure; the task will stall and be retried'));
    } finally {
      clearInterval(renew);
    }
  }

  let stopping = false;
  const inFlight = new Set<Promise<void>>();
  async function loop(): Promise<void> {
    while (!stopping) {
      while (inFlight.size >= concurrency) await Promise.race(inFlight);
      const token = randomUUID();
      let job: Job | undefined;
      try {
        job = await worker.getNextJob(token, { block: true });
      } catch (err) {
        if (stopping) break;
        log.debug({ err: (err as Error).message }, 'could not fetch a task; retrying');
        await new Promise((r) => setTimeout(r, 1000));
        continue;
      }
      if (job === undefined) continue;
      let computed!: () => void;
      const inferenceOver = new Promise<void>((r) => (computed = r));
      const p: Promise<void> = handle(job, token, computed).finally(() => inFlight.delete(p));
      inFlight.add(p);
      await inferenceOver;
    }
  }

  const worker = new Worker(QUEUE_NAME, null, {
    connection: connectionOptions(o.target),
    lockDuration,
    stalledInterval: Math.max(500, Math.floor(lockDuration / 2)),
    maxStalledCount: 2,
    name: id,
  });
  let lastError = '';
  worker.on('error', (err) => {
    if (err.message !== lastError) log.warn({ err: err.message }, 'queue error (retrying)');
    lastError = err.message;
  });

  const busy = () => stats.busyMs + (active.size > 0 ? ms(busySince) : 0);

  async function beat(): Promise<void> {
    const hb: Heartbeat = {
      id,
      host: hostname(),
      pid: process.pid,
      ...(stats.ep === undefined ? {} : { executionProvider: stats.ep }),
      ...(o.threads === undefined ? {} : { threads: o.threads }),
      concurrency,
      active: [...active],
      rows: stats.rows,
      tasks: stats.tasks,
      rowsPerSecond: busy() > 0 ? (stats.rows * 1000) / busy() : 0,
      timing: { ...stats.timing },
      startedAt,
    };
    await client.heartbeat(hb).catch((err: unknown) => log.debug({ err: (err as Error).message }, 'heartbeat not delivered'));
  }
  const startedAt = new Date().toISOString();
  const timer = setInterval(() => void beat(), HEARTBEAT_MS);
  await worker.waitUntilReady();
  // Without a processor the worker does not look for stalled tasks by itself.
  void worker.startStalledCheckTimer().catch((err: unknown) => log.warn({ err: (err as Error).message }, 'stalled-task check stopped'));
  const running = loop();
  void beat();
  log.info({ queue: describeTarget(o.target), server: o.server, concurrency }, 'waiting for shard tasks');
  return {
    id,
    async close() {
      stopping = true;
      clearInterval(timer);
      await Promise.all(inFlight);
      await worker.close();
      await running;
      for (const t of teachers.values()) await (await t.catch(() => undefined))?.release();
    },
  };
}

/** A refusal from the coordinator that retrying cannot fix fails the task at once. */
function refuse(err: unknown): never {
  if (err instanceof CoordinatorError && !err.retryable && err.status !== 401 && err.status !== 403) throw new UnrecoverableError(err.message);
  throw err;
}
