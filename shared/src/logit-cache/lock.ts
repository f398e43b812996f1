/** The one-writer claim on a cache directory: a `.lock` file holding the writer's pid. */
import { mkdir, open, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { CacheManifestSchema, MANIFEST_FILE, cacheKey, type CacheKeyInput } from './manifest.js';

export const LOCK_FILE = '.lock';

export class CacheLockedError extends Error {
  override readonly name = 'CacheLockedError';
}

export class CacheExistsError extends Error {
  override readonly name = 'CacheExistsError';
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function acquireLock(dir: string): Promise<void> {
  const path = join(dir, LOCK_FILE);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fh = await open(path, 'wx');
      await fh.writeFile(String(process.pid));
      await fh.close();
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const holder = Number.parseInt(await readFile(path, 'utf8').catch(() => ''), 10);
      // A lock left by a crashed process (kill -9) is stale; take it over.
      if (Number.isInteger(holder) && holder !== process.pid && pidAlive(holder)) {
        throw new CacheLockedError(`${dir} is being written by process ${holder}`);
      }
      await rm(path, { force: true });
    }
  }
  throw new CacheLockedError(`could not lock ${dir}`);
}

/**
 * Claim the directory of the cache with this key for writing: refused if the cache is already
 * complete or another live process holds it. `recover` then decides what an interrupted run
 * left that can be kept; if it throws, the claim is released.
 */
export async function claimCacheDir<T>(
  root: string,
  keyInput: CacheKeyInput,
  recover: (dir: string, key: string) => Promise<T>,
): Promise<{ key: string; dir: string; recovered: T }> {
  const key = cacheKey(keyInput);
  const dir = join(root, key);
  await mkdir(dir, { recursive: true });
  const manifest = await readFile(join(dir, MANIFEST_FILE), 'utf8').catch(() => undefined);
  if (manifest !== undefined && CacheManifestSchema.safeParse(JSON.parse(manifest)).success)
    throw new CacheExistsError(`cache ${key} is already complete in ${dir}`);
  await acquireLock(dir);
  try {
    return { key, dir, recovered: await recover(dir, key) };
  } catch (err) {
    await rm(join(dir, LOCK_FILE), { force: true });
    throw err;
  }
}
