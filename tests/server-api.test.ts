/**
 * The teacher server over real HTTP with real onnxruntime sessions and real Arrow caches.
 */
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Field, FixedSizeList, Float32, RecordBatch, Schema, Struct, Table, makeData, tableFromIPC, tableToIPC } from 'apache-arrow';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DatasetReader, LogitCacheReader, writeSyntheticDataset, verifyCache } from '@distillate/shared';
import { OrtSession } from '@distillate/shared/onnx';
import { resolveConfig, startServer, type RunningServer } from '@distillate/server';
import { convTeacher, linearTeacher, writeTeachers } from './helpers/teachers.js';

let root: string;
let server: RunningServer;
let direct: OrtSession;

const json = (body: unknown, headers: Record<string, string> = {}) => ({
  method: 'POST',
  headers: { 'content-type': 'application/json', ...headers },
  body: JSON.stringify(body),
});

async function call(path: string, init?: RequestInit) {
  const res = await fetch(`${server.url}${path}`, init);
  const text = await res.text();
  let body: any;
  try {
    body = JSON.parse(text);
  } catch {
    body = text;
  }
  return { status: res.status, body, headers: res.headers };
}

/** Direct ORT reference: conv teacher with its sidecar normalisation ((x − 0.5) / 0.25). */
async function reference(x: Float32Array, rows: number): Promise<Float32Array> {
  const normalised = x.map((v) => (v - 0.5) / 0.25);
  return (await direct.run('image', normalised, [rows, 1, 8, 8], 'logits')).data;
}

async function waitJob(id: string): Promise<any> {
  for (;;) {
    const { body } = await call(`/v1/jobs/${id}`);
    if (['succeeded', 'failed', 'canceled'].includes(body.state)) return body;
    await new Promise((r) => setTimeout(r, 50));
  }
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'distillate-server-'));
  for (const d of ['models', 'data', 'cache']) await mkdir(join(root, d));
  await writeTeachers(join(root, 'models'));
  await writeSyntheticDataset(join(root, 'data', 'train.arrow'), { rows: 3000, inputShape: [8, 8, 1], classes: 10 });
  await writeSyntheticDataset(join(root, 'data', 'pool.arrow'), { rows: 1000, inputShape: [8, 8, 1], classes: 10, seed: 5, unlabelledEvery: 1 });
  await writeSyntheticDataset(join(root, 'data', 'big-images.arrow'), { rows: 10, inputShape: [28, 28, 1], classes: 10 });
  server = await startServer(
    resolveConfig(
      { models: join(root, 'models'), data: join(root, 'data'), cache: join(root, 'cache'), port: 0, logLevel: 'silent', maxWaitMs: 20, maxQueueRows: 512 },
      {},
    ),
  );
  direct = await OrtSession.create(convTeacher(), { provider: 'cpu' });
});

afterAll(async () => {
  await server?.close();
  await direct?.release();
});

describe('teachers', () => {
  it('lists each teacher with hash, io, classes and the provider that won; a broken model reports its error', async () => {
    const { status, body } = await call('/v1/teachers');
    expect(status).toBe(200);
    const conv = body.teachers.find((t: any) => t.name === 'conv');
    expect(conv.sha256).toBe(createHash('sha256').update(convTeacher()).digest('hex'));
    expect(conv.inputs).toEqual([{ name: 'image', shape: ['N', 1, 8, 8], type: 'float32' }]);
    expect(conv.outputs[0].name).toBe('logits');
    expect(conv.classes).toHaveLength(10);
    expect(conv.executionProvider).toBe('cpu');
    const broken = body.teachers.find((t: any) => t.name === 'broken');
    expect(broken.error.code).toBe('bad_model');
  });

  it("lists a teacher's per-sample intermediate tensors with their shapes; an unknown teacher is a 404", async () => {
    const { status, body } = await call('/v1/teachers/conv/tensors');
    expect(status).toBe(200);
    expect(body.sampleShape).toEqual([1, 8, 8]);
    // In node order, shapes per sample: Conv → Relu → Flatten → Gemm (the logits, an output of the model).
    expect(body.tensors.map((t: any) => [t.op, t.shape, t.output])).toEqual([
      ['Conv', [4, 8, 8], false],
      ['Relu', [4, 8, 8], false],
      ['Flatten', [256], false],
      ['Gemm', [10], true],
    ]);
    expect(body.tensors.every((t: any) => t.dtype === 'float32' && t.elements === t.shape.reduce((a: number, b: number) => a * b, 1))).toBe(true);
    const missing = await call('/v1/teachers/nope/tensors');
    expect(missing.status).toBe(404);
    expect(missing.body.error.code).toBe('unknown_teacher');
    const broken = await call('/v1/teachers/broken/tensors');
    expect([broken.status, broken.body.error.code]).toEqual([422, 'bad_model']);
  });

  it('rescan registers a model copied in after boot, and a bad sidecar is a 422', async () => {
    const models = join(root, 'models');
    expect((await call('/v1/teachers/late/logits', json({ inputs: [0], shape: [1, 1] }))).status).toBe(404);
    await writeFile(join(models, 'late.onnx'), linearTeacher(4, 3, 9));
    const { status, body } = await call('/v1/teachers/rescan', { method: 'POST' });
    expect(status).toBe(200);
    expect(body.teachers).toContain('late');
    const r = await call('/v1/teachers/late/logits', json({ inputs: [1, 2, 3, 4], shape: [1, 4] }));
    expect(r.status).toBe(200);
    expect(r.body.logits[0]).toHaveLength(3);
    await writeFile(join(models, 'later.onnx'), linearTeacher(4, 3, 9));
    await writeFile(join(models, 'later.json'), JSON.stringify({ layout: 'sideways' }));
    const bad = await call('/v1/teachers/rescan', { method: 'POST' });
    expect(bad.status).toBe(422);
    expect(bad.body.error.code).toBe('bad_sidecar');
    expect(bad.body.error.message).toContain('later.json');
    await rm(join(models, 'later.onnx'));
    await rm(join(models, 'later.json'));
  });
});

describe('online logits', () => {
  const rows = 3;
  const x = Float32Array.from({ length: rows * 64 }, (_, i) => ((i * 37) % 101) / 100);

  it('equal a direct session.run within 1e-6, and scale with the temperature', async () => {
    const want = await reference(x, rows);
    const { status, body } = await call('/v1/teachers/conv/logits', json({ inputs: [...x], shape: [rows, 1, 8, 8] }));
    expect(status).toBe(200);
    expect(body.executionProvider).toBe('cpu');
    expect(body.temperature).toBe(1);
    body.logits.flat().forEach((v: number, i: number) => expect(Math.abs(v - want[i]!)).toBeLessThan(1e-6));
    const hot = await call('/v1/teachers/conv/logits', json({ inputs: [...x], shape: [rows, 1, 8, 8], temperature: 4 }));
    hot.body.logits.flat().forEach((v: number, i: number) => expect(Math.abs(v - want[i]! / 4)).toBeLessThan(1e-6));
  });

  it('accepts and returns Arrow IPC streams', async () => {
    const listType = new FixedSizeList(64, new Field('item', new Float32(), false));
    const schema = new Schema([new Field('input', listType, false)]);
    const list = makeData({ type: listType, length: rows, child: makeData({ type: new Float32(), length: x.length, data: x }) });
    const body = tableToIPC(new Table([new RecordBatch(schema, makeData({ type: new Struct(schema.fields), length: rows, children: [list] }))]), 'stream');
    const res = await fetch(`${server.url}/v1/teachers/conv/logits?temperature=2`, {
      method: 'POST',
      headers: { 'content-type': 'application/vnd.apache.arrow.stream' },
      body,
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/arrow\.stream/);
    const table = tableFromIPC(new Uint8Array(await res.arrayBuffer()));
    expect(table.schema.metadata.get('distillate.temperature')).toBe('2');
    const got = table.getChild('logits')!.data[0]!.children[0]!.values as Float32Array;
    const want = await reference(x, rows);
    got.forEach((v, i) => expect(Math.abs(v - want[i]! / 2)).toBeLessThan(1e-6));
  });

  it('batches concurrent requests and returns each caller exactly its own rows', async () => {
    const before = await call('/metrics');
    const batchesBefore = Number(/distillate_batch_rows_count (\d+)/.exec(before.body)?.[1] ?? 0);
    const n = 40;
    const inputs = Array.from({ length: n }, (_, k) => Float32Array.from({ length: 64 }, (_, i) => ((k * 13 + i * 7) % 97) / 97));
    const responses = await Promise.all(inputs.map((inp) => call('/v1/teachers/conv/logits', json({ inputs: [...inp], shape: [1, 1, 8, 8] }))));
    for (let k = 0; k < n; k++) {
      expect(responses[k]!.status).toBe(200);
      const want = await reference(inputs[k]!, 1);
      responses[k]!.body.logits[0].forEach((v: number, i: number) => expect(Math.abs(v - want[i]!)).toBeLessThan(1e-6));
    }
    const after = await call('/metrics');
    const batchesAfter = Number(/distillate_batch_rows_count (\d+)/.exec(after.body)?.[1]);
    expect(batchesAfter - batchesBefore).toBeLessThan(n); // some requests shared a batch
  });

  it('answers 429 with Retry-After when the queue is full', async () => {
    const big = Array.from({ length: 256 * 64 }, () => 0.5);
    const results = await Promise.all(Array.from({ length: 8 }, () => call('/v1/teachers/conv/logits', json({ inputs: big, shape: [256, 1, 8, 8] }))));
    const statuses = results.map((r) => r.status);
    expect(statuses).toContain(200);
    expect(statuses).toContain(429);
    const rejected = results.find((r) => r.status === 429)!;
    expect(rejected.headers.get('retry-after')).toBe('1');
    expect(rejected.body.error.code).toBe('queue_full');
  });
});

describe('bad input gets a 4xx naming the problem, and the server stays up', () => {
  const cases: Array<[string, string, RequestInit, number, string]> = [
    ['wrong shape', '/v1/teachers/conv/logits', json({ inputs: [1, 2, 3], shape: [1, 3] }), 400, 'bad_shape'],
    ['too few values', '/v1/teachers/conv/logits', json({ inputs: [1, 2, 3], shape: [1, 1, 8, 8] }), 400, 'bad_shape'],
    ['wrong dtype', '/v1/teachers/conv/logits', json({ inputs: ['a'], shape: [1, 1, 8, 8] }), 400, 'invalid_request'],
    // JSON has no NaN; 1e999 parses as Infinity, which the schema refuses (message names inputs.63).
    [
      'Infinity in inputs (1e999)',
      '/v1/teachers/conv/logits',
      { method: 'POST', headers: { 'content-type': 'application/json' }, body: `{"inputs":[${Array(63).fill(0).join(',')},1e999],"shape":[1,1,8,8]}` },
      400,
      'invalid_request',
    ],
    ['unknown teacher', '/v1/teachers/nope/logits', json({ inputs: [1], shape: [1, 1] }), 404, 'unknown_teacher'],
    ['malformed ONNX file', '/v1/teachers/broken/logits', json({ inputs: [1], shape: [1, 1] }), 422, 'bad_model'],
    ['bad JSON', '/v1/teachers/conv/logits', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"inputs": [1,' }, 400, 'bad_json'],
    [
      'dataset that does not match the teacher',
      '/v1/jobs',
      json({ type: 'precompute', teacher: 'conv', dataset: 'big-images.arrow' }),
      400,
      'dataset_mismatch',
    ],
    ['path traversal', '/v1/jobs', json({ type: 'precompute', teacher: 'conv', dataset: '../../etc/passwd' }), 400, 'path_outside_root'],
    ['absolute path', '/v1/jobs', json({ type: 'precompute', teacher: 'conv', dataset: '/etc/passwd' }), 400, 'path_outside_root'],
    ['missing dataset', '/v1/jobs', json({ type: 'precompute', teacher: 'conv', dataset: 'nope.arrow' }), 400, 'not_found'],
    ['unknown job field', '/v1/jobs', json({ type: 'precompute', teacher: 'conv', dataset: 'train.arrow', extra: 1 }), 400, 'invalid_request'],
    ['unknown job', '/v1/jobs/00000000-0000-0000-0000-000000000000', {}, 404, 'unknown_job'],
    ['bad cache key', '/v1/caches/xyz', {}, 400, 'invalid_request'],
    ['unknown route', '/v2/nothing', {}, 404, 'not_found'],
  ];
  for (const [what, path, init, status, code] of cases) {
    it(what, async () => {
      const r = await call(path, init);
      expect(r.status).toBe(status);
      expect(r.body.error.code).toBe(code);
      expect(typeof r.body.error.message).toBe('string');
      if (what.startsWith('Infinity')) expect(r.body.error.message).toMatch(/inputs\.63: .*Infinity/);
      expect((await call('/healthz')).status).toBe(200);
    });
  }

  it('NaN inside an Arrow request', async () => {
    const listType = new FixedSizeList(64, new Field('item', new Float32(), false));
    const schema = new Schema([new Field('input', listType, false)]);
    const data = new Float32Array(64).fill(0.1);
    data[5] = NaN;
    const list = makeData({ type: listType, length: 1, child: makeData({ type: new Float32(), length: 64, data }) });
    const body = tableToIPC(new Table([new RecordBatch(schema, makeData({ type: new Struct(schema.fields), length: 1, children: [list] }))]), 'stream');
    const r = await call('/v1/teachers/conv/logits', { method: 'POST', headers: { 'content-type': 'application/vnd.apache.arrow.stream' }, body });
    expect(r.status).toBe(400);
    expect(r.body.error).toMatchObject({ code: 'non_finite_input', message: expect.stringMatching(/input value 5 is NaN/) });
  });

  it('a body over the size limit', async () => {
    const small = await startServer(
      resolveConfig(
        { models: join(root, 'models'), data: join(root, 'data'), cache: join(root, 'cache2'), port: 0, logLevel: 'silent', maxBodyBytes: 1000 },
        {},
      ),
    );
    try {
      const res = await fetch(`${small.url}/v1/teachers/conv/logits`, json({ inputs: Array(500).fill(0.5), shape: [1, 500] }));
      expect(res.status).toBe(413);
      expect(((await res.json()) as any).error.code).toBe('body_too_large');
    } finally {
      await small.close();
    }
  });
});

describe('jobs and caches', () => {
  it('precompute → 202, progress over SSE, a cache that verifies and round-trips; the same job again is a cache hit', async () => {
    const created = await call(
      '/v1/jobs',
      json({ type: 'precompute', teacher: 'conv', dataset: 'train.arrow', temperature: 2, storage: { mode: 'dense' }, batchSize: 100 }),
    );
    expect(created.status).toBe(202);
    expect(created.headers.get('location')).toBe(`/v1/jobs/${created.body.id}`);
    const events = await fetch(`${server.url}/v1/jobs/${created.body.id}/events`);
    expect(events.headers.get('content-type')).toMatch(/text\/event-stream/);
    const stream = await events.text(); // ends when the job reaches a final state
    expect(stream).toMatch(/event: state\ndata: .*"state":"succeeded"/);
    const job = await waitJob(created.body.id);
    expect(job.state).toBe('succeeded');
    expect(job.progress).toEqual({ done: 3000, total: 3000 });
    const dir = join(root, 'cache', job.cacheKey);
    expect(await verifyCache(dir)).toMatchObject({ ok: true, rows: 3000 });

    // Round trip: cached values are the teacher's logits / T.
    const dataset = await DatasetReader.open(join(root, 'data', 'train.arrow'));
    const cache = await LogitCacheReader.open(dir);
    const first = await dataset.readRows(0, 64);
    const x = Float32Array.from(first.inputs.subarray(0, 64 * 5), (v) => v / 255);
    const want = await reference(x, 5);
    const cacheBatches = cache.batches();
    const got = (await cacheBatches.next()).value!;
    await cacheBatches.return(undefined); // the first batch only: let the reader go
    for (let i = 0; i < 50; i++) expect(Math.abs(got.logits[i]! - want[i]! / 2)).toBeLessThan(1e-5);

    const again = await call('/v1/jobs', json({ type: 'precompute', teacher: 'conv', dataset: 'train.arrow', temperature: 2, storage: { mode: 'dense' } }));
    const hit = await waitJob(again.body.id);
    expect(hit).toMatchObject({ state: 'succeeded', cacheHit: true, cacheKey: job.cacheKey });

    const list = await call('/v1/caches');
    expect(list.body.caches.map((c: any) => c.key)).toContain(job.cacheKey);
    const manifest = await call(`/v1/caches/${job.cacheKey}`);
    expect(manifest.body.complete).toBe(true);
    const shard = manifest.body.shards[0];
    const download = await fetch(`${server.url}/v1/caches/${job.cacheKey}/${shard.file}`);
    const bytes = new Uint8Array(await download.arrayBuffer());
    expect(createHash('sha256').update(bytes).digest('hex')).toBe(shard.sha256);
    expect((await call(`/v1/caches/${job.cacheKey}/..%2Fmanifest.json`)).status).toBe(404);
  });

  it('label job: pseudo-label columns, and the selected subset written as a dataset', async () => {
    const created = await call(
      '/v1/jobs',
      json({
        type: 'label',
        teacher: 'conv',
        dataset: 'pool.arrow',
        storage: { mode: 'topk', k: 3 },
        label: { threshold: 0.3, perClassMax: 20, output: 'selected/pool-labelled.arrow' },
      }),
    );
    expect(created.status).toBe(202);
    const job = await waitJob(created.body.id);
    expect(job.state).toBe('succeeded');
    const cache = await LogitCacheReader.open(join(root, 'cache', job.cacheKey));
    expect(cache.manifest.labelStatistics).toBe(true);
    let eligible = 0;
    const perClass = new Array(10).fill(0);
    for await (const b of cache) {
      for (let r = 0; r < b.rows; r++) {
        if (b.stats!.confidence[r]! >= 0.3 && perClass[b.stats!.pseudoLabel[r]!] < 20) {
          perClass[b.stats!.pseudoLabel[r]!]++;
          eligible++;
        }
      }
    }
    expect(job.selection).toEqual({ path: join('selected', 'pool-labelled.arrow'), rows: eligible, perClass });
    const selected = await DatasetReader.open(join(root, 'data', 'selected', 'pool-labelled.arrow'));
    expect(await selected.countRows()).toBe(eligible);
    for await (const b of selected) expect([...b.labels].every((l) => l >= 0 && l < 10)).toBe(true);
  });

  it('DELETE cancels a running job and leaves no complete cache', async () => {
    await writeSyntheticDataset(join(root, 'data', 'slow.arrow'), { rows: 20000, inputShape: [8, 8, 1], classes: 10, seed: 11 });
    const created = await call('/v1/jobs', json({ type: 'precompute', teacher: 'conv', dataset: 'slow.arrow', batchSize: 8 }));
    for (;;) {
      const { body } = await call(`/v1/jobs/${created.body.id}`);
      if (body.state === 'running' && body.progress.done > 0) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    const canceled = await call(`/v1/jobs/${created.body.id}`, { method: 'DELETE' });
    expect(canceled.body.state).toBe('canceled');
    const caches = (await call('/v1/caches')).body.caches;
    expect(caches.some((c: any) => c.key === canceled.body.cacheKey)).toBe(false);
  });
});

describe('token', () => {
  it('guards mutating routes when set; reads stay open', async () => {
    const guarded = await startServer(
      resolveConfig({ models: join(root, 'models'), data: join(root, 'data'), cache: join(root, 'cache'), port: 0, logLevel: 'silent', token: 's3cret' }, {}),
    );
    try {
      const body = json({ inputs: Array(64).fill(0.5), shape: [1, 1, 8, 8] });
      const denied = await fetch(`${guarded.url}/v1/teachers/conv/logits`, body);
      expect(denied.status).toBe(401);
      expect(((await denied.json()) as any).error.code).toBe('unauthorized');
      const wrong = await fetch(
        `${guarded.url}/v1/teachers/conv/logits`,
        json({ inputs: Array(64).fill(0.5), shape: [1, 1, 8, 8] }, { authorization: 'Bearer nope' }),
      );
      expect(wrong.status).toBe(401);
      const ok = await fetch(
        `${guarded.url}/v1/teachers/conv/logits`,
        json({ inputs: Array(64).fill(0.5), shape: [1, 1, 8, 8] }, { authorization: 'Bearer s3cret' }),
      );
      expect(ok.status).toBe(200);
      expect((await fetch(`${guarded.url}/v1/teachers`)).status).toBe(200);
    } finally {
      await guarded.close();
    }
  });
});

describe('config', () => {
  it('binds 127.0.0.1 by default and rejects an unknown execution provider at boot', () => {
    expect(resolveConfig({ models: 'm', data: 'd', cache: 'c' }, {}).host).toBe('127.0.0.1');
    expect(() => resolveConfig({ models: 'm', data: 'd', cache: 'c' }, { DISTILLATE_EP: 'tpu' })).toThrow(/DISTILLATE_EP/);
  });
});
