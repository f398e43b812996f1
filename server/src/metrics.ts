import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** One registry per server instance (tests start several in one process). */
export function createMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  return {
    registry,
    requests: new Counter({
      name: 'distillate_http_requests_total',
      help: 'HTTP requests by route and status',
      labelNames: ['method', 'route', 'status'] as const,
      registers: [registry],
    }),
    jobs: new Counter({ name: 'distillate_jobs_total', help: 'Job state transitions', labelNames: ['type', 'state'] as const, registers: [registry] }),
    batchSize: new Histogram({
      name: 'distillate_batch_rows',
      help: 'Rows per online inference batch',
      buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024],
      registers: [registry],
    }),
    inferenceSeconds: new Histogram({
      name: 'distillate_inference_seconds',
      help: 'Online inference latency per batch',
      labelNames: ['teacher'] as const,
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    }),
    queuedRows: new Gauge({ name: 'distillate_queued_rows', help: 'Rows waiting in online batch queues', registers: [registry] }),
    workerRowsPerSecond: new Gauge({
      name: 'distillate_worker_rows_per_second',
      help: 'Rows per second of busy time, per live worker (from heartbeats)',
      labelNames: ['worker'] as const,
      registers: [registry],
    }),
    workerRows: new Counter({
      name: 'distillate_worker_rows_total',
      help: 'Rows uploaded, per worker',
      labelNames: ['worker'] as const,
      registers: [registry],
    }),
    workersLive: new Gauge({ name: 'distillate_workers_live', help: 'Workers heard from in the last 10 s', registers: [registry] }),
    queueTasks: new Gauge({
      name: 'distillate_queue_tasks',
      help: 'Shard tasks on the Redis queue by state (waiting is the queue depth); absent with the in-process queue',
      labelNames: ['state'] as const,
      registers: [registry],
    }),
  };
}
export type Metrics = ReturnType<typeof createMetrics>;
