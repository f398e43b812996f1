/**
 * Builds the Express app. Handlers parse input with zod and call domain objects (teachers,
 * online inference, jobs, caches); one final middleware turns every error into
 * `{ error: { code, message } }`.
 */
import { randomUUID, timingSafeEqual } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import express, { type ErrorRequestHandler, type NextFunction, type Request, type Response } from 'express';
import { ArrowBodyError, CacheManifestSchema, decodeInputStream, encodeLogitsStream, listCaches, findCache, verifyCache } from '@distillate/shared';
import { DASHBOARD_HTML } from './dashboard.js';
import type { Logger } from 'pino';
import { pinoHttp } from 'pino-http';
import { z } from 'zod';
import { AppError, badRequest, notFound, toAppError, zodToAppError } from './errors.js';
import { JobRequestSchema, type JobManager, type JobRecord } from './jobs/index.js';
import type { Metrics } from './metrics.js';
import type { OnlineInference } from './online.js';
import type { TeacherRegistry } from '@distillate/shared/onnx';

import { ARROW_FILE, ARROW_STREAM, workerRouter } from './worker-api.js';
import type { WorkerRegistry } from './queue/workers.js';
import { exportLabels } from './export-labels.js';
import { ImportError } from './import/sink.js';
import { confinedPath } from './paths.js';

export { ARROW_STREAM };

export interface AppDeps {
  readonly teachers: TeacherRegistry;
  readonly online: OnlineInference;
  readonly jobs: JobManager;
  readonly workers: WorkerRegistry;
  readonly dataRoot: string;
  readonly cacheRoot: string;
  readonly metrics: Metrics;
  readonly logger: Logger;
  readonly token?: string | undefined;
  readonly maxBodyBytes: number;
  readonly isReady: () => boolean;
  readonly refreshMetrics?: () => Promise<void>;
}

const LogitsJsonSchema = z
  .object({
    inputs: z.array(z.number()).min(1),
    shape: z.array(z.number().int().positive()).min(1),
    temperature: z.number().optional(),
  })
  .strict();
const LabelsQuery = z
  .object({
    format: z.enum(['csv', 'parquet', 'jsonl']).default('csv'),
    topK: z.coerce.number().int().min(1).optional(),
    minConfidence: z.coerce.number().min(0).max(1).optional(),
  })
  .strict();
const LABEL_TYPES = { csv: 'text/csv', parquet: 'application/vnd.apache.parquet', jsonl: 'application/x-ndjson' } as const;
const TemperatureQuery = z.object({ temperature: z.coerce.number().positive().finite().optional() });
const CacheKeyParam = z.string().regex(/^[0-9a-f]{64}$/, 'a cache key is 64 lowercase hex characters');

function parse<T extends z.ZodType>(schema: T, value: unknown): z.infer<T> {
  const r = schema.safeParse(value);
  if (!r.success) throw zodToAppError(r.error);
  return r.data;
}

function publicJob(job: JobRecord, workers: WorkerRegistry) {
  return {
    id: job.id,
    type: job.request.type,
    teacher: job.request.teacher,
    dataset: job.request.dataset,
    state: job.state,
    progress: job.progress,
    ...(job.cacheKey === undefined ? {} : { cacheKey: job.cacheKey }),
    ...(job.cacheHit === undefined ? {} : { cacheHit: job.cacheHit }),
    ...(job.error === undefined ? {} : { error: job.error }),
    ...(job.selection === undefined ? {} : { selection: job.selection }),
    ...(job.distributed === undefined ? {} : { distributed: { ...job.distributed, workers: workers.count } }),
    ...(job.notice === undefined ? {} : { notice: job.notice }),
    ...(job.warnings === undefined ? {} : { warnings: job.warnings }),
    createdAt: job.createdAt,
    updatedAt: job.updatedAt,
  };
}

/** Decode an Arrow IPC request body; a malformed one is the client's error. */
function arrowInputs(body: Buffer): { inputs: Float32Array; rows: number; size: number } {
  try {
    return decodeInputStream(body);
  } catch (err) {
    if (err instanceof ArrowBodyError) throw badRequest('bad_arrow', err.message);
    throw err;
  }
}

export function createApp(deps: AppDeps): express.Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('query parser', 'simple');

  app.use(
    pinoHttp({
      logger: deps.logger,
      genReqId: (req, res) => {
        const given = req.headers['x-request-id'];
        const id = typeof given === 'string' && given.length <= 128 ? given : randomUUID();
        res.setHeader('x-request-id', id);
        return id;
      },
      autoLogging: { ignore: (req) => req.url === '/healthz' || req.url === '/metrics' || req.url === '/v1/workers/heartbeat' },
    }),
  );

  app.use((req, res, next) => {
    res.on('finish', () => {
      const route = (req.route as { path?: string } | undefined)?.path ?? 'unmatched';
      deps.metrics.requests.inc({ method: req.method, route: `${req.baseUrl}${route}`, status: String(res.statusCode) });
    });
    next();
  });

  // Every mutating route needs the bearer token when one is configured (and GET /v1/session, by which the dashboard checks a token).
  if (deps.token !== undefined && deps.token !== '') {
    const expected = Buffer.from(deps.token);
    app.use((req: Request, _res: Response, next: NextFunction) => {
      if ((req.method === 'GET' || req.method === 'HEAD' || req.method === 'OPTIONS') && req.path !== '/v1/session') return next();
      const header = req.headers.authorization ?? '';
      const given = Buffer.from(header.startsWith('Bearer ') ? header.slice(7) : '');
      if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
        return next(new AppError(401, 'unauthorized', 'this route needs "Authorization: Bearer <token>"'));
      }
      next();
    });
  }

  app.use(express.json({ limit: deps.maxBodyBytes }));
  app.use(express.raw({ type: [ARROW_STREAM, ARROW_FILE], limit: deps.maxBodyBytes }));

  app.get('/healthz', (_req, res) => {
    res.json({ ok: true });
  });
  app.get('/readyz', (_req, res) => {
    if (deps.isReady()) res.json({ ready: true });
    else res.status(503).json({ error: { code: 'not_ready', message: 'server is starting or stopping' } });
  });
  app.get('/metrics', async (_req, res) => {
    await deps.refreshMetrics?.();
    res.type(deps.metrics.registry.contentType).send(await deps.metrics.registry.metrics());
  });

  app.use(workerRouter({ teachers: deps.teachers, jobs: deps.jobs, workers: deps.workers, dataRoot: deps.dataRoot, token: deps.token }));

  app.get('/v1/teachers', async (_req, res) => {
    const teachers = [];
    for (const name of deps.teachers.names()) {
      try {
        const info = await deps.teachers.get(name).info();
        teachers.push({
          name,
          sha256: info.sha256,
          inputs: info.inputs,
          outputs: info.outputs,
          classes: info.classes,
          executionProvider: info.executionProvider,
          layout: info.layout,
        });
      } catch (err) {
        const app = toAppError(err);
        const e = app !== undefined ? { code: app.code, message: app.message } : { code: 'load_failed', message: (err as Error).message };
        teachers.push({ name, error: e });
      }
    }
    res.json({ teachers });
  });

  // The teacher's per-sample intermediate tensors: what feature capture can store.
  app.get('/v1/teachers/:name/tensors', async (req, res) => {
    const teacher = deps.teachers.get(req.params['name'] as string);
    const info = await teacher.info();
    res.json({ teacher: teacher.name, sha256: info.sha256, sampleShape: info.sampleShape, tensors: await teacher.tensors() });
  });

  // Pick up models copied into --models since boot (e.g. a freshly exported student).
  app.post('/v1/teachers/rescan', async (_req, res) => {
    try {
      await deps.teachers.rescan();
    } catch (err) {
      throw new AppError(422, 'bad_sidecar', (err as Error).message);
    }
    res.json({ teachers: deps.teachers.names() });
  });

  app.post('/v1/teachers/:name/logits', async (req, res) => {
    const name = req.params['name'] as string;
    const isArrow = req.is(ARROW_STREAM) === ARROW_STREAM;
    if (isArrow) {
      if (!Buffer.isBuffer(req.body)) throw badRequest('bad_arrow', 'empty Arrow body');
      const query = parse(TemperatureQuery, req.query);
      const { inputs, rows, size } = arrowInputs(req.body);
      const info = await deps.teachers.get(name).info();
      const sample = info.sampleShape.reduce((a, b) => a * b, 1);
      if (size !== sample) throw badRequest('bad_shape', `input lists hold ${size} values; teacher ${name} takes ${sample} ([${info.sampleShape.join(', ')}])`);
      const r = await deps.online.logits(name, inputs, [rows, ...info.sampleShape], query.temperature ?? 1);
      res.type(ARROW_STREAM).send(Buffer.from(encodeLogitsStream(r.logits, r.rows, r.classes, r.temperature, r.executionProvider)));
      return;
    }
    if (!req.is('application/json')) throw new AppError(415, 'unsupported_media_type', `send application/json or ${ARROW_STREAM}`);
    const body = parse(LogitsJsonSchema, req.body);
    const r = await deps.online.logits(name, Float32Array.from(body.inputs), body.shape, body.temperature ?? 1);
    const logits: number[][] = [];
    for (let i = 0; i < r.rows; i++) logits.push(Array.from(r.logits.subarray(i * r.classes, (i + 1) * r.classes)));
    res.json({ logits, temperature: r.temperature, executionProvider: r.executionProvider });
  });

  // The dashboard (dashboard.ts): one page, no build step; it reads the API below.
  app.get('/', (_req, res) => {
    res.type('html').setHeader('cache-control', 'no-cache').send(DASHBOARD_HTML);
  });
  // 204 when the request may use this server: with a token configured, only with it.
  app.get('/v1/session', (_req, res) => {
    res.status(204).end();
  });

  app.post('/v1/jobs', async (req, res) => {
    const job = await deps.jobs.create(parse(JobRequestSchema, req.body));
    res.status(202).location(`/v1/jobs/${job.id}`).json({ id: job.id, state: job.state });
  });
  app.get('/v1/jobs', (_req, res) => {
    res.json({ jobs: deps.jobs.list().map((j) => publicJob(j, deps.workers)) });
  });
  app.get('/v1/jobs/:id', (req, res) => {
    res.json(publicJob(deps.jobs.get(req.params['id'] as string), deps.workers));
  });
  app.delete('/v1/jobs/:id', async (req, res) => {
    res.json(publicJob(await deps.jobs.cancel(req.params['id'] as string), deps.workers));
  });
  app.get('/v1/jobs/:id/events', (req, res) => {
    const job = deps.jobs.get(req.params['id'] as string);
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
    const send = (type: string, j: JobRecord) => res.write(`event: ${type}\ndata: ${JSON.stringify(publicJob(j, deps.workers))}\n\n`);
    const terminal = (s: string) => s === 'succeeded' || s === 'failed' || s === 'canceled';
    send('state', job);
    if (terminal(job.state)) return void res.end();
    const unsubscribe = deps.jobs.subscribe(job.id, (e) => {
      send(e.type, e.job);
      if (e.type === 'state' && terminal(e.job.state)) {
        unsubscribe();
        res.end();
      }
    });
    req.on('close', unsubscribe);
  });

  // A finished precompute or label job's pseudo-labels as a table (export-labels.ts), as a download.
  app.get('/v1/jobs/:id/labels', async (req, res) => {
    const q = parse(LabelsQuery, req.query);
    const id = req.params['id'] as string;
    const job = deps.jobs.get(id);
    if (job.state !== 'succeeded' || job.cacheKey === undefined)
      throw new AppError(409, 'job_not_finished', `job ${id} is ${job.state}: its labels exist once it has succeeded`);
    const dataset = await confinedPath(deps.dataRoot, job.request.dataset, 'dataset');
    const dir = await mkdtemp(join(tmpdir(), 'distillate-labels-'));
    try {
      const out = join(dir, `labels.${q.format}`);
      try {
        await exportLabels({
          cache: join(deps.cacheRoot, job.cacheKey),
          dataset,
          out,
          format: q.format,
          ...(q.topK === undefined ? {} : { topK: q.topK }),
          ...(q.minConfidence === undefined ? {} : { minConfidence: q.minConfidence }),
        });
      } catch (err) {
        if (err instanceof ImportError) throw new AppError(422, 'cannot_export', err.message);
        throw err;
      }
      res.type(LABEL_TYPES[q.format]).setHeader('content-disposition', `attachment; filename="${id}-labels.${q.format}"`);
      await new Promise<void>((resolve, reject) => res.sendFile(out, (err) => (err ? reject(err) : resolve())));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  app.get('/v1/caches', async (_req, res) => {
    const caches = await listCaches(deps.cacheRoot);
    res.json({
      caches: caches.map((c) => ({
        key: c.key,
        teacher: c.manifest.teacher.name,
        datasetFingerprint: c.manifest.dataset.fingerprint,
        rows: c.manifest.dataset.rows,
        temperature: c.manifest.temperature,
        storage: c.manifest.storage,
        labelStatistics: c.manifest.labelStatistics,
        ...(c.manifest.views === undefined ? {} : { views: c.manifest.views }),
        shards: c.manifest.shards.length,
        bytes: c.manifest.shards.reduce((a, sh) => a + sh.bytes, 0),
        createdAt: c.manifest.createdAt,
      })),
    });
  });
  // Re-hash every shard against the manifest (the dashboard's "verify").
  app.post('/v1/caches/:key/verify', async (req, res) => {
    const key = parse(CacheKeyParam, req.params['key']);
    const entry = await findCache(deps.cacheRoot, key);
    if (entry === undefined) throw notFound('unknown_cache', `no complete cache ${key}`);
    const v = await verifyCache(entry.dir);
    res.json({ key, ok: v.ok, rows: v.rows, problems: v.problems });
  });
  app.get('/v1/caches/:key', async (req, res) => {
    const key = parse(CacheKeyParam, req.params['key']);
    const entry = await findCache(deps.cacheRoot, key);
    if (entry === undefined) throw notFound('unknown_cache', `no complete cache ${key}`);
    res.json(CacheManifestSchema.parse(entry.manifest));
  });
  app.get('/v1/caches/:key/:file', async (req, res) => {
    const key = parse(CacheKeyParam, req.params['key']);
    const file = req.params['file'] as string;
    const entry = await findCache(deps.cacheRoot, key);
    if (entry === undefined) throw notFound('unknown_cache', `no complete cache ${key}`);
    if (file !== 'manifest.json' && !entry.manifest.shards.some((s) => s.file === file)) {
      throw notFound('unknown_file', `cache ${key} has no file "${file}"`);
    }
    res.type(file.endsWith('.json') ? 'application/json' : 'application/vnd.apache.arrow.file');
    await new Promise<void>((resolve, reject) => res.sendFile(join(entry.dir, file), { dotfiles: 'deny' }, (err) => (err ? reject(err) : resolve())));
  });

  app.use((req, _res, next) => next(notFound('not_found', `no route ${req.method} ${req.path}`)));

  const onError: ErrorRequestHandler = (err: unknown, req, res, _next) => {
    let e: AppError;
    const httpErr = err as { type?: unknown; status?: unknown; message?: unknown } | null;
    const message = typeof httpErr?.message === 'string' ? httpErr.message : String(err);
    const known = toAppError(err);
    if (known !== undefined) e = known;
    else if (err instanceof z.ZodError) e = zodToAppError(err);
    else if (httpErr?.type === 'entity.too.large') e = new AppError(413, 'body_too_large', `request body exceeds ${deps.maxBodyBytes} bytes`);
    else if (httpErr?.type === 'entity.parse.failed') e = new AppError(400, 'bad_json', `request body is not valid JSON: ${message}`);
    else if (typeof httpErr?.status === 'number' && httpErr.status >= 400 && httpErr.status < 500) e = new AppError(httpErr.status, 'bad_request', message);
    else {
      req.log.error({ err }, 'unhandled error');
      e = new AppError(500, 'internal', 'internal server error');
    }
    if (res.headersSent) return void res.end();
    for (const [k, v] of Object.entries(e.headers)) res.setHeader(k, v);
    res.status(e.status).json({ error: { code: e.code, message: e.message } });
  };
  app.use(onError);
  return app;
}
