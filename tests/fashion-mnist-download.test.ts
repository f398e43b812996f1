/**
 * Fashion-MNIST acquisition against a real HTTP server on 127.0.0.1 serving Debian's real `.gz`
 * files (recompressed by Debian: their bytes differ from the published ones, the data inside does
 * not): download, verify, cache, reuse; a corrupt file; a server that goes away mid-download;
 * and the demo's one-line failure when there is no data at all.
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, readdir } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { acquireFashionMnist, FASHION_MNIST_DEBIAN_DIR, fashionMnistCacheDir } from '@distillate/shared';
import { FASHION_MNIST_PACKAGE, skipUnless, titled } from './helpers/system.js';

const ROOT = join(import.meta.dirname, '..');
const skip = skipUnless(FASHION_MNIST_PACKAGE);

/** What the server does with each request: serve the file, a corrupt copy, or half of it and hang up. */
let mode: 'ok' | 'corrupt' | 'drop' = 'ok';
let requests: string[] = [];
let server: Server;
let base = '';

beforeAll(async () => {
  server = createServer((req, res) => {
    const file = (req.url ?? '/').slice(1);
    requests.push(file);
    const path = join(FASHION_MNIST_DEBIAN_DIR, file);
    if (!existsSync(path)) return void res.writeHead(404).end();
    let body = readFileSync(path);
    if (mode === 'corrupt' && file.startsWith('train-labels')) {
      const raw = gunzipSync(body);
      raw[raw.length - 1] = (raw[raw.length - 1]! + 1) % 10; // one label changed: still a valid IDX file
      body = gzipSync(raw);
    }
    res.writeHead(200, { 'content-type': 'application/gzip', 'content-length': String(body.length) });
    if (mode === 'drop' && file.startsWith('train-images')) {
      res.write(body.subarray(0, body.length >> 1));
      setTimeout(() => res.socket?.destroy(), 50);
      return;
    }
    res.end(body);
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  base = `http://127.0.0.1:${(server.address() as { port: number }).port}/`;
});

afterAll(() => new Promise<void>((ok) => server.close(() => ok())));

const env = async () => ({
  XDG_CACHE_HOME: await mkdtemp(join(tmpdir(), 'fmnist-cache-')),
  DISTILLATE_NO_SYSTEM_DATA: '1',
  DISTILLATE_FASHION_MNIST_URL: base,
});
const cacheFiles = async (e: { XDG_CACHE_HOME: string }) => (existsSync(fashionMnistCacheDir(e)) ? (await readdir(fashionMnistCacheDir(e))).sort() : []);

describe.skipIf(skip !== undefined)(titled('Fashion-MNIST download', skip), () => {
  it('downloads the four files, verifies them, caches them, and reuses the cache without a request', async () => {
    mode = 'ok';
    requests = [];
    const e = await env();
    const seen = new Set<string>();
    const first = await acquireFashionMnist({ env: e, onProgress: (f) => seen.add(f) });
    expect(first).toEqual({ dir: fashionMnistCacheDir(e), source: 'download' });
    expect(requests.sort()).toEqual(['t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz', 'train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz']);
    expect(seen.size).toBe(4);
    const second = await acquireFashionMnist({ env: e });
    expect(second.source).toBe('cache');
    expect(requests).toHaveLength(4); // no new request
  });

  it('a corrupt file fails with its sha256 and is not cached', async () => {
    mode = 'corrupt';
    const e = await env();
    await expect(acquireFashionMnist({ env: e })).rejects.toThrow(
      /train-labels-idx1-ubyte\.gz: sha256 of the decompressed IDX bytes is [0-9a-f]{12}…, expected bad3541b69d9… \(corrupt download\)/,
    );
    expect(await cacheFiles(e)).not.toContain('train-labels-idx1-ubyte.gz');
    expect((await cacheFiles(e)).filter((f) => f.includes('.part'))).toEqual([]);
  });

  it('a server that goes away mid-download: a clear error, nothing cached for that file', async () => {
    mode = 'drop';
    const e = await env();
    await expect(acquireFashionMnist({ env: e })).rejects.toThrow(/train-images-idx3-ubyte\.gz: .*(closed|terminated|aborted|socket)/i);
    expect(await cacheFiles(e)).not.toContain('train-images-idx3-ubyte.gz');
    expect((await cacheFiles(e)).filter((f) => f.includes('.part'))).toEqual([]);
  });
});

describe('npm run demo without data', () => {
  it('fails in one line saying what it tried and how to get the data, with no result table', async () => {
    const e = { ...(await env()), DISTILLATE_FASHION_MNIST_URL: 'http://127.0.0.1:9/' }; // nothing listens on the discard port
    const work = await mkdtemp(join(tmpdir(), 'demo-nodata-'));
    const r = await new Promise<{ status: number | null; stdout: string; stderr: string }>((ok) => {
      const child = spawn(process.execPath, ['--conditions=source', '--import', 'tsx', join(ROOT, 'scripts', 'demo.ts'), '--quick', '--work', work], {
        cwd: ROOT,
        env: { ...process.env, ...e },
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      child.on('exit', (status) => ok({ status, stdout, stderr }));
    });
    expect(r.status).toBe(1);
    const lines = r.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^demo: no Fashion-MNIST: not in the cache .* and the download failed: .*apt-get install -y dataset-fashion-mnist.*--data DIR/);
    expect(r.stdout).not.toMatch(/\| model/);
  }, 60_000);
});
