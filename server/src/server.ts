/** Wires the parts together and owns the lifecycle: listen, then shut down in order. */
import type { AddressInfo } from 'node:net';
import { mkdir } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { pino, type Logger } from 'pino';
import { createApp } from './app.js';
import type { ServerConfig } from './config.js';
import { JobManager } from './jobs/index.js';
import { createMetrics } from './metrics.js';
import { OnlineInference } from './online.js';
import { RedisCoordinator } from './queue/coordinator.js';
import { parseQueueUrl } from './queue/redis.js';
import { WorkerRegistry } from './queue/workers.js';
import { TeacherRegistry } from '@distillate/shared/onnx';

export interface RunningServer {
  readonly url: string;
  readonly port: number;
  readonly jobs: JobManager;
  readonly teachers: TeacherRegistry;
  close(): Promise<void>;
}

export interface Services {
  readonly teachers: TeacherRegistry;
  readonly jobs: JobManager;
  readonly logger: Logger;
  readonly metrics: ReturnType<typeof createMetrics>;
  readonly workers: WorkerRegistry;
  /** Bring the queue gauges up to date (called before each /metrics scrape). */
  refreshMetrics(): Promise<void>;
}

/** Teachers, jobs, metrics and logger: shared by `serve` and the in-process CLI jobs. */
export async function createServices(config: ServerConfig, logger: Logger = pino({ level: config.logLevel })): Promise<Services> {
  await mkdir(config.cache, { recursive: true });
  const metrics = createMetrics();
  const teachers = await TeacherRegistry.open(config.models, {
    ...(config.provider === undefined ? {} : { provider: config.provider }),
    ...(config.threads === undefined ? {} : { intraOpThreads: config.threads }),
    onProviderFailure: (teacher, provider, reason) => logger.debug({ teacher, provider, reason }, 'execution provider unavailable'),
  });
  const executor = config.queue === undefined ? undefined : await RedisCoordinator.open({ target: parseQueueUrl(config.queue), logger });
  const workers = new WorkerRegistry(metrics);
  const jobs = new JobManager({
    teachers,
    ...(executor === undefined ? {} : { executor }),
    dataRoot: config.data,
    cacheRoot: config.cache,
    logger,
    ...(config.shardRows === undefined ? {} : { shardRows: config.shardRows }),
    onStateChange: (job) => metrics.jobs.inc({ type: job.request.type, state: job.state }),
  });
  const refreshMetrics = async () => {
    metrics.workersLive.set(workers.count);
    const counts = await executor?.counts();
    for (const [state, n] of Object.entries(counts ?? {})) metrics.queueTasks.set({ state }, n);
  };
  return { teachers, jobs, logger, metrics, workers, refreshMetrics };
}

export async function startServer(config: ServerConfig, logger?: Logger): Promise<RunningServer> {
  const services = await createServices(config, logger);
  const { teachers, jobs, metrics } = services;
  let ready = false;
  const online = new OnlineInference(teachers, { maxBatch: config.maxBatch, maxWaitMs: config.maxWaitMs, maxQueueRows: config.maxQueueRows }, metrics);
  const app = createApp({
    teachers,
    online,
    jobs,
    workers: services.workers,
    dataRoot: config.data,
    cacheRoot: config.cache,
    metrics,
    refreshMetrics: services.refreshMetrics,
    logger: services.logger,
    token: config.token,
    maxBodyBytes: config.maxBodyBytes,
    isReady: () => ready,
  });
  const server: Server = createServer(app);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.port, config.host, () => resolve());
  });
  await jobs.init();
  ready = true;
  const port = (server.address() as AddressInfo).port;
  const host = config.host.includes(':') ? `[${config.host}]` : config.host;
  const url = `http://${host}:${port}`;
  for (const name of teachers.names()) {
    // Load eagerly in the background so the first request does not pay for it; log the winner.
    void teachers
      .get(name)
      .info()
      .then((i) => services.logger.info({ teacher: name, executionProvider: i.executionProvider }, 'teacher loaded'))
      .catch((err: unknown) => services.logger.warn({ teacher: name, err: (err as Error).message }, 'teacher failed to load'));
  }
  let closing: Promise<void> | undefined;
  return {
    url,
    port,
    jobs,
    teachers,
    close() {
      closing ??= (async () => {
        ready = false;
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeAllConnections();
        });
        await jobs.shutdown(); // checkpoints the running job; it resumes on the next start
        await teachers.releaseAll();
      })();
      return closing;
    },
  };
}
