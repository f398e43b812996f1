import { DatasetReader } from '@distillate/shared';

/** Every row of a dataset file, copied out: inputs, labels, sources (when it has them) and its classes. */
export async function readRows<T extends Uint8Array | Float32Array = Uint8Array>(
  path: string,
): Promise<{ inputs: T[]; labels: number[]; sources: string[]; classes: readonly string[] }> {
  const reader = await DatasetReader.open(path);
  const D = reader.inputSize;
  const inputs: T[] = [];
  const labels: number[] = [];
  for await (const b of reader) {
    for (let r = 0; r < b.rows; r++) {
      inputs.push(b.inputs.slice(r * D, (r + 1) * D) as T);
      labels.push(b.labels[r]!);
    }
  }
  const sources: string[] = [];
  if (await reader.hasSource()) for await (const s of reader.sources()) sources.push(...s);
  return { inputs, labels, sources, classes: reader.info.classes };
}
