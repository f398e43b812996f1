/**
 * Recipes name a teacher's cache either by directory or by teacher name. A name is resolved
 * against the cache root: the complete cache of that teacher over exactly this dataset file
 * (same fingerprint). Dense float32 is preferred, then float16, then the largest top-k. A view
 * cache is picked only when the recipe gives its view spec (`{ teacher, views }`). A recipe
 * with hints takes only a cache that stores every teacher feature they name; without hints,
 * a cache without features is preferred (same logits, less to read).
 */
import { listCaches, type CacheEntry, type DatasetReader, type ViewSpec } from '@distillate/shared';

/** A cache by directory, or by teacher name (and, for a view cache, its view spec). */
export type CacheRef = { readonly cache: string } | { readonly teacher: string; readonly views?: ViewSpec | undefined };

export class CacheResolutionError extends Error {
  override readonly name = 'CacheResolutionError';
}

function rank(e: CacheEntry, needLabelStatistics: boolean): number {
  const s = e.manifest.storage;
  let r = s.mode === 'dense' ? (s.dtype === 'float32' ? 3_000_000 : 2_000_000) : s.mode === 'topk' ? s.k : 0;
  if (needLabelStatistics && !e.manifest.labelStatistics) r -= 10_000_000;
  return r - (e.manifest.features?.length ?? 0);
}

export async function resolveCacheDir(
  ref: CacheRef,
  root: string,
  dataset: Pick<DatasetReader, 'fingerprint' | 'path'>,
  opts: { labelStatistics?: boolean; features?: readonly string[] } = {},
): Promise<string> {
  if ('cache' in ref) return ref.cache;
  const fingerprint = await dataset.fingerprint();
  const all = await listCaches(root);
  // A view cache only when the recipe asks for exactly its views; a plain cache otherwise.
  const views = JSON.stringify(ref.views ?? null);
  const needed = opts.features ?? [];
  const matches = all.filter(
    (e) =>
      e.manifest.teacher.name === ref.teacher &&
      e.manifest.dataset.fingerprint === fingerprint &&
      JSON.stringify(e.manifest.views ?? null) === views &&
      needed.every((n) => (e.manifest.features ?? []).some((f) => f.tensor === n)),
  );
  if (matches.length === 0) {
    const other = all.filter((e) => e.manifest.teacher.name === ref.teacher).length;
    throw new CacheResolutionError(
      `no cache of teacher ${ref.teacher} over ${dataset.path} in ${root}` +
        (other > 0 ? ` (${other} cache(s) of it over other datasets)` : '') +
        `; build one: distillate-server ${opts.labelStatistics === true ? 'label' : 'precompute'} --teacher ${ref.teacher} --dataset <${dataset.path} relative to --data> --cache ${root}` +
        (ref.views === undefined
          ? ''
          : ` --views ${ref.views.count} --view-seed ${ref.views.seed} --shift ${ref.views.augment.shift}${ref.views.augment.flip ? ' --flip' : ''}`) +
        needed.map((n) => ` --feature ${n}`).join(''),
    );
  }
  const versions = new Set(matches.map((e) => e.manifest.teacher.sha256));
  if (versions.size > 1) {
    // A retrained teacher under the same name: which one the recipe means is the user's call.
    throw new CacheResolutionError(
      `${root} holds caches of ${versions.size} different versions of teacher ${ref.teacher} over ${dataset.path}: ` +
        matches.map((e) => `${e.key.slice(0, 12)}… (model ${e.manifest.teacher.sha256.slice(0, 12)}…, ${e.manifest.createdAt})`).join(', ') +
        '; remove the stale one(s) or name the cache directory in the recipe ({ cache: dir })',
    );
  }
  matches.sort((a, b) => rank(b, opts.labelStatistics === true) - rank(a, opts.labelStatistics === true) || a.key.localeCompare(b.key));
  return matches[0]!.dir;
}
