/**
 * The routes workers use: the teacher file, dataset row ranges, shard uploads, heartbeats, and
 * the list of live workers. When the server has a token, every one of these needs it, reads
 * included (they hand out models and data).
 */
import { timingSafeEqual } from 'node:crypto';
import { stat } from 'node:fs/promises';
import { resolve as resolvePath } from 'node:path';
import { DatasetReader, TokenDatasetReader, encodeDatasetRows, encodeTokenRows, isTokenDataset } from '@distillate/shared';
import type { TeacherRegistry } from '@distillate/shared/onnx';
import { Router, type NextFunction, type Request, type Response } from 'express';
import { z } from 'zod';
import { AppError, badRequest, zodToAppError } from './errors.js';
import type { JobManager } from './jobs/index.js';
import { confinedPath } from './paths.js';
import { HeartbeatSchema, type WorkerRegistry } from './queue/workers.js';

export const ARROW_FILE = 'application/vnd.apache.arrow.file';
export const ARROW_STREAM = 'application/vnd.apache.arrow.stream';

export interface WorkerApiDeps {
  readonly teachers: TeacherRegistry;
  readonly jobs: JobManager;
  readonly workers: WorkerRegistry;
  readonly dataRoot: string;
  readonly token?: string | undefined;
}

const RowsQuery = z
  .object({
    path: z.string().min(1),
    start: z.coerce.number().int().nonnegative(),
    count: z.coerce
      .number()
      .int()
      .positive()
      .max(1 << 20),
    fingerprint: z
      .string()
      .regex(/^[0-9a-f]{64}$/)
      .optional(),
  })
  .strict();
const Sha256Header = z.string().regex(/^[0-9a-f]{64}$/, "x-distillate-sha256 must be the shard's lowercase hex sha256");
const ShardIndex = z.coerce.number().int().nonnegative();

function parse<T extends z.ZodType>(schema: T, value: unknown): z.infer<T> {
  const r = schema.safeParse(value);
  if (!r.success) throw zodToAppError(r.error);
  return r.data;
}

export function requireToken(token: string | undefined) {
  const expected = token === undefined || token === '' ? undefined : Buffer.from(token);
  return (req: Request, _res: Response, next: NextFunction) => {
    if (expected === undefined) return next();
    const header = req.headers.authorization ?? '';
    const given = Buffer.from(header.startsWith('Bearer ') ? header.slice(7) : '');
    if (given.length !== expected.length || !timingSafeEqual(given, expected))
      return next(new AppError(401, 'unauthorized', 'this route needs "Authorization: Bearer <token>"'));
    next();
  };
}

export function workerRouter(deps: WorkerApiDeps): Router {
  const r = Router();
  const auth = requireToken(deps.token);
  // Workers ask for many ranges of one dataset: hash it once per version of the file.
  const opened = new Map<string, { version: string; dataset: DatasetReader | TokenDatasetReader }>();
  const openDataset = async (path: string): Promise<DatasetReader | TokenDatasetReader> => {
    const s = await stat(path);
    const version = `${s.size}:${s.mtimeMs}:${s.ino}`;
    const known = opened.get(path);
    if (known?.version === version) return known.dataset;
    const dataset = (await isTokenDataset(path)) ? await TokenDatasetReader.open(path) : await DatasetReader.open(path);
    await dataset.fingerprint();
    opened.set(path, { version, dataset });
    return dataset;
  };

  r.get('/v1/workers', auth, (_req, res) => {
    res.json({ queue: deps.jobs.executor.kind, workers: deps.workers.live(), lost: deps.workers.lost() });
  });

  r.post('/v1/workers/heartbeat', auth, (req, res) => {
    deps.workers.heartbeat(parse(HeartbeatSchema, req.body));
    res.status(204).end();
  });

  r.get('/v1/teachers/:name/model', auth, async (req, res) => {
    const teacher = deps.teachers.get(req.params['name'] as string);
    const { sha256 } = await teacher.info();
    res.setHeader('x-distillate-sha256', sha256);
    res.type('application/octet-stream');
    await new Promise<void>((resolve, reject) => res.sendFile(resolvePath(teacher.path), (err) => (err ? reject(err) : resolve())));
  });

  r.get('/v1/datasets/rows', auth, async (req, res) => {
    const q = parse(RowsQuery, req.query);
    const dataset = await openDataset(await confinedPath(deps.dataRoot, q.path, 'dataset')).catch((err: unknown) => {
      throw err instanceof AppError ? err : badRequest('bad_dataset', (err as Error).message);
    });
    const fingerprint = await dataset.fingerprint();
    if (q.fingerprint !== undefined && q.fingerprint !== fingerprint)
      throw new AppError(409, 'dataset_changed', `dataset ${q.path} has fingerprint ${fingerprint} here, not ${q.fingerprint}`);
    const rows = await dataset.countRows();
    if (q.start + q.count > rows) throw badRequest('bad_range', `rows [${q.start}, ${q.start + q.count}) are outside the dataset's ${rows} rows`);
    // A token dataset answers with its blocks (`encodeTokenRows`), any other with its rows.
    const body =
      dataset instanceof TokenDatasetReader
        ? encodeTokenRows(dataset.info, await dataset.readRows(q.start, q.count))
        : encodeDatasetRows(dataset.info, await dataset.readRows(q.start, q.count));
    res.setHeader('x-distillate-fingerprint', fingerprint);
    res.type(ARROW_STREAM).send(Buffer.from(body));
  });

  r.put('/v1/jobs/:id/shards/:index', auth, async (req, res) => {
    if (req.is(ARROW_FILE) !== ARROW_FILE || !Buffer.isBuffer(req.body)) throw new AppError(415, 'unsupported_media_type', `send the shard as ${ARROW_FILE}`);
    const sha256 = parse(Sha256Header, req.headers['x-distillate-sha256']);
    const index = parse(ShardIndex, req.params['index']);
    const worker = String(req.headers['x-distillate-worker'] ?? 'unnamed').slice(0, 200);
    const outcome = await deps.jobs.acceptShard(req.params['id'] as string, index, req.body, sha256, worker);
    res.json({ outcome });
  });

  return r;
}
