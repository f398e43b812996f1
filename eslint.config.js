import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['**/dist/**', '**/node_modules/**', 'data/**', 'cache/**', 'runs/**', '.bench/**', '.gpu-pack/**', '**/*.d.ts'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': ['error', { fixStyle: 'inline-type-imports' }],
      'no-restricted-imports': [
        'error',
        {
          paths: [
            { name: 'onnxruntime-node', message: 'Only the ORT session wrapper (shared/src/onnx/ort-session.ts) imports onnxruntime-node.' },
            { name: 'apache-arrow', message: 'Only shared imports apache-arrow; use its readers and writers.' },
          ],
          patterns: [{ group: ['@tensorflow/tfjs-backend-*', '@tensorflow/tfjs-node*', 'webgpu'], message: 'Only trainer/src/backend.ts chooses and imports TF.js backends.' }],
        },
      ],
    },
  },
  {
    // The trainer never imports the server.
    files: ['trainer/**'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          paths: [
            { name: 'onnxruntime-node', message: 'Only the ORT session wrapper (shared/src/onnx/ort-session.ts) imports onnxruntime-node.' },
            { name: 'apache-arrow', message: 'Only shared imports apache-arrow; use its readers and writers.' },
            { name: '@distillate/server', message: 'The trainer never imports the server; shared code lives in @distillate/shared (ONNX: @distillate/shared/onnx).' },
          ],
          patterns: [{ group: ['@tensorflow/tfjs-backend-*', '@tensorflow/tfjs-node*', 'webgpu'], message: 'Only trainer/src/backend.ts chooses and imports TF.js backends.' }],
        },
      ],
    },
  },
  {
    // shared owns apache-arrow; onnxruntime-node is still one file there.
    files: ['shared/**'],
    rules: {
      'no-restricted-imports': ['error', { paths: [{ name: 'onnxruntime-node', message: 'Only the ORT session wrapper (shared/src/onnx/ort-session.ts) imports onnxruntime-node.' }] }],
    },
  },
  {
    files: ['shared/src/onnx/ort-session.ts', 'trainer/src/backend.ts', '**/*.test.ts', 'scripts/**', 'tests/**'],
    rules: { 'no-restricted-imports': 'off' },
  },
  {
    // Tests read loosely typed JSON responses.
    files: ['**/*.test.ts', 'tests/**'],
    rules: { '@typescript-eslint/no-explicit-any': 'off' },
  },
);
