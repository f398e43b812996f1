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
            { name: 'onnxruntime-node', message: 'Only the ORT session wrapper (server/src/internal/ort-session.ts) imports onnxruntime-node.' },
          ],
        },
      ],
    },
  },
  {
    files: ['server/src/internal/ort-session.ts', '**/*.test.ts', 'scripts/**', 'tests/**'],
    rules: { 'no-restricted-imports': 'off' },
  },
  {
    // Tests read loosely typed JSON responses.
    files: ['**/*.test.ts', 'tests/**'],
    rules: { '@typescript-eslint/no-explicit-any': 'off' },
  },
);
