/**
 * The queue seam. The job manager owns jobs (API, state, SSE, cancel, resume); an executor
 * turns one job into a cache. In-process (the default) runs the precompute pipeline here; the
 * Redis executor (queue/coordinator.ts) splits it into shard tasks for remote workers. Both
 * report the same start and progress events and honour the same abort signal.
 */
import type { AcceptOutcome, DatasetReader } from '@distillate/shared';
import type { Teacher } from '@distillate/shared/onnx';
import type { Logger } from 'pino';
import { precomputeLogits } from './precompute.js';
import type { JobRequest } from './request.js';
import type { JobRecord } from './store.js';

export interface ExecutionContext {
  readonly job: JobRecord;
  readonly request: JobRequest;
  readonly teacher: Teacher;
  readonly datasetPath: string;
  readonly cacheRoot: string;
  readonly shardRows: number | undefined;
  readonly signal: AbortSignal;
  readonly logger: Logger;
  onStart(key: string, rows: number): void;
  onProgress(done: number, total: number): void;
  /** Something on the job changed besides progress (a notice, a warning): publish it. */
  onUpdate(): void;
}

export interface ExecutionResult {
  readonly key: string;
  readonly rows: number;
  readonly cacheHit: boolean;
  /** The dataset read (absent for a token dataset). */
  readonly dataset?: DatasetReader;
}

export interface JobExecutor {
  readonly kind: 'in-process' | 'redis';
  run(ctx: ExecutionContext): Promise<ExecutionResult>;
  /**
   * A shard uploaded by a remote worker (executors with workers only). undefined: the job is not
   * running here.
   */
  acceptShard?(jobId: string, index: number, bytes: Uint8Array, sha256: string, worker: string): Promise<AcceptOutcome | undefined>;
  close(): Promise<void>;
}

/** Today's behaviour: the whole job in this process, one teacher session, writes overlapped. */
export const inProcessExecutor: JobExecutor = {
  kind: 'in-process',
  run: (ctx) =>
    precomputeLogits({
      teacher: ctx.teacher,
      datasetPath: ctx.datasetPath,
      cacheRoot: ctx.cacheRoot,
      request: ctx.request,
      signal: ctx.signal,
      logger: ctx.logger,
      ...(ctx.shardRows === undefined ? {} : { shardRows: ctx.shardRows }),
      onStart: (key, rows) => ctx.onStart(key, rows),
      onProgress: (done, total) => ctx.onProgress(done, total),
    }),
  close: () => Promise.resolve(),
};
