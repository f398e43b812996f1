/**
 * Precompute across processes: a coordinator (`serve --queue`) and workers on a real Redis,
 * over the Fashion-MNIST test split with the shipped teacher. The cache must equal the
 * in-process job's byte for byte, and survive a killed worker, a killed coordinator, a Redis
 * restart, duplicate and bad uploads, and a teacher that always fails.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  DatasetReader,
  FASHION_MNIST_CLASSES,
  FASHION_MNIST_DEBIAN_DIR,
  FASHION_MNIST_FILES,
  LogitCacheReader,
  OnnxModelBuilder,
  TokenDatasetReader,
  encodeCacheShard,
  importIdxPair,
  verifyCache,
} from '@distillate/shared';
import { importText } from '@distillate/server';
import { readBrownCorpus, splitBrown } from '../scripts/lm/brown.js';
import { REPO } from './helpers/cli.js';
import { freePort, startRedis, type TestRedis } from './helpers/redis.js';
import { FASHION_MNIST_PACKAGE, REDIS_PACKAGE, skipUnless, titled } from './helpers/system.js';

const skip = skipUnless(REDIS_PACKAGE, FASHION_MNIST_PACKAGE);
import { waitFor } from './helpers/wait.js';

const TOKEN = 'test-token';
const TEACHER = 'fmnist-teacher';
const children: ChildProcess[] = [];
/** Each test gets its own Redis database: a queue nobody else's workers read. */
let db = 0;
let redis: TestRedis;
let root: string;

interface Proc {
  child: ChildProcess;
  log(): string;
  exited: Promise<number | null>;
}

function server(args: string[], env: NodeJS.ProcessEnv = {}): Proc {
  const child = spawn(process.execPath, ['--conditions=source', '--import', 'tsx', join(REPO, 'server/src/bin.ts'), ...args], {
    cwd: REPO,
    env: { ...process.env, LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, log: () => out, exited };
}

async function coordinator(cache: string, port: number, extra: string[] = [], queueDb = db): Promise<Proc & { url: string }> {
  const p = server([
    'serve',
    '--models',
    join(root, 'models'),
    '--data',
    join(root, 'data'),
    '--cache',
    cache,
    '--port',
    String(port),
    '--queue',
    `${redis.url}/${queueDb}`,
    '--token',
    TOKEN,
    '--shard-rows',
    '1024',
    ...extra,
  ]);
  await waitFor(
    'the coordinator to listen',
    async () => (/listening on/.test(p.log()) ? true : p.child.exitCode !== null ? Promise.reject(new Error(p.log())) : undefined),
    30_000,
  );
  return { ...p, url: `http://127.0.0.1:${port}` };
}

/** Each worker has its own cache directory, as on its own host (a shared one lets one worker find the teacher another fetched). */
let workerCount = 0;
function worker(url: string, extra: string[] = [], queueDb = db): Proc {
  return server([
    'worker',
    '--queue',
    `${redis.url}/${queueDb}`,
    '--server',
    url,
    '--token',
    TOKEN,
    '--threads',
    '1',
    '--lock-ms',
    '2000',
    '--cache',
    join(root, `worker-cache-${++workerCount}`),
    ...extra,
  ]);
}

async function api(url: string, path: string, init: RequestInit = {}): Promise<any> {
  const res = await fetch(`${url}${path}`, {
    ...init,
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json', ...(init.headers as Record<string, string> | undefined) },
  });
  return { status: res.status, body: await res.json().catch(() => undefined) };
}

async function submit(url: string, request: object): Promise<string> {
  const r = await api(url, '/v1/jobs', { method: 'POST', body: JSON.stringify({ type: 'precompute', teacher: TEACHER, dataset: 'test.arrow', ...request }) });
  expect(r.status).toBe(202);
  return r.body.id as string;
}

async function finished(url: string, id: string, ms = 90_000): Promise<any> {
  return waitFor(
    `job ${id} to finish`,
    async () => {
      const j = await api(url, `/v1/jobs/${id}`).catch(() => undefined);
      return j !== undefined && ['succeeded', 'failed', 'canceled'].includes(j.body?.state) ? j.body : undefined;
    },
    ms,
    100,
  );
}

async function shardBytes(dir: string): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  for (const f of (await readdir(dir)).filter((n) => n.endsWith('.arrow')).sort()) out.set(f, await readFile(join(dir, f)));
  return out;
}

/** Every id of the cache, in order. */
async function cacheIds(dir: string): Promise<number[]> {
  const ids: number[] = [];
  const reader = await LogitCacheReader.open(dir);
  for await (const b of reader.batches()) for (const id of b.ids) ids.push(Number(id));
  return ids;
}

let datasetIds: number[];

beforeAll(async () => {
  if (skip !== undefined) return;
  redis = await startRedis();
  root = await mkdtemp(join(tmpdir(), 'distillate-distributed-'));
  for (const d of ['models', 'data']) await mkdir(join(root, d));
  for (const f of [`${TEACHER}.onnx`, `${TEACHER}.json`]) await copyFile(join(REPO, 'models', f), join(root, 'models', f));
  const { images, labels } = FASHION_MNIST_FILES.test;
  await importIdxPair({
    images: join(FASHION_MNIST_DEBIAN_DIR, images),
    labels: join(FASHION_MNIST_DEBIAN_DIR, labels),
    out: join(root, 'data', 'test.arrow'),
    classes: FASHION_MNIST_CLASSES,
  });
  datasetIds = [];
  for await (const b of await DatasetReader.open(join(root, 'data', 'test.arrow'))) for (const id of b.ids) datasetIds.push(Number(id));
}, 120_000);

beforeEach(() => {
  db += 1;
});

afterEach(() => {
  // A failed test leaves its processes: stop them before the next test starts its own.
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
});

afterAll(async () => {
  for (const c of children) c.kill('SIGKILL');
  await redis?.stop();
});

describe.skipIf(skip !== undefined)(titled('distributed precompute', skip), () => {
  it('gives shards identical to the in-process job; duplicates are idempotent, tampered and bad uploads refused', async () => {
    const local = spawnSync(
      process.execPath,
      [
        '--conditions=source',
        '--import',
        'tsx',
        join(REPO, 'server/src/bin.ts'),
        'precompute',
        '--models',
        join(root, 'models'),
        '--data',
        join(root, 'data'),
        '--cache',
        join(root, 'cache-local'),
        '--teacher',
        TEACHER,
        '--dataset',
        'test.arrow',
        '--shard-rows',
        '1024',
        '--threads',
        '1',
      ],
      { cwd: REPO, encoding: 'utf8' },
    );
    expect(local.status, local.stderr).toBe(0);

    const c = await coordinator(join(root, 'cache-a'), await freePort());
    // One worker has the rows locally and a *different* model under the teacher's name (it must
    // fetch the right one by sha256); the other has neither and fetches rows and teacher.
    const otherModels = join(root, 'other-models');
    await mkdir(otherModels, { recursive: true });
    await copyFile(join(REPO, 'models', 'fmnist-teacher-ls0.onnx'), join(otherModels, `${TEACHER}.onnx`));
    const workers = [worker(c.url, ['--models', otherModels, '--data', join(root, 'data')]), worker(c.url)];
    const id = await submit(c.url, {});
    const job = await finished(c.url, id);
    expect(job.state, JSON.stringify(job)).toBe('succeeded');
    expect(job.distributed.tasks).toBe(10);

    const dist = await shardBytes(join(root, 'cache-a', job.cacheKey));
    const inproc = await shardBytes(join(root, 'cache-local', job.cacheKey));
    expect([...dist.keys()]).toEqual([...inproc.keys()]);
    for (const [f, bytes] of dist) expect(Buffer.compare(bytes, inproc.get(f)!), f).toBe(0);
    expect((await verifyCache(join(root, 'cache-a', job.cacheKey))).ok).toBe(true);
    // Both workers took part, each reported itself.
    const listed = await api(c.url, '/v1/workers');
    expect(listed.body.workers.length).toBe(2);
    expect(listed.body.workers.every((w: any) => w.executionProvider === 'cpu')).toBe(true);
    expect(workers.every((w) => /shard uploaded/.test(w.log()))).toBe(true);

    // A shard delivered again, same bytes: accepted and ignored. Different bytes: 409.
    const put = (index: number, body: Uint8Array, sha256: string, token = TOKEN) =>
      fetch(`${c.url}/v1/jobs/${id}/shards/${index}`, {
        method: 'PUT',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/vnd.apache.arrow.file', 'x-distillate-sha256': sha256 },
        body,
      });
    const first = dist.get('part-00000.arrow')!;
    const sha = (b: Uint8Array) => import('node:crypto').then((m) => m.createHash('sha256').update(b).digest('hex'));
    let res = await put(0, first, await sha(first));
    expect(await res.json()).toEqual({ outcome: 'duplicate' });
    const tampered = Buffer.from(first);
    tampered[tampered.length - 200]! ^= 0xff;
    res = await put(0, tampered, await sha(tampered));
    expect(res.status).toBe(409);
    expect(((await res.json()) as any).error.code).toBe('shard_conflict');
    res = await put(0, first, await sha(first), 'wrong-token');
    expect(res.status).toBe(401);
    expect(await shardBytes(join(root, 'cache-a', job.cacheKey))).toEqual(dist);

    // The CLI submits a job to the coordinator and follows it to the end.
    const cli = server(['precompute', '--server', c.url, '--token', TOKEN, '--teacher', TEACHER, '--dataset', 'test.arrow', '--temperature', '5']);
    expect(await cli.exited, cli.log()).toBe(0);
    expect(cli.log()).toMatch(/wrote cache [0-9a-f]{64} \(10000 rows\) on http/);
    expect(workers[0]!.log()).toMatch(/fetching the teacher from the coordinator/);

    // Metrics carry the queue and the workers.
    const metrics = await (await fetch(`${c.url}/metrics`)).text();
    expect(metrics).toMatch(/distillate_queue_tasks\{state="waiting"\} 0/);
    expect(metrics).toMatch(/distillate_worker_rows_total\{worker="[^"]+"\} \d+/);
    expect(metrics).toMatch(/distillate_workers_live 2/);
    for (const w of workers) w.child.kill('SIGTERM');
    await Promise.all(workers.map((w) => w.exited));
    c.child.kill('SIGTERM');
    await c.exited;
  });

  it('builds a view cache across workers identical to the in-process one (same key, same shard bytes)', async () => {
    const views = { count: 2, seed: 3, augment: { shift: 2, flip: true } };
    const local = spawnSync(
      process.execPath,
      [
        '--conditions=source',
        '--import',
        'tsx',
        join(REPO, 'server/src/bin.ts'),
        'precompute',
        '--models',
        join(root, 'models'),
        '--data',
        join(root, 'data'),
        '--cache',
        join(root, 'cache-views-local'),
        '--teacher',
        TEACHER,
        '--dataset',
        'test.arrow',
        '--shard-rows',
        '1024',
        '--threads',
        '1',
        '--views',
        '2',
        '--view-seed',
        '3',
        '--shift',
        '2',
        '--flip',
      ],
      { cwd: REPO, encoding: 'utf8' },
    );
    expect(local.status, local.stderr).toBe(0);
    const c = await coordinator(join(root, 'cache-views'), await freePort());
    // One worker reads the images locally, the other fetches them: both must draw the same views.
    const workers = [worker(c.url, ['--models', join(root, 'models'), '--data', join(root, 'data')]), worker(c.url)];
    const id = await submit(c.url, { views });
    const job = await finished(c.url, id);
    expect(job.state, JSON.stringify(job)).toBe('succeeded');
    // 10,000 images × 2 views in shards of 1,024 rows (512 images).
    expect(job.distributed.tasks).toBe(20);
    expect(job.progress).toEqual({ done: 10_000, total: 10_000 });
    const dir = join(root, 'cache-views', job.cacheKey);
    const dist = await shardBytes(dir);
    const inproc = await shardBytes(join(root, 'cache-views-local', job.cacheKey));
    expect([...dist.keys()]).toEqual([...inproc.keys()]);
    for (const [f, bytes] of dist) expect(Buffer.compare(bytes, inproc.get(f)!), f).toBe(0);
    expect((await verifyCache(dir)).ok).toBe(true);
    const manifest = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8'));
    expect(manifest.views).toEqual(views);
    expect(manifest.dataset.rows).toBe(10_000);
    // Every image's two views, in dataset order.
    expect(await cacheIds(dir)).toEqual(datasetIds.flatMap((i) => [i, i]));
    for (const w of workers) w.child.kill('SIGTERM');
    await Promise.all(workers.map((w) => w.exited));
    c.child.kill('SIGTERM');
    await c.exited;
  });

  it('stores teacher features across workers byte-identical to the in-process job (views included)', async () => {
    const feature = ['--feature', '/Relu_output_0,pool=avg,grid=2x2', '--feature', '/MaxPool_output_0,pool=max,dtype=float32'];
    const views = ['--views', '2', '--view-seed', '5', '--shift', '2', '--flip'];
    for (const f of ['onnx', 'json']) await copyFile(join(REPO, `tests/fixtures/torch-cnn.${f}`), join(root, 'models', `torch-cnn.${f}`));
    const local = spawnSync(
      process.execPath,
      [
        '--conditions=source',
        '--import',
        'tsx',
        join(REPO, 'server/src/bin.ts'),
        'precompute',
        '--models',
        join(root, 'models'),
        '--data',
        join(root, 'data'),
        '--cache',
        join(root, 'cache-features-local'),
        '--teacher',
        'torch-cnn',
        '--dataset',
        'test.arrow',
        '--shard-rows',
        '1024',
        '--threads',
        '1',
        ...feature,
        ...views,
      ],
      { cwd: REPO, encoding: 'utf8' },
    );
    expect(local.status, local.stderr).toBe(0);
    const c = await coordinator(join(root, 'cache-features'), await freePort());
    const workers = [worker(c.url, ['--models', join(root, 'models'), '--data', join(root, 'data')]), worker(c.url)];
    const r = await api(c.url, '/v1/jobs', {
      method: 'POST',
      body: JSON.stringify({
        type: 'precompute',
        teacher: 'torch-cnn',
        dataset: 'test.arrow',
        views: { count: 2, seed: 5, augment: { shift: 2, flip: true } },
        features: [
          { tensor: '/Relu_output_0', pool: 'avg', grid: [2, 2] },
          { tensor: '/MaxPool_output_0', pool: 'max', dtype: 'float32' },
        ],
      }),
    });
    expect(r.status, JSON.stringify(r.body)).toBe(202);
    const job = await finished(c.url, r.body.id);
    expect(job.state, JSON.stringify(job)).toBe('succeeded');
    const dir = join(root, 'cache-features', job.cacheKey);
    const dist = await shardBytes(dir);
    const inproc = await shardBytes(join(root, 'cache-features-local', job.cacheKey));
    expect(dist.size).toBeGreaterThan(1);
    expect([...dist.keys()]).toEqual([...inproc.keys()]);
    for (const [f, bytes] of dist) expect(Buffer.compare(bytes, inproc.get(f)!), f).toBe(0);
    const manifest = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8'));
    expect(manifest.features.map((f: { shape: number[] }) => f.shape)).toEqual([[3, 2, 2], [3]]);
    expect((await verifyCache(dir)).ok).toBe(true);
    for (const w of workers) w.child.kill('SIGTERM');
    await Promise.all(workers.map((w) => w.exited));
    c.child.kill('SIGTERM');
    await c.exited;
  });

  it('builds a sampled token cache across workers identical to the in-process one (same key, same shard bytes, same token count)', async () => {
    // A causal-LM teacher over a token dataset: a few Brown test documents, cut into 64-token blocks.
    for (const f of ['brown-lm.onnx', 'brown-lm.json', 'brown-lm.tokenizer.json']) await copyFile(join(REPO, 'models', f), join(root, 'models', f));
    const docs = await readBrownCorpus();
    const part = splitBrown(docs);
    const test = docs.filter((d) => part.get(d.name) === 'test').slice(0, 3);
    await writeFile(join(root, 'brown.jsonl'), test.map((d) => JSON.stringify({ doc: d.name, text: d.text.slice(0, 3000) })).join('\n') + '\n');
    const { parts } = await importText({
      source: join(root, 'brown.jsonl'),
      out: join(root, 'data', 'brown.arrow'),
      tokenizer: join(REPO, 'models', 'brown-lm.tokenizer.json'),
      block: 64,
      key: 'doc',
    });
    const storage = ['--storage', 'sampled', '--samples', '8', '--sample-seed', '5'];
    const local = spawnSync(
      process.execPath,
      [
        '--conditions=source',
        '--import',
        'tsx',
        join(REPO, 'server/src/bin.ts'),
        'precompute',
        '--models',
        join(root, 'models'),
        '--data',
        join(root, 'data'),
        '--cache',
        join(root, 'cache-tokens-local'),
        '--teacher',
        'brown-lm',
        '--dataset',
        'brown.arrow',
        '--shard-rows',
        '8',
        '--threads',
        '1',
        ...storage,
      ],
      { cwd: REPO, encoding: 'utf8' },
    );
    expect(local.status, local.stderr).toBe(0);
    const c = await coordinator(join(root, 'cache-tokens'), await freePort(), ['--shard-rows', '8']);
    // One worker reads the blocks locally, the other fetches them over HTTP.
    const workers = [worker(c.url, ['--models', join(root, 'models'), '--data', join(root, 'data')]), worker(c.url)];
    // Both waiting before the job exists, so that both take tasks.
    await waitFor('both workers to report', async () => ((await api(c.url, '/v1/workers')).body.workers.length === 2 ? true : undefined), 30_000);
    const r = await api(c.url, '/v1/jobs', {
      method: 'POST',
      body: JSON.stringify({ type: 'precompute', teacher: 'brown-lm', dataset: 'brown.arrow', storage: { mode: 'sampled', n: 8, seed: 5 } }),
    });
    expect(r.status, JSON.stringify(r.body)).toBe(202);
    const job = await finished(c.url, r.body.id);
    expect(job.state, JSON.stringify(job)).toBe('succeeded');
    expect(job.distributed.tasks).toBe(Math.ceil(parts[0]!.rows / 8));
    expect(job.distributed.tasks).toBeGreaterThan(1);
    const dir = join(root, 'cache-tokens', job.cacheKey);
    const dist = await shardBytes(dir);
    const inproc = await shardBytes(join(root, 'cache-tokens-local', job.cacheKey));
    expect([...dist.keys()]).toEqual([...inproc.keys()]);
    for (const [f, bytes] of dist) expect(Buffer.compare(bytes, inproc.get(f)!), f).toBe(0);
    expect((await verifyCache(dir)).ok).toBe(true);
    const manifest = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8'));
    const localManifest = JSON.parse(await readFile(join(root, 'cache-tokens-local', job.cacheKey, 'manifest.json'), 'utf8'));
    expect(manifest.tokens).toEqual(localManifest.tokens);
    // Every non-padding position of every block (a token in two overlapping blocks counts twice).
    let positions = 0;
    for await (const b of await TokenDatasetReader.open(join(root, 'data', 'brown.arrow')).then((d) => d.batches()))
      positions += b.tokens.filter((t) => t !== -1).length;
    expect(manifest.tokens.count).toBe(positions);
    // Both workers took tasks: one read its copy, the other fetched the blocks.
    expect(
      workers.every((w) => /shard uploaded/.test(w.log())),
      workers.map((w) => w.log()).join('\n'),
    ).toBe(true);
    for (const w of workers) w.child.kill('SIGTERM');
    await Promise.all(workers.map((w) => w.exited));
    c.child.kill('SIGTERM');
    await c.exited;
  });

  it('refuses a shard with the wrong ids or row count (422) and writes nothing', async () => {
    // No worker listens on this test's queue: the job waits, and the test uploads by hand.
    const c = await coordinator(join(root, 'cache-b'), await freePort());
    const id = await submit(c.url, { temperature: 2 });
    const running = await waitFor('the job to run', async () => {
      const j = await api(c.url, `/v1/jobs/${id}`);
      return j.body.state === 'running' && j.body.distributed !== undefined ? j.body : undefined;
    });
    const encoding = { storage: { mode: 'dense' as const, dtype: 'float32' as const }, classes: 10, temperature: 2, labelStatistics: false };
    const put = (index: number, s: { bytes: Uint8Array; sha256: string }) =>
      fetch(`${c.url}/v1/jobs/${id}/shards/${index}`, {
        method: 'PUT',
        headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/vnd.apache.arrow.file', 'x-distillate-sha256': s.sha256 },
        body: s.bytes,
      });
    const shifted = encodeCacheShard(encoding, 1024, Int32Array.from(datasetIds.slice(1, 1025)), new Float32Array(1024 * 10));
    let res = await put(0, shifted);
    expect(res.status).toBe(422);
    expect(((await res.json()) as any).error.message).toMatch(/id/);
    const short = encodeCacheShard(encoding, 1024, Int32Array.from(datasetIds.slice(0, 1000)), new Float32Array(1000 * 10));
    res = await put(0, short);
    expect(res.status).toBe(422);
    expect(((await res.json()) as any).error.message).toMatch(/rows/);
    expect((await readdir(join(root, 'cache-b', running.cacheKey))).filter((f) => f.endsWith('.arrow'))).toEqual([]);
    const canceled = await api(c.url, `/v1/jobs/${id}`, { method: 'DELETE' });
    expect(canceled.body.state).toBe('canceled');
    c.child.kill('SIGTERM');
    await c.exited;
  });

  it('finishes when a worker is killed mid-task: the task is retried elsewhere, every id exactly once', async () => {
    const c = await coordinator(join(root, 'cache-c'), await freePort(), ['--shard-rows', '512']);
    const workers = [worker(c.url), worker(c.url)];
    await waitFor('two workers', async () => ((await api(c.url, '/v1/workers')).body.workers.length === 2 ? true : undefined));
    const id = await submit(c.url, { batchSize: 8 });
    const victim = await waitFor(
      'a worker with a task in hand',
      async () => {
        const listed = (await api(c.url, '/v1/workers')).body.workers as Array<{ pid: number; active: string[] }>;
        return listed.find((w) => w.active.length > 0);
      },
      60_000,
      10,
    );
    const proc = workers.find((w) => w.child.pid === victim.pid)!;
    proc.child.kill('SIGKILL');
    const job = await finished(c.url, id);
    expect(job.state, JSON.stringify(job)).toBe('succeeded');
    const dir = join(root, 'cache-c', job.cacheKey);
    expect((await verifyCache(dir)).ok).toBe(true);
    expect(await cacheIds(dir)).toEqual(datasetIds);
    const survivor = workers.find((w) => w !== proc)!;
    expect(c.log() + survivor.log()).toMatch(/task stalled|running a task again/);
    survivor.child.kill('SIGTERM');
    c.child.kill('SIGTERM');
    await Promise.all([survivor.exited, c.exited]);
  });

  it('resumes after the coordinator is killed, without recomputing durable shards', async () => {
    const port = await freePort();
    const cache = join(root, 'cache-d');
    let c = await coordinator(cache, port, ['--shard-rows', '512']);
    const w = worker(c.url);
    const id = await submit(c.url, { batchSize: 8, temperature: 3 });
    const key = await waitFor('a cache key', async () => (await api(c.url, `/v1/jobs/${id}`)).body.cacheKey as string | undefined);
    const progress = join(cache, key, 'progress.json');
    const durable = await waitFor('three durable shards', async () => {
      const p = JSON.parse(await readFile(progress, 'utf8').catch(() => '{"shards":[]}')) as { shards: Array<{ file: string }> };
      return p.shards.length >= 3 ? p.shards.map((s) => s.file) : undefined;
    });
    c.child.kill('SIGKILL');
    await c.exited;
    const before = new Map<string, number>();
    for (const f of durable) before.set(f, (await stat(join(cache, key, f))).ino);

    c = await coordinator(cache, port, ['--shard-rows', '512']);
    const job = await finished(c.url, id);
    expect(job.state, JSON.stringify(job)).toBe('succeeded');
    expect(c.log()).toMatch(/resuming from durable shards/);
    for (const [f, ino] of before) expect((await stat(join(cache, key, f))).ino, f).toBe(ino);
    expect((await verifyCache(join(cache, key))).ok).toBe(true);
    expect(await cacheIds(join(cache, key))).toEqual(datasetIds);
    w.child.kill('SIGTERM');
    c.child.kill('SIGTERM');
    await Promise.all([w.exited, c.exited]);
  });

  it('waits while Redis is away and goes on when it returns', async () => {
    const c = await coordinator(join(root, 'cache-e'), await freePort(), ['--shard-rows', '512']);
    const w = worker(c.url);
    const id = await submit(c.url, { batchSize: 8, temperature: 4 });
    await waitFor('some progress', async () => ((await api(c.url, `/v1/jobs/${id}`)).body.progress.done > 0 ? true : undefined));
    await redis.stop();
    const waiting = await waitFor(
      'the job to report the outage',
      async () => {
        const j = (await api(c.url, `/v1/jobs/${id}`)).body;
        return typeof j.notice === 'string' ? j : undefined;
      },
      30_000,
      100,
    );
    expect(waiting.state).toBe('running');
    expect(waiting.notice).toMatch(/waiting for the queue at redis:\/\/127\.0\.0\.1/);
    await redis.start();
    const job = await finished(c.url, id);
    expect(job.state, JSON.stringify(job)).toBe('succeeded');
    expect(job.notice).toBeUndefined();
    expect((await verifyCache(join(root, 'cache-e', job.cacheKey))).ok).toBe(true);
    expect(await cacheIds(join(root, 'cache-e', job.cacheKey))).toEqual(datasetIds);
    w.child.kill('SIGTERM');
    c.child.kill('SIGTERM');
    await Promise.all([w.exited, c.exited]);
  });

  it("fails the job with the worker's message when a task keeps failing (a teacher that returns NaN)", async () => {
    // log(x − 0.5) is NaN for every dark pixel: a broken teacher, refused by every attempt.
    const b = new OnnxModelBuilder('nan-teacher');
    const x = b.input('x', ['N', 1, 28, 28]);
    const flat = b.node('Flatten', [x], { axis: 1 });
    const shifted = b.node('Sub', [flat, b.weight('half', Float32Array.of(0.5), [1])]);
    const logged = b.node('Log', [shifted]);
    b.node('MatMul', [logged, b.weight('w', new Float32Array(784 * 10).fill(0.01), [784, 10])], {}, 'logits');
    b.output('logits', ['N', 10]);
    await writeFile(join(root, 'models', 'nan.onnx'), b.toBytes());
    const c = await coordinator(join(root, 'cache-f'), await freePort());
    const w = worker(c.url);
    const id = await submit(c.url, { teacher: 'nan' });
    const job = await finished(c.url, id);
    expect(job.state).toBe('failed');
    expect(job.error.code).toBe('task_failed');
    expect(job.error.message).toMatch(/after 3 attempt\(s\): row \d+: teacher logit NaN is not finite/);
    w.child.kill('SIGTERM');
    c.child.kill('SIGTERM');
    await Promise.all([w.exited, c.exited]);
  });

  it('refuses to start when Redis cannot be reached: one line, non-zero exit, no password shown', async () => {
    const port = await freePort();
    for (const args of [
      [
        'serve',
        '--models',
        join(root, 'models'),
        '--data',
        join(root, 'data'),
        '--cache',
        join(root, 'cache-g'),
        '--port',
        '0',
        '--queue',
        `redis://:hunter2@127.0.0.1:${port}`,
      ],
      ['worker', '--queue', `redis://:hunter2@127.0.0.1:${port}`, '--server', 'http://127.0.0.1:1'],
    ]) {
      const r = spawnSync(process.execPath, ['--conditions=source', '--import', 'tsx', join(REPO, 'server/src/bin.ts'), ...args], {
        cwd: REPO,
        encoding: 'utf8',
      });
      expect(r.status).not.toBe(0);
      const lines = r.stderr.trim().split('\n');
      expect(lines, r.stderr).toHaveLength(1);
      expect(lines[0]).toMatch(new RegExp(`queue_unreachable: cannot reach Redis at redis://127\\.0\\.0\\.1:${port}/0: .*ECONNREFUSED`));
      expect(r.stderr + r.stdout).not.toContain('hunter2');
    }
  });
});
