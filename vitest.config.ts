import { defaultServerConditions } from 'vite';
import { defineConfig } from 'vitest/config';

// Workspace packages export their TypeScript sources under the "source" condition, so tests
// run against src/ without a build.
const conditions = ['source', ...defaultServerConditions];

// The Vulkan loader (lavapipe, for ORT's WebGPU EP on a CPU-only machine) wants a runtime directory.
process.env['XDG_RUNTIME_DIR'] ??= '/tmp';

export default defineConfig({
  resolve: { conditions },
  ssr: { resolve: { conditions, externalConditions: ['source'] } },
  test: {
    include: ['{shared,server,trainer,scripts}/src/**/*.test.ts', 'tests/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // After the run, name the Debian packages whose tests were skipped (tests/helpers/system.ts).
    globalSetup: ['tests/setup/system-report.ts'],
  },
});
