/** Accuracy, teacher agreement and calibration of a student on a dataset. */
import { softmax } from '@distillate/shared';
import type { BatchLayout, SourceSpec } from './data.js';
import { epochBatches } from './data.js';

export interface ReliabilityBin {
  readonly lo: number;
  readonly hi: number;
  readonly count: number;
  readonly confidence: number;
  readonly accuracy: number;
}

export interface Evaluation {
  readonly rows: number;
  readonly accuracy: number;
  /** Top-1 agreement with teacher slot 0 (dense teachers only), when a cache is given. */
  readonly agreement?: number;
  /** Expected calibration error over 15 equal-width confidence bins. */
  readonly ece: number;
  readonly reliability: readonly ReliabilityBin[];
}

const BINS = 15;

/**
 * A student's logits [rows, classes] for flat samples: any engine's `predict`, or a served
 * model. x holds scaled values, or stored uint8 values when the layout says `storedInputs`.
 */
export type Predict = (x: Float32Array | Uint8Array, rows: number) => Promise<Float32Array>;

export async function evaluate(predict: Predict, source: SourceSpec, layout: BatchLayout, batchSize = 512): Promise<Evaluation> {
  let rows = 0;
  let correct = 0;
  let agree = 0;
  let agreeRows = 0;
  const count = new Array<number>(BINS).fill(0);
  const conf = new Array<number>(BINS).fill(0);
  const acc = new Array<number>(BINS).fill(0);
  const src = source.rows > 0 ? source : { ...source, rows: await source.dataset.countRows() };
  for await (const b of epochBatches([src], layout, { batchSize, shuffleBuffer: 1, seed: 0, shuffle: false })) {
    const logits = await predict(b.x, b.rows);
    const C = logits.length / b.rows;
    const probs = softmax(logits, C, new Float32Array(logits.length));
    const slot0 = layout.slots[0];
    for (let r = 0; r < b.rows; r++) {
      let best = 0;
      for (let c = 1; c < C; c++) if (probs[r * C + c]! > probs[r * C + best]!) best = c;
      const p = probs[r * C + best]!;
      const y = b.labels[r]!;
      const hit = y >= 0 && best === y ? 1 : 0;
      if (y >= 0) {
        rows++;
        correct += hit;
        const bin = Math.min(BINS - 1, Math.floor(p * BINS));
        count[bin]! += 1;
        conf[bin]! += p;
        acc[bin]! += hit;
      }
      if (slot0?.kind === 'dense' && b.hasTeacher[r] === 1 && slot0.classes === C) {
        const t = b.slots[0]!.logits;
        let tb = 0;
        for (let c = 1; c < C; c++) if (t[r * C + c]! > t[r * C + tb]!) tb = c;
        agree += tb === best ? 1 : 0;
        agreeRows++;
      }
    }
  }
  const reliability = count.map((n, i) => ({
    lo: i / BINS,
    hi: (i + 1) / BINS,
    count: n,
    confidence: n > 0 ? conf[i]! / n : 0,
    accuracy: n > 0 ? acc[i]! / n : 0,
  }));
  const ece = rows === 0 ? 0 : reliability.reduce((e, b) => e + (b.count / rows) * Math.abs(b.accuracy - b.confidence), 0);
  return { rows, accuracy: rows === 0 ? 0 : correct / rows, ...(agreeRows > 0 ? { agreement: agree / agreeRows } : {}), ece, reliability };
}

/** The model's logits and the labels (−1: none) over a whole dataset, in file order. */
export async function collectLogits(
  predict: Predict,
  classes: number,
  source: SourceSpec,
  layout: BatchLayout,
  batchSize = 512,
): Promise<{ logits: Float32Array; labels: Int32Array; classes: number }> {
  const src = source.rows > 0 ? source : { ...source, rows: await source.dataset.countRows() };
  const parts: Float32Array[] = [];
  const labels = new Int32Array(src.rows);
  let row = 0;
  for await (const b of epochBatches([src], layout, { batchSize, shuffleBuffer: 1, seed: 0, shuffle: false })) {
    parts.push((await predict(b.x, b.rows)).slice());
    labels.set(b.labels.subarray(0, b.rows), row);
    row += b.rows;
  }
  const logits = new Float32Array(row * classes);
  let o = 0;
  for (const p of parts) {
    logits.set(p, o);
    o += p.length;
  }
  return { logits, labels: labels.subarray(0, row), classes };
}
