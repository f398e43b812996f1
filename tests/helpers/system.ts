/**
 * The Debian packages some tests need (`npm run setup` installs them). A test that needs one
 * that is missing fails under CI=true, where .ci/run installs them, and is skipped otherwise,
 * with the package named; tests/setup/system-report.ts lists what was missing after the run.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { FASHION_MNIST_DEBIAN_DIR } from '@distillate/shared';

export interface SystemPackage {
  /** The Debian package. */
  readonly name: string;
  readonly present: () => boolean;
}

export const FASHION_MNIST_PACKAGE: SystemPackage = {
  name: 'dataset-fashion-mnist',
  present: () => existsSync(join(FASHION_MNIST_DEBIAN_DIR, 'train-images-idx3-ubyte.gz')),
};
export const REDIS_PACKAGE: SystemPackage = { name: 'redis-server', present: () => spawnSync('redis-server', ['--version']).status === 0 };
export const CHROMIUM_PACKAGE: SystemPackage = { name: 'chromium', present: () => existsSync(CHROMIUM) };
/** Debian's Chromium, which the page tests drive through playwright-core. */
export const CHROMIUM = '/usr/bin/chromium';
/** lavapipe, from bookworm-backports: only known to be there once ORT's WebGPU EP finds an adapter. */
export const LAVAPIPE_PACKAGE = 'mesa-vulkan-drivers (bookworm-backports)';

export const ALL_PACKAGES = [FASHION_MNIST_PACKAGE, REDIS_PACKAGE, CHROMIUM_PACKAGE];

export const inCi = (): boolean => process.env['CI'] === 'true';

/** The one-line reason a test cannot run here, or undefined when every package is present. */
export function missingPackages(...packages: readonly SystemPackage[]): string | undefined {
  const missing = packages.filter((p) => !p.present()).map((p) => p.name);
  return missing.length === 0
    ? undefined
    : `needs the Debian package${missing.length > 1 ? 's' : ''} ${missing.join(', ')} (npm run setup installs ${missing.length > 1 ? 'them' : 'it'})`;
}

/**
 * For a test file: undefined when it can run; otherwise the reason, which the caller passes to
 * describe.skipIf / it.skipIf. Under CI=true a missing package is an error instead.
 */
export function skipUnless(...packages: readonly SystemPackage[]): string | undefined {
  const why = missingPackages(...packages);
  if (why !== undefined && inCi()) throw new Error(`CI=true: this test ${why}`);
  return why;
}

/** A suite or test title that carries the reason it is skipped, so the reporter shows it. */
export const titled = (title: string, why: string | undefined): string => (why === undefined ? title : `${title} [skipped: ${why}]`);
