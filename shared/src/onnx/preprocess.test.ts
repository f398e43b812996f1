/** A teacher and a dataset must agree on image height, width and channels, not just on the number of values. */
import { describe, expect, it } from 'vitest';
import type { DatasetInfo } from '../dataset.js';
import { datasetPreprocessor } from './preprocess.js';
import type { TeacherInfo } from './teachers.js';

const teacher = (sampleShape: number[], layout: TeacherInfo['layout']): TeacherInfo => ({
  name: 't',
  sha256: 'a'.repeat(64),
  inputs: [],
  outputs: [],
  classes: ['a', 'b'],
  executionProvider: 'cpu',
  layout,
  sampleShape,
});
const dataset = (inputShape: number[], layout: DatasetInfo['layout'] = 'HWC'): DatasetInfo => ({
  inputShape,
  layout,
  scaling: { scale: 1 / 255, offset: 0 },
  classes: ['a', 'b'],
  inputType: 'uint8',
});

describe('datasetPreprocessor', () => {
  it('takes the same image in either layout', () => {
    expect(datasetPreprocessor(dataset([28, 28, 3]), teacher([3, 28, 28], 'NCHW'), {}).sampleSize).toBe(2352);
    expect(datasetPreprocessor(dataset([28, 28, 1]), teacher([28, 28, 1], 'NHWC'), {}).sampleSize).toBe(784);
    expect(datasetPreprocessor(dataset([3, 8, 8], 'CHW'), teacher([8, 8, 3], 'NHWC'), {}).sampleSize).toBe(192);
  });
  it('refuses images of another size or channel count in one line naming both, even with as many values', () => {
    expect(() => datasetPreprocessor(dataset([56, 14, 1]), teacher([1, 28, 28], 'NCHW'), {})).toThrow(
      /^dataset images are 56×14 with 1 channel but teacher t takes 28×28 with 1 \(import the images with --size 28x28 --channels 1; nothing is resized at inference\)$/,
    );
    expect(() => datasetPreprocessor(dataset([28, 28, 3]), teacher([1, 28, 84], 'NCHW'), {})).toThrow(
      /dataset images are 28×28 with 3 channels but teacher t takes 28×84 with 1/,
    );
    expect(() => datasetPreprocessor(dataset([28, 28, 1]), teacher([1, 32, 32], 'NCHW'), {})).toThrow(/784 values.*1024/);
  });
});
