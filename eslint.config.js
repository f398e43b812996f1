import js from '@eslint/js';
import tseslint from 'typescript-eslint';

/**
 * The package boundaries, written once (DESIGN.md; tests/lint-boundaries.test.ts): each
 * restricted import, what to do instead, and the areas of the repo where it is forbidden.
 * ESLint's flat config does not merge one rule's options across blocks, so one block per area
 * lists every boundary that holds there; the blocks run from general to specific.
 */
const areas = {
  root: ['*.ts', '*.js', '*.mjs'],
  server: ['server/**'],
  shared: ['shared/**'],
  trainer: ['trainer/**'],
  ortSession: ['shared/src/onnx/ort-session.ts'],
  tfjsBackend: ['trainer/src/backend.ts'],
};
const everywhere = Object.keys(areas);
const except = (...allowed) => everywhere.filter((a) => !allowed.includes(a));

const boundaries = [
  {
    path: 'onnxruntime-node',
    message: 'Only the ORT session wrapper (shared/src/onnx/ort-session.ts) imports onnxruntime-node.',
    forbiddenIn: except('ortSession'),
  },
  { path: 'apache-arrow', message: 'Only shared imports apache-arrow; use its readers and writers.', forbiddenIn: except('shared', 'ortSession') },
  {
    path: '@distillate/server',
    message: 'The trainer never imports the server; shared code lives in @distillate/shared (ONNX: @distillate/shared/onnx).',
    forbiddenIn: ['trainer', 'tfjsBackend'],
  },
  {
    group: ['@tensorflow/tfjs-backend-*', '@tensorflow/tfjs-node*', 'webgpu'],
    message: 'Only trainer/src/backend.ts chooses and imports TF.js backends.',
    forbiddenIn: except('tfjsBackend'),
  },
];

const boundaryBlocks = Object.entries(areas).map(([area, files]) => {
  const here = boundaries.filter((b) => b.forbiddenIn.includes(area));
  return {
    files,
    rules: {
      'no-restricted-imports': [
        'error',
        {
          paths: here.filter((b) => b.path !== undefined).map((b) => ({ name: b.path, message: b.message })),
          patterns: here.filter((b) => b.group !== undefined).map((b) => ({ group: b.group, message: b.message })),
        },
      ],
    },
  };
});

export default tseslint.config(
  {
    ignores: [
      '**/dist/**',
      '**/node_modules/**',
      'data/**',
      'cache/**',
      'runs/**',
      '.bench/**',
      '.gpu-pack/**',
      'demo-out/**',
      'experiments-out/**',
      '**/*.d.ts',
    ],
  },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': ['error', { fixStyle: 'inline-type-imports' }],
    },
  },
  ...boundaryBlocks,
  {
    // Tests and scripts wire the real parts together across the boundaries.
    files: ['**/*.test.ts', 'scripts/**', 'tests/**'],
    rules: { 'no-restricted-imports': 'off' },
  },
  {
    // Tests read loosely typed JSON responses.
    files: ['**/*.test.ts', 'tests/**'],
    rules: { '@typescript-eslint/no-explicit-any': 'off' },
  },
);
