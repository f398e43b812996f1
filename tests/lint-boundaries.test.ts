/**
 * The package boundaries are lint rules (eslint.config.js): each violation below is reported,
 * and the same import in its allowed place is not.
 */
import { join } from 'node:path';
import { ESLint } from 'eslint';
import { describe, expect, it } from 'vitest';

const eslint = new ESLint({ cwd: join(import.meta.dirname, '..') });

async function violations(file: string, code: string): Promise<string[]> {
  const [result] = await eslint.lintText(code, { filePath: join(import.meta.dirname, '..', file) });
  return result!.messages.filter((m) => m.ruleId === 'no-restricted-imports').map((m) => m.message);
}

describe('lint boundaries', () => {
  const cases: Array<[string, string, RegExp]> = [
    ['server/src/x.ts', "import { tableFromIPC } from 'apache-arrow';\nexport const f = tableFromIPC;\n", /Only shared imports apache-arrow/],
    ['trainer/src/x.ts', "import { tableFromIPC } from 'apache-arrow';\nexport const f = tableFromIPC;\n", /Only shared imports apache-arrow/],
    ['trainer/src/x.ts', "import { startServer } from '@distillate/server';\nexport const f = startServer;\n", /The trainer never imports the server/],
    ['trainer/src/x.ts', "import * as ort from 'onnxruntime-node';\nexport const f = ort;\n", /Only the ORT session wrapper/],
    ['shared/src/x.ts', "import * as ort from 'onnxruntime-node';\nexport const f = ort;\n", /Only the ORT session wrapper/],
    ['server/src/x.ts', "import * as ort from 'onnxruntime-node';\nexport const f = ort;\n", /Only the ORT session wrapper/],
    ['trainer/src/x.ts', "import '@tensorflow/tfjs-backend-wasm';\n", /Only trainer\/src\/backend\.ts chooses/],
  ];
  for (const [file, code, message] of cases) {
    it(`${file}: ${code.split('\n')[0]}`, async () => {
      expect(await violations(file, code)).toEqual([expect.stringMatching(message)]);
    });
  }

  it('allows each in its one place', async () => {
    expect(await violations('shared/src/x.ts', "import { tableFromIPC } from 'apache-arrow';\nexport const f = tableFromIPC;\n")).toEqual([]);
    expect(await violations('shared/src/onnx/ort-session.ts', "import * as ort from 'onnxruntime-node';\nexport const f = ort;\n")).toEqual([]);
    expect(await violations('trainer/src/backend.ts', "import '@tensorflow/tfjs-backend-wasm';\n")).toEqual([]);
  });
});
