/** A cache's bytes or manifest are not what they claim (bad hash, truncation, missing file). */
export class CacheIntegrityError extends Error {
  override readonly name = 'CacheIntegrityError';
}

/** A valid cache that does not belong with the data it is used with (ids, fingerprint, classes). */
export class CacheMismatchError extends Error {
  override readonly name = 'CacheMismatchError';
}

/** A directory that holds no complete cache. */
export class CacheNotFoundError extends Error {
  override readonly name = 'CacheNotFoundError';
}
