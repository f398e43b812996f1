/**
 * The cache-writing protocol under kill -9, for every writer that uses it: a process writing a
 * cache is killed mid-run; a new process reopens the same key, keeps the shards progress.json
 * lists (the same files: not rewritten), drops the rest, writes what is missing and publishes
 * the manifest. The result is the cache an uninterrupted run writes, shard for shard. The third
 * writer has a column set of its own and no recovery code: it gets all of this from the protocol.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, readdir, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { listColumn, primitiveColumn, readArrowFile, sha256File } from '../internal/arrow-io.js';
import { CRASH_JOBS, FEATURE_DIM, FeatureManifestSchema, ROWS, features, ids, type CrashJobName } from './crash-jobs.test-util.js';
import { CacheProgressSchema, MANIFEST_FILE, PROGRESS_FILE } from './manifest.js';
import { verifyCache } from './reader.js';

const CHILD = join(import.meta.dirname, 'crash-jobs.test-util.ts');

/** Run a job in a child process and kill -9 it once `after` shards are durable. */
async function killMidway(job: CrashJobName, root: string, after: number): Promise<void> {
  const child = spawn(process.execPath, ['--conditions=source', '--import', 'tsx', CHILD, job, root], { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  await new Promise<void>((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes(`durable ${after}\n`)) {
        child.kill('SIGKILL');
        resolve();
      }
    });
    child.once('exit', (code) => reject(new Error(`the ${job} writer exited (${code}) before ${after} shards were durable: ${err}`)));
  });
  await new Promise((r) => child.once('exit', r));
}

async function runStraight(job: CrashJobName, root: string): Promise<string> {
  const w = await CRASH_JOBS[job].open(root);
  for (const i of CRASH_JOBS[job].order) await w.write(i);
  await w.finish();
  return w.dir;
}

const shardHashes = async (dir: string): Promise<string[]> =>
  JSON.parse(await readFile(join(dir, MANIFEST_FILE), 'utf8')).shards.map((s: { sha256: string }) => s.sha256);

describe('kill -9 and resume, for every writer of the cache-writing protocol', () => {
  for (const job of Object.keys(CRASH_JOBS) as CrashJobName[]) {
    it(job, async () => {
      const root = await mkdtemp(join(tmpdir(), `distillate-crash-${job}-`));
      await killMidway(job, root, 3);
      const [key] = await readdir(root);
      const dir = join(root, key!);
      expect(await readdir(dir)).not.toContain(MANIFEST_FILE);
      const listed = CacheProgressSchema.pick({ shards: true }).parse(JSON.parse(await readFile(join(dir, PROGRESS_FILE), 'utf8'))).shards;
      expect(listed.length).toBeGreaterThanOrEqual(3);
      const inodes = new Map(await Promise.all(listed.map(async (s) => [s.file, (await stat(join(dir, s.file))).ino] as const)));

      const w = await CRASH_JOBS[job].open(root);
      expect(w.dir).toBe(dir);
      expect(w.recovered.length).toBe(listed.length);
      expect((await readdir(dir)).filter((f) => f.includes('.tmp-'))).toEqual([]);
      for (const i of CRASH_JOBS[job].order) if (!w.recovered.includes(i)) await w.write(i);
      await w.finish();
      for (const [file, ino] of inodes) expect((await stat(join(dir, file))).ino, `${file} kept, not rewritten`).toBe(ino);
      expect(await readdir(dir)).not.toContain(PROGRESS_FILE);
      expect(await readdir(dir)).not.toContain('.lock');

      const straight = await runStraight(job, await mkdtemp(join(tmpdir(), `distillate-straight-${job}-`)));
      expect(await shardHashes(dir)).toEqual(await shardHashes(straight));

      if (job === 'featureColumns') {
        const manifest = FeatureManifestSchema.parse(JSON.parse(await readFile(join(dir, MANIFEST_FILE), 'utf8')));
        expect(manifest.rows).toBe(ROWS);
        for (const [i, s] of manifest.shards.entries()) {
          expect(await sha256File(join(dir, s.file))).toEqual({ sha256: s.sha256, bytes: s.bytes });
          for await (const b of readArrowFile(join(dir, s.file))) {
            expect(primitiveColumn<Int32Array>(b, 'id', s.file)).toEqual(ids(i));
            expect(listColumn<Float32Array>(b, 'feature', s.file)).toMatchObject({ size: FEATURE_DIM, values: features(ids(i)) });
          }
        }
      } else {
        expect(await verifyCache(dir)).toMatchObject({ ok: true, rows: ROWS });
      }
    });
  }
});
