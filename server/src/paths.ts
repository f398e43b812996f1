import { realpath } from 'node:fs/promises';
import { isAbsolute, relative, resolve } from 'node:path';
import { badRequest } from './errors.js';

/**
 * Resolve a client-supplied path inside `root`, refusing anything that escapes it: `..`,
 * absolute paths, and symlinks that point outside. `mustExist: false` checks the parent.
 */
export async function confinedPath(root: string, userPath: string, what: string, mustExist = true): Promise<string> {
  if (userPath.includes('\0')) throw badRequest('bad_path', `${what} path contains a NUL byte`);
  const rootReal = await realpath(root);
  const abs = resolve(rootReal, userPath);
  const inside = (p: string) => {
    const rel = relative(rootReal, p);
    return rel === '' || (!rel.startsWith('..') && !isAbsolute(rel));
  };
  if (isAbsolute(userPath) || !inside(abs)) throw badRequest('path_outside_root', `${what} "${userPath}" is outside the configured root`);
  if (!mustExist) return abs;
  let real: string;
  try {
    real = await realpath(abs);
  } catch {
    throw badRequest('not_found', `${what} "${userPath}" does not exist`);
  }
  if (!inside(real)) throw badRequest('path_outside_root', `${what} "${userPath}" resolves outside the configured root`);
  return real;
}
